// `concurrency: N`: at most N requests of a bucket in flight at the upstream, across all instances.
// Each slot is a lease in the store that expires by itself (an instance that dies cannot leak one)
// and is renewed while its request lives. A request that finds every slot taken waits in a local
// FIFO, woken by a freed lease (this instance's, or another's through one pub/sub message) or by
// the earliest lease's expiry: one store call per try, no polling.
import { randomUUID } from 'node:crypto'
import type { RouteConfig } from '../config/schema'
import { ClientGoneError, LeaseAbortedError, LeaseTimeoutError, SluiceError, retryAfterSeconds } from '../errors'
import type { BucketPolicy, BucketStore } from '../store/bucket-store'
import type { CancelSignal } from './cancel'
import { refusalDetails } from './refusal-details'
import type { StoreFailover } from './store-failover'

/** A lease lives this long unless renewed (ms); renewed every third of it while held. */
export const LEASE_TTL_MS = 15_000

type Wake = () => void

export class ConcurrencyGate {
  private readonly store: BucketStore
  /** Leases this instance holds, per bucket. */
  private readonly held = new Map<string, Set<string>>()
  /** Local waiters per bucket, oldest first. */
  private readonly waiters = new Map<string, Wake[]>()
  private renewTimer: NodeJS.Timeout | undefined

  constructor (store: BucketStore) {
    this.store = store
    store.onLeaseFreed((bucket) => this.wakeOne(bucket))
  }

  inFlight (bucket: string): number {
    return this.held.get(bucket)?.size ?? 0
  }

  waitingFor (bucket: string): number {
    return this.waiters.get(bucket)?.length ?? 0
  }

  private wakeOne (bucket: string): void {
    const queue = this.waiters.get(bucket)
    const wake = queue?.shift()
    if (queue !== undefined && queue.length === 0) this.waiters.delete(bucket)
    wake?.()
  }

  /** Wait until woken, `ms` passed, or `signal` fired; `front` keeps a woken waiter's place. */
  private async park (bucket: string, ms: number, signal: CancelSignal, front: boolean): Promise<void> {
    await new Promise<void>((resolve) => {
      let queue = this.waiters.get(bucket)
      if (queue === undefined) {
        queue = []
        this.waiters.set(bucket, queue)
      }
      const done = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        const q = this.waiters.get(bucket)
        const at = q?.indexOf(wake) ?? -1
        if (q !== undefined && at >= 0) q.splice(at, 1)
        if (q?.length === 0) this.waiters.delete(bucket)
        resolve()
      }
      const wake: Wake = done
      const onAbort = (): void => done()
      const timer = setTimeout(done, ms)
      signal.addEventListener('abort', onAbort, { once: true })
      if (front) queue.unshift(wake)
      else queue.push(wake)
    })
  }

  /**
   * A lease of one of `limit` slots, or LeaseTimeoutError when none frees up before `deadline`
   * (performance.now ms), or LeaseAbortedError when `signal` fires. Store errors propagate.
   */
  async acquire (bucket: string, limit: number, deadline: number, signal: CancelSignal): Promise<string> {
    let woken = false
    for (;;) {
      if (signal.aborted) throw new LeaseAbortedError('client disconnected while waiting for a slot')
      const id = randomUUID()
      const { acquired, retryInMs } = await this.store.acquireLease(bucket, limit, id, LEASE_TTL_MS)
      if (acquired) {
        let set = this.held.get(bucket)
        if (set === undefined) {
          set = new Set()
          this.held.set(bucket, set)
        }
        set.add(id)
        this.startRenewing()
        // Another slot may be free too (several freed at once): let the next waiter try.
        if (woken) this.wakeOne(bucket)
        return id
      }
      const leftMs = deadline - performance.now()
      if (leftMs <= 0) throw new LeaseTimeoutError(retryInMs)
      await this.park(bucket, Math.min(retryInMs, leftMs), signal, woken)
      woken = true
    }
  }

  async release (bucket: string, id: string): Promise<void> {
    const set = this.held.get(bucket)
    if (set === undefined || !set.delete(id)) return
    if (set.size === 0) this.held.delete(bucket)
    if (this.held.size === 0) this.stopRenewing()
    try {
      await this.store.releaseLease(bucket, id)
    } catch {
      // The store is unreachable: the lease expires by itself; wake a local waiter to try anyway.
      this.wakeOne(bucket)
    }
  }

  private startRenewing (): void {
    if (this.renewTimer !== undefined) return
    this.renewTimer = setInterval(() => {
      for (const [bucket, ids] of this.held) this.store.renewLeases(bucket, [...ids], LEASE_TTL_MS).catch(() => {})
    }, LEASE_TTL_MS / 3)
    this.renewTimer.unref()
  }

  private stopRenewing (): void {
    clearInterval(this.renewTimer)
    this.renewTimer = undefined
  }

  close (): void {
    this.stopRenewing()
  }
}

