// Admission for one route: reserve a start time in the store (one round trip), refuse at once what
// could not start within the wait bound, and otherwise sleep on one local timer until the start.
import type { RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds, ClientGoneError, LeaseAbortedError, LeaseTimeoutError } from '../errors'
import { hasStartRecorder, hasStoreClock, type BucketPolicy, type BucketStore, type Reservation } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import { sleep, type CancelSignal } from './cancel'
import { MemoryStore } from '../store/memory-store'
import { ConcurrencyGate } from './concurrency-gate'

/**
 * Where a route's reservations are made right now: the shared store ("redis"), the embedded one
 * ("memory"), or, while Redis is unreachable, the route's onStoreError choice: this instance's share
 * in process memory ("local"), unshaped ("open"), or refused ("closed").
 */
export type StoreMode = 'redis' | 'memory' | 'local' | 'open' | 'closed'

export type LimiterLog = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void

export interface Admission {
  bucket: string
  reservation: Reservation
  /** ms actually spent waiting locally */
  waitedMs: number
  /** Give the concurrency slot back (route `concurrency`); call once the upstream exchange is over. */
  release?: () => void
}

/** Re-reservations a request may make after starting late, before it is forwarded late anyway. */
const MAX_LATE_RETRIES = 5
/** Per-bucket memory of a limiter is swept of idle buckets beyond this many (noteStart). */
const SWEEP_ABOVE = 1024
export class RouteLimiter {
  readonly route: RouteConfig
  readonly policy: BucketPolicy
  private readonly store: BucketStore
  /** Requests of this instance waiting per bucket (the maxQueue bound is per instance). */
  private readonly waiting = new Map<string, number>()
  /** Newest local start per bucket, ms since epoch, to give QUEUE_FULL a useful Retry-After. */
  private readonly lastStart = new Map<string, number>()
  /** Starts that came later than half the margin after their slot (see admit). */
  readonly stats = { lateRetries: 0, lateForwarded: 0 }
  private mode: StoreMode
  /** Until then (performance.now ms), reservations in Redis also take this instance's local share. */
  private transitionUntil = 0
  private fallbackStore: MemoryStore | undefined
  /** Which store made a reservation, so it is given back to the same one. */
  private readonly made = new WeakMap<Reservation, { store: BucketStore, policy: BucketPolicy }>()
  private readonly log: LimiterLog
  /** Buckets whose local share has been set up since the store became unreachable. */
  private readonly seeded = new Set<string>()
  /** Starts (epoch ms, nowMs clock, one per unit) made without Redis (local share, or unshaped), per bucket: told to Redis when it is back. */
  private readonly startsAway = new Map<string, number[]>()

  constructor (route: RouteConfig, store: BucketStore, log: LimiterLog = () => {}) {
    this.route = route
    this.store = store
    this.log = log
    this.mode = store.kind === 'memory' ? 'memory' : 'redis'
    this.policy = {
      algorithm: route.algorithm,
      limit: route.limit.count,
      windowMs: route.limit.windowMs,
      burst: route.burst,
      marginMs: route.marginMs
    }
  }

  /**
   * Follow a limit the upstream announced (upstream-signals.ts): the burst stays within it, and with
   * limit: auto the window follows too. The route's config is left as it was.
   */
  setLimit (limit: number, windowMs: number): void {
    const policy = this.policy
    policy.limit = limit
    policy.burst = Math.min(this.route.burst, limit)
    if (this.route.limitAuto && windowMs !== policy.windowMs) {
      policy.windowMs = windowMs
      policy.marginMs = Math.max(50, Math.round(windowMs / 100))
    }
  }

  /**
   * Where this route's reservations are made right now. The mode changes with a request (see book()),
   * so while Redis is not connected the route is in its onStoreError mode already, as its next request
   * will be, even before one comes (Redis unreachable from the start, or just gone).
   */
  get storeMode (): StoreMode {
    if (this.mode === 'redis' && !this.store.available()) return this.route.onStoreError
    return this.mode
  }

