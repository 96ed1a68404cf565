// `concurrency: N`: at most N requests of a bucket in flight at the upstream, across all instances.
// Each slot is a lease in the store that expires by itself (an instance that dies cannot leak one)
// and is renewed while its request lives. A request that finds every slot taken waits in a local
// FIFO, woken by a freed lease (this instance's, or another's through one pub/sub message) or by
// the earliest lease's expiry: one store call per try, no polling.
import { randomUUID } from 'node:crypto'
import type { BucketStore } from '../store/bucket-store'
import type { CancelSignal } from './cancel'
import { LeaseAbortedError, LeaseTimeoutError } from '../errors'

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