/**
 * A route's concurrency slots: leases in its store, or while the store is unreachable, as
 * onStoreError decides (as for reservations): a gate on the local share's store, none (open), or a
 * refusal (closed). A request keeps its slot across retries (same signal) until it releases it.
 */
export class ConcurrencySlots {
  private readonly route: RouteConfig
  private readonly store: BucketStore
  private readonly failover: StoreFailover
  /** The live policy, for the details of a refusal. */
  private readonly policy: BucketPolicy
  private gate: ConcurrencyGate | undefined
  private localGate: ConcurrencyGate | undefined
  /** The concurrency slot each in-progress request (by its abort signal) holds. */
  private readonly bySignal = new WeakMap<CancelSignal, () => void>()

  constructor (route: RouteConfig, store: BucketStore, failover: StoreFailover, policy: BucketPolicy) {
    this.route = route
    this.store = store
    this.failover = failover
    this.policy = policy
  }

  waitingFor (bucket: string): number {
    return (this.gate?.waitingFor(bucket) ?? 0) + (this.localGate?.waitingFor(bucket) ?? 0)
  }

  /** Requests of this bucket holding a concurrency slot in this instance. */
  inFlight (bucket: string): number {
    return (this.gate?.inFlight(bucket) ?? 0) + (this.localGate?.inFlight(bucket) ?? 0)
  }

  /** The release of the slot a request (by its signal) holds already, if any. */
  heldBy (signal: CancelSignal): (() => void) | undefined {
    return this.bySignal.get(signal)
  }

  /** The request holds this slot until it is dropped. */
  keep (signal: CancelSignal, release: () => void): void {
    this.bySignal.set(signal, release)
  }

  /** The request did not start: its slot goes back. */
  drop (signal: CancelSignal, release: () => void): void {
    release()
    this.bySignal.delete(signal)
  }

  /**
   * A concurrency slot, taken before the rate reservation so that a slot wait never makes a booked
   * start late. Only for a route with a cap (admit checks, so a route without one awaits nothing here);
   * undefined while the store is unreachable and the route is open.
   */
  async take (bucket: string, deadline: number, signal: CancelSignal): Promise<(() => void) | undefined> {
    let fault: unknown
    if (this.failover.answers()) {
      this.gate ??= new ConcurrencyGate(this.store)
      try {
        return await this.fromGate(this.gate, bucket, this.route.concurrency, deadline, signal)
      } catch (err) {
        if (err instanceof SluiceError || err instanceof ClientGoneError || this.store.kind === 'memory') throw err
        fault = err
      }
    }
    if (this.failover.enterOutage(bucket, fault) === 'open') return undefined
    this.localGate ??= new ConcurrencyGate(this.failover.local())
    return await this.fromGate(this.localGate, bucket, this.failover.share(this.route.concurrency), deadline, signal)
  }

  private async fromGate (gate: ConcurrencyGate, bucket: string, slots: number, deadline: number, signal: CancelSignal): Promise<() => void> {
    try {
      const id = await gate.acquire(bucket, slots, deadline, signal)
      let released = false
      return () => {
        if (released) return
        released = true
        void gate.release(bucket, id)
      }
    } catch (err) {
      if (err instanceof LeaseAbortedError) throw new ClientGoneError(err.message)
      if (err instanceof LeaseTimeoutError) {
        throw new SluiceError('RATE_LIMITED', 429, `all ${slots} concurrency slots of ${this.route.name} stayed busy for the wait bound`,
          refusalDetails(this.route.name, this.policy, bucket, { reason: 'concurrency', concurrency: slots, retry_after_ms: err.retryInMs }), retryAfterSeconds(err.retryInMs))
      }
      throw err
    }
  }
}