  private setMode (mode: StoreMode, err?: unknown): void {
    if (mode === this.mode) return
    const from = this.mode
    this.mode = mode
    if (mode === 'redis') {
      this.seeded.clear()
      // Redis knows nothing of the starts booked locally during the outage, some of them still ahead
      // (waiting requests): until the last of them is a window old, a reservation in Redis also takes
      // this instance's local share, so the two schedules together stay within the budget.
      const lastLocalStartMs = Math.max(Date.now(), ...this.lastStart.values())
      this.transitionUntil = performance.now() + (lastLocalStartMs - Date.now()) + this.policy.windowMs + this.policy.marginMs
      this.recordAway()
      this.log('info', { route: this.route.name, storeMode: mode, from }, `route ${this.route.name}: the shared store is back, shaping in Redis again`)
    } else {
      const reason = err instanceof Error ? err.message : undefined
      const share = mode === 'local' ? ` with 1/${this.store.instanceCount()} of the budget` : ''
      this.log('warn', { route: this.route.name, storeMode: mode, from, reason }, `route ${this.route.name}: the shared store is unreachable, mode ${mode}${share}`)
    }
  }

  /**
   * The transition above bounds this instance; the others book in Redis, which has not seen this
   * instance's starts of the outage (another instance may have been back on Redis for a while). So
   * those of the last window (and margin) are recorded there once, at the times they were made, and
   * count in every instance's next reservations. Best effort: on an error the transition still holds.
   */
  private recordAway (): void {
    const store = this.store
    if (hasStartRecorder(store)) {
      for (const [bucket, starts] of this.startsAway) {
        const recent = this.withinWindow(starts).sort((x, y) => x - y)
        if (recent.length > 0) void store.recordStarts(bucket, this.policy, recent).catch(() => {})
      }
    }
    this.startsAway.clear()
  }

  /** The starts (epoch ms, nowMs clock) a window and its margin could still hold. */
  private withinWindow (starts: number[]): number[] {
    const since = nowMs() - this.policy.windowMs - this.policy.marginMs
    return starts.filter((at) => at > since)
  }

  /** A start made without Redis (see recordAway); a bucket's list is pruned of starts older than a window. */
  private noteAway (bucket: string, startMs: number, cost: number): void {
    let starts = this.startsAway.get(bucket)
    if (starts === undefined) {
      starts = []
      this.startsAway.set(bucket, starts)
    }
    for (let i = 0; i < cost; i++) starts.push(startMs)
    // Booked locally just before another request switched back to Redis (the local store answers
    // after a turn of the event loop): record it now rather than at the next outage's end.
    if (this.mode === 'redis') return this.recordAway()
    if (starts.length > 2 * this.policy.limit) this.startsAway.set(bucket, this.withinWindow(starts))
  }

  /** This instance's share of the budget while the shared store is unreachable. */
  private localPolicy (): BucketPolicy {
    const limit = this.share(this.policy.limit)
    const burst = Math.min(limit, this.share(this.policy.burst))
    return { ...this.policy, limit, burst }
  }

  /** This instance's part of `amount` among the team's live instances, at least 1. */
  private share (amount: number): number {
    return Math.max(1, Math.floor(amount / Math.max(1, this.store.instanceCount())))
  }

  /** The answer while the store is unreachable on a route with onStoreError: closed. */
  private storeClosed (bucket: string, err: unknown): SluiceError {
    return new SluiceError('STORE_UNAVAILABLE', 503, 'the budget store is unreachable, so the request was not forwarded (onStoreError: closed)',
      this.details(bucket, { store: this.store.kind, store_mode: 'closed' }), 1, { cause: err })
  }

  private local (): MemoryStore {
    this.fallbackStore ??= new MemoryStore()
    return this.fallbackStore
  }

  /** One reservation: in the shared store when it answers, else as the route's onStoreError says. */
  private async book (bucket: string, cost: number, maxWaitMs: number): Promise<Reservation> {
    if (this.store.kind === 'memory' || this.store.available()) {
      let reservation: Reservation | undefined
      let fault: unknown
      try {
        reservation = await this.store.reserve(bucket, this.policy, cost, maxWaitMs)
      } catch (err) {
        fault = err
      }
      if (reservation !== undefined) {
        if (reservation.admitted) this.newest.set(bucket, reservation)
        if (this.store.kind === 'memory') return reservation
        this.setMode('redis')
        this.made.set(reservation, { store: this.store, policy: this.policy })
        return reservation
      }
      if (this.store.kind === 'memory') throw fault
      return await this.fallback(bucket, cost, maxWaitMs, fault)
    }
    return await this.fallback(bucket, cost, maxWaitMs, undefined)
  }

  private async fallback (bucket: string, cost: number, maxWaitMs: number, err: unknown): Promise<Reservation> {
    const mode = this.route.onStoreError
    this.setMode(mode, err)
    if (mode === 'closed') throw this.storeClosed(bucket, err)
    if (mode === 'open') return { admitted: true, waitMs: 0, remaining: 0, resetMs: 0, ticket: undefined }
    const policy = this.localPolicy()
    if (!this.seeded.has(bucket)) {
      // Starts booked in Redis before the outage still happen; the local share begins only a window
      // after this instance's last one, so no window holds both (the budget is not spent twice).
      this.seeded.add(bucket)
      const sinceLastMs = Date.now() - (this.lastStart.get(bucket) ?? 0)
      const holdMs = this.policy.windowMs + this.policy.marginMs - sinceLastMs
      if (holdMs > 0) await this.local().pause(bucket, holdMs)
    }
    const reservation = await this.local().reserve(bucket, policy, cost, maxWaitMs)
    this.made.set(reservation, { store: this.local(), policy })
    return reservation
  }

  queueDepth (bucket: string): number {
    return (this.waiting.get(bucket) ?? 0) + (this.gate?.waitingFor(bucket) ?? 0) + (this.localGate?.waitingFor(bucket) ?? 0)
  }

  /** Requests of this bucket holding a concurrency slot in this instance. */
  inFlight (bucket: string): number {
    return (this.gate?.inFlight(bucket) ?? 0) + (this.localGate?.inFlight(bucket) ?? 0)
  }

  private gate: ConcurrencyGate | undefined
  private localGate: ConcurrencyGate | undefined

  /**
   * A concurrency slot, taken before the rate reservation so that a slot wait never makes a booked
   * start late. While the store is unreachable, onStoreError decides, as for reservations. Only for a
   * route with a cap (admit checks, so a route without one awaits nothing here).
   */
  private async takeSlot (bucket: string, deadline: number, signal: CancelSignal): Promise<(() => void) | undefined> {
    const limit = this.route.concurrency
    const fromGate = async (gate: ConcurrencyGate, slots: number): Promise<() => void> => {
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
            this.details(bucket, { reason: 'concurrency', concurrency: slots, retry_after_ms: err.retryInMs }), retryAfterSeconds(err.retryInMs))
        }
        throw err
      }
    }
    let fault: unknown
    if (this.store.kind === 'memory' || this.store.available()) {
      this.gate ??= new ConcurrencyGate(this.store)
      try {
        return await fromGate(this.gate, limit)
      } catch (err) {
        if (err instanceof SluiceError || err instanceof ClientGoneError || this.store.kind === 'memory') throw err
        fault = err
      }
    }
    this.setMode(this.route.onStoreError, fault)
    if (this.route.onStoreError === 'open') return undefined
    if (this.route.onStoreError === 'closed') throw this.storeClosed(bucket, fault)
    this.localGate ??= new ConcurrencyGate(this.local())
    return await fromGate(this.localGate, this.share(limit))
  }

  totalWaiting (): number {
    let n = 0
    for (const v of this.waiting.values()) n += v
    return n
  }

  private details (bucket: string, extra: Record<string, unknown>): Record<string, unknown> {
    return { upstream: this.route.name, bucket, limit: this.route.limit.count, window_s: this.route.limit.windowMs / 1000, ...extra }
  }

  /**
   * Wait for a start time, or throw a SluiceError (RATE_LIMITED, QUEUE_FULL, STORE_UNAVAILABLE) at once,
   * or ClientGoneError when `signal` fires while waiting (the reservation is then given back if possible).
   */
  async admit (bucket: string, maxWaitMs: number, signal: CancelSignal, cost = 1): Promise<Admission> {
    const depth = this.queueDepth(bucket)
    if (depth >= this.route.maxQueue) {
      const aheadMs = Math.max(0, (this.lastStart.get(bucket) ?? Date.now()) - Date.now())
      throw new SluiceError('QUEUE_FULL', 429, `${depth} requests of bucket ${bucket} are already waiting in this instance (maxQueue ${this.route.maxQueue})`,
        this.details(bucket, { queue_depth: depth, max_queue: this.route.maxQueue, retry_after_ms: Math.round(aheadMs) }), retryAfterSeconds(aheadMs))
    }
    const arrived = performance.now()
    const deadline = arrived + maxWaitMs
    // A retry of the same request (same signal) keeps the slot it holds instead of taking a second.
    const held = this.slotBySignal.get(signal)
    const release = held ?? (this.route.concurrency > 0 ? await this.takeSlot(bucket, deadline, signal) : undefined)
    if (release !== undefined) this.slotBySignal.set(signal, release)
    try {
      const admission = await this.scheduleStart(bucket, cost, maxWaitMs, arrived, deadline, signal)
      return release === undefined ? admission : { ...admission, release }
    } catch (err) {
      if (held === undefined && release !== undefined) {
        release()
        this.slotBySignal.delete(signal)
      }
      throw err
    }
  }

  /** The concurrency slot each in-progress request (by its abort signal) holds. */
  private readonly slotBySignal = new WeakMap<CancelSignal, () => void>()

  /** The rate part of admit(): reserve, wait, re-reserve a late start. */
  private async scheduleStart (bucket: string, cost: number, maxWaitMs: number, arrived: number, deadline: number, signal: CancelSignal): Promise<Admission> {
    // A request may leave at most half the margin after its slot; the other half absorbs the network.
    const toleranceMs = this.route.marginMs > 0 ? this.route.marginMs / 2 : Infinity
    for (let attempt = 0; ; attempt++) {
      // Redis answers again: switch back here, before booking, so that no request can book in Redis
      // without the local share first (book() would switch too, but only after its reservation).
      if (this.store.kind === 'redis' && this.mode !== 'redis' && this.store.available()) this.setMode('redis')
      if (this.store.kind === 'redis' && performance.now() < this.transitionUntil) {
        // Just after an outage Redis has not seen this instance's local starts: first wait for a slot
        // of the local share, then book in Redis, so what Redis records is when the request leaves.
        const policy = this.localPolicy()
        const twin = await this.local().reserve(bucket, policy, cost, Math.max(0, deadline - performance.now()))
        if (!twin.admitted) {
          throw new SluiceError('RATE_LIMITED', 429, `the budget of ${this.route.name} has no room within the wait bound of ${Math.round(maxWaitMs)} ms`,
            this.details(bucket, { retry_after_ms: Math.ceil(twin.waitMs), max_wait_ms: Math.round(maxWaitMs) }), retryAfterSeconds(twin.waitMs))
        }
        if (twin.waitMs > 0 && !(await this.wait(bucket, twin.waitMs, signal))) {
          await this.local().release(bucket, policy, cost, twin.ticket as number)
          throw new ClientGoneError('client disconnected while waiting')
        }
      }
      const sentAt = performance.now()
      let reservation: Reservation
      try {
        reservation = await this.book(bucket, cost, Math.max(0, deadline - sentAt))
      } catch (err) {
        if (err instanceof SluiceError) throw err
        throw new SluiceError('STORE_UNAVAILABLE', 503, 'the budget store is unreachable, so the request was not forwarded', this.details(bucket, { store: this.store.kind }), 1, { cause: err })
      }
      const receivedAt = performance.now()
      // The slot in this process's clock. Redis ran the script somewhere between send and receipt;
      // counting from receipt is never early (a busy event loop can delay the send by tens of ms),
      // at the cost of starting up to one round trip late.
      const slot = receivedAt + reservation.waitMs
      // The store checked the bound against the time it ran; counted from receipt, a slow round trip
      // can put a waiting request's slot past the client's bound: then it could not start in time.
      const pastBound = reservation.admitted && reservation.waitMs > 0 && slot > deadline
      if (pastBound) await this.giveBack(bucket, reservation, cost)
      if (!reservation.admitted || pastBound) {
        const ms = Math.ceil(reservation.waitMs)
        if (attempt === 0) {
          throw new SluiceError('RATE_LIMITED', 429, `the budget of ${this.route.name} has no room within the wait bound of ${Math.round(maxWaitMs)} ms; retry after ${retryAfterSeconds(ms)} s`,
            this.details(bucket, { retry_after_ms: ms, max_wait_ms: Math.round(maxWaitMs) }), retryAfterSeconds(ms))
        }
        throw new SluiceError('QUEUE_TIMEOUT', 503, `the request waited ${Math.round(receivedAt - arrived)} ms, but Sluice could not start it on time within its wait bound`,
          this.details(bucket, { retry_after_ms: ms, max_wait_ms: Math.round(maxWaitMs), late_starts: attempt }), retryAfterSeconds(ms))
      }
      this.noteStart(bucket, Date.now() + (slot - receivedAt))
      if (this.store.kind === 'redis' && !this.fromSharedStore(reservation)) this.noteAway(bucket, nowMs() + (slot - receivedAt), cost)
      if (slot > receivedAt) {
        const started = await this.wait(bucket, slot - receivedAt, signal)
        if (!started) {
          await this.giveBack(bucket, reservation, cost)
          throw new ClientGoneError('client disconnected while waiting')
        }
      }
      // Late against the slot counted from receipt, and against the start the store recorded: a reply
      // read long after Redis sent it (an event loop busy with a burst of arrivals) makes a request
      // that looks on time here leave long after the start the next window is counted from.
      const lateMs = Math.max(performance.now() - slot, this.lateInStoreClock(reservation))
      // A start later than the tolerance (a busy event loop, a burst of arrivals being admitted) could
      // land in the next window at the upstream: give the slot up and reserve again, within the bound.
      if (lateMs <= toleranceMs || attempt >= MAX_LATE_RETRIES) {
        if (lateMs > toleranceMs) this.stats.lateForwarded++
        return { bucket, reservation, waitedMs: performance.now() - arrived }
      }
      this.stats.lateRetries++
      await this.giveBack(bucket, reservation, cost)
      if (signal.aborted) throw new ClientGoneError('client disconnected while waiting')
    }
  }

  /** Buckets remembered above this many are swept of those idle for a window (see noteStart). */
  private sweepAbove = SWEEP_ABOVE

  /**
   * The newest local start of a bucket (epoch ms). Every distinct credential of a keyed route is a
   * bucket, so the per-bucket maps are swept once they hold more than SWEEP_ABOVE buckets (and then
   * twice as many as were left): a bucket without a start for a window and its margin holds nothing
   * that matters (its newest reservation can no longer be given back usefully, nor its last start
   * delay anything).
   */
  private noteStart (bucket: string, startMs: number): void {
    this.lastStart.set(bucket, Math.max(this.lastStart.get(bucket) ?? 0, startMs))
    if (this.lastStart.size <= this.sweepAbove) return
    const idleBefore = Date.now() - this.policy.windowMs - this.policy.marginMs
    for (const [name, last] of this.lastStart) {
      if (last >= idleBefore || this.waiting.has(name)) continue
      this.lastStart.delete(name)
      this.newest.delete(name)
    }
    for (const name of this.newest.keys()) if (!this.lastStart.has(name)) this.newest.delete(name)
    this.sweepAbove = Math.max(SWEEP_ABOVE, 2 * this.lastStart.size)
  }

  /** How long after the start the store recorded this moment is (ms; negative when before it). */
  private lateInStoreClock (reservation: Reservation): number {
    // The store knows how its clock differs from this process's (redis-store.ts: TIME on connection,
    // before any traffic, then its fastest reservations); this process's clock is monotonic.
    const clock = hasStoreClock(this.store) ? this.store.clockOffset() : undefined
    if (clock === undefined || !this.fromSharedStore(reservation)) return -Infinity
    return nowMs() + clock.skewMs - reservation.startMs
  }

  /**
   * Made by the route's Redis store, with a start in Redis's clock (not by the local fallback of an
   * outage). The memory store's clock is this process's: the slot counted from receipt says it all.
   */
  private fromSharedStore (reservation: Reservation): reservation is Reservation & { startMs: number } {
    return reservation.startMs !== undefined && this.store.kind === 'redis' && this.made.get(reservation)?.store === this.store
  }

  private async wait (bucket: string, ms: number, signal: CancelSignal): Promise<boolean> {
    this.waiting.set(bucket, (this.waiting.get(bucket) ?? 0) + 1)
    try {
      return await sleep(ms, signal)
    } finally {
      const left = (this.waiting.get(bucket) ?? 1) - 1
      if (left <= 0) this.waiting.delete(bucket)
      else this.waiting.set(bucket, left)
    }
  }

  /**
   * The newest reservation this instance made per bucket in the route's store. Only a bucket's newest
   * can be given back (the store refuses the others), so for an older one the store is not even asked:
   * a burst's late starts would otherwise cost a second, useless round trip each.
   */
  private readonly newest = new Map<string, Reservation>()

  /** Give a reservation back (best effort: only the newest one can be, and a store error is ignored). */
  async giveBack (bucket: string, reservation: Reservation, cost = 1): Promise<boolean> {
    if (reservation.ticket === undefined) return false
    const made = this.made.get(reservation) ?? { store: this.store, policy: this.policy }
    const newest = this.newest.get(bucket)
    // A later reservation of this instance exists: this one is not the store's newest.
    if (made.store === this.store && newest !== undefined && newest !== reservation) return false
    try {
      const released = await made.store.release(bucket, made.policy, cost, reservation.ticket)
      // Which reservation is newest now is not known here (maybe another instance's): ask next time.
      if (released && newest === reservation) this.newest.delete(bucket)
      return released
    } catch {
      return false
    }
  }
}
