// Admission for one route: reserve a start time in the store (one round trip), refuse at once what
// could not start within the wait bound, and otherwise sleep on one local timer until the start.
// Which store takes the reservation is store-failover.ts's business, concurrency slots are
// concurrency-gate.ts's, and a route in shadow mode only reports (shadow-limiter.ts).
import { maxCostOf } from '../config/cost-rules'
import type { RouteConfig } from '../config/schema'
import { formatRate } from '../config/units'
import { SluiceError, retryAfterSeconds, ClientGoneError } from '../errors'
import type { BucketPolicy, BucketStore, Reservation } from '../store/bucket-store'
import type { CancelSignal } from './cancel'
import { ConcurrencySlots } from './concurrency-gate'
import { LateStarts, type LateStartCounts } from './late-starts'
import { LocalBuckets } from './local-buckets'
import { LimitSet } from './limit-set'
import { LimitSources } from './limit-sources'
import { noRoom, refusalDetails, type Refusal } from './refusal-details'
import { ShadowAdmitter } from './shadow-limiter'
import { StoreFailover, type LimiterLog, type StoreMode } from './store-failover'

export interface Admission {
  bucket: string
  reservation: Reservation
  /** ms actually spent waiting locally */
  waitedMs: number
  /** The limit in force when the start was booked: a start booked under a higher one than now is queued again (forward.ts). */
  bookedUnder?: number
  /** Give the concurrency slot back (route `concurrency`); call once the upstream exchange is over. */
  release?: () => void
  /** The start the store recorded, in this process's clock (performance.now): how late the request leaves is counted from it. */
  startAt?: number
}

/** Re-reservations a request may make after starting late, before it is forwarded late anyway. */
const MAX_LATE_RETRIES = 5

export class RouteLimiter {
  readonly route: RouteConfig
  /** The budget in force: the route's, until setLimit adopts another; everything derived reads it live. */
  readonly policy: BucketPolicy
  /** Where the limit in force comes from: configured, announced, learned (limit-sources.ts composes them and calls setLimit). */
  readonly sources: LimitSources
  private readonly store: BucketStore
  private readonly failover: StoreFailover
  private readonly slots: ConcurrencySlots
  /** Set for a route in shadow mode: it admits instead (nothing waits, nothing is refused). */
  private readonly shadow: ShadowAdmitter | undefined
  /** Requests waiting and the newest start, per bucket, in this process (local-buckets.ts). */
  private readonly local: LocalBuckets
  /** Starts that came later than half the margin after their slot (see scheduleStart). */
  private readonly late: LateStarts
  /** A route with several limits reserves in all of them at once (limit-set.ts); `policy` is the first's. */
  readonly limits: LimitSet | undefined
  /** Told, as a request starts waiting, how long until its slot (preconnect.ts, which asks startsSoon). */
  onWaiting: ((inMs: number) => void) | undefined

  constructor (route: RouteConfig, store: BucketStore, log: LimiterLog = () => {}) {
    this.route = route
    this.store = store
    this.policy = {
      algorithm: route.algorithm,
      limit: route.limit.count,
      windowMs: route.limit.windowMs,
      burst: route.burst,
      marginMs: route.marginMs
    }
    this.sources = new LimitSources(route, (limit, windowMs) => this.setLimit(limit, windowMs), log)
    this.local = new LocalBuckets(() => this.policy.windowMs + this.policy.marginMs, (kept) => {
      this.failover.forgetBeyond(kept)
      this.limits?.forgetBeyond(kept)
    })
    this.failover = new StoreFailover(route, store, this.policy, this.local.lastStart, log)
    this.slots = new ConcurrencySlots(route, store, this.failover, this.policy)
    this.limits = route.limits === undefined ? undefined : new LimitSet(route, this.policy, store, this.failover)
    this.late = new LateStarts(this.policy, store, this.failover, this.limits)
    this.shadow = route.mode === 'shadow' ? new ShadowAdmitter(route, store, this.policy, this.limits) : undefined
  }

  /** Where this route's reservations are made right now (see store-failover.ts). */
  get storeMode (): StoreMode {
    return this.failover.storeMode
  }

  /** storeMode, and why when the route is not where it is configured to shape (readiness). */
  storeStatus (): { mode: StoreMode, reason?: string } {
    return this.failover.status()
  }

  /** The store took a write (readiness probe): a route out of Redis goes back to it before its next request. */
  storeAnswers (): void {
    this.failover.resumeIfBack()
  }

  /** What late starts did (late-starts.ts). */
  get stats (): Readonly<LateStartCounts> {
    return this.late.counts
  }

  /**
   * A request reached its upstream connection `lateMs` after its start, `uncoveredMs` more than the
   * margin covered, and its answer has come (margin-probe.ts measures when its headers were written;
   * the check in scheduleStart comes before the proxy's own work, which a cold process admitting
   * hundreds of arrivals can hold up past the margin's cap). The start `limit` places after it would
   * be counted in its window: a token bucket's next starts come that much later (pushBack); a sliding
   * window's start is recorded again now, when the upstream has counted it, as a start late at its
   * check is (LateStarts.postpone), unless what the window recorded for it covers that. Starts booked
   * from the old record keep theirs; several limits are neither pushed back nor recorded again.
   */
  async sentLate (bucket: string, uncoveredMs: number, lateMs: number, reservation: Reservation | undefined, cost: number | number[] | undefined): Promise<void> {
    if (this.policy.algorithm === 'token-bucket') return await this.pushBack(bucket, uncoveredMs)
    if (reservation === undefined || cost === undefined || !this.late.beyond(lateMs, this.policy.marginMs, reservation, cost)) return
    if (await this.late.postpone(bucket, reservation, cost)) this.late.counts.lateMoved++
  }

  /** A token bucket's next starts, `byMs` later (the team's, with Redis: StoreFailover.pushBack). */
  private async pushBack (bucket: string, byMs: number): Promise<void> {
    if (this.limits !== undefined || byMs <= 0) return
    if (await this.failover.pushBack(bucket, byMs)) this.late.counts.pushedBack++
  }

  /**
   * Adopt a limit (the upstream announced one): the route's config stays as it was. A `limit: auto`
   * route adopts the window too, with a margin of a hundredth of it (at least 50 ms).
   */
  setLimit (limit: number, windowMs: number): void {
    this.policy.limit = limit
    this.policy.burst = Math.min(this.route.burst, limit)
    if (this.route.limitAuto && windowMs !== this.policy.windowMs) {
      this.policy.windowMs = windowMs
      this.policy.marginMs = Math.max(50, Math.round(windowMs / 100))
    }
  }

  /**
   * Use a margin of `ms` from the next reservation on (the route's adaptive margin, measured on its
   * path: http/margin-probe.ts). Reservations already made keep theirs.
   */
  setMargin (ms: number): void {
    this.policy.marginMs = ms
  }

  queueDepth (bucket: string): number {
    if (this.shadow !== undefined) return this.shadow.queueDepth(bucket)
    return this.local.waitingIn(bucket) + this.slots.waitingFor(bucket)
  }

  /** The details of a refusal of this route's budget, with the limit in force. */
  details (bucket: string, extra: Record<string, unknown>): Record<string, unknown> {
    return refusalDetails(this.route.name, this.policy, bucket, extra, this.sources.view())
  }

  /** A reservation without a start in the bound, as refusal-details.ts's noRoom words it. */
  private refusal (bucket: string, reservation: Reservation): Refusal {
    return { route: this.route.name, waitMs: reservation.waitMs, binding: this.limits?.bindingDetails(reservation), details: (extra) => this.details(bucket, extra) }
  }

  /**
   * Wait for a start time, or throw a SluiceError (RATE_LIMITED, QUEUE_FULL, STORE_UNAVAILABLE) at once,
   * or ClientGoneError when `signal` fires while waiting (the reservation is then given back if possible).
   * In shadow mode, a ShadowAdmission (shadow-limiter.ts) at once.
   */
  async admit (bucket: string, maxWaitMs: number, signal: CancelSignal, cost = 1, costs?: readonly number[]): Promise<Admission> {
    if (this.shadow !== undefined) return await this.shadow.admit(bucket, maxWaitMs, cost, costs)
    const perLimit = this.limits?.costsOf(bucket, costs)
    if (perLimit === undefined) this.checkCost(bucket, cost)
    const depth = this.queueDepth(bucket)
    if (depth >= this.route.maxQueue) {
      const aheadMs = Math.max(0, (this.local.lastStart.get(bucket) ?? Date.now()) - Date.now())
      throw new SluiceError('QUEUE_FULL', 429, `${depth} requests of bucket ${bucket} are already waiting in this instance (maxQueue ${this.route.maxQueue})`,
        this.details(bucket, { queue_depth: depth, max_queue: this.route.maxQueue, retry_after_ms: Math.round(aheadMs) }), retryAfterSeconds(aheadMs))
    }
    const arrived = performance.now()
    const deadline = arrived + maxWaitMs
    // A retry of the same request (same signal) keeps the slot it holds instead of taking a second.
    const held = this.slots.heldBy(signal)
    const release = held ?? (this.route.concurrency > 0 ? await this.slots.take(bucket, deadline, signal) : undefined)
    if (release !== undefined) this.slots.keep(signal, release)
    try {
      const admission = await this.scheduleStart(bucket, perLimit ?? cost, maxWaitMs, arrived, deadline, signal)
      return release === undefined ? admission : { ...admission, release }
    } catch (err) {
      if (held === undefined && release !== undefined) this.slots.drop(signal, release)
      throw err
    }
  }

  /**
   * A cost the limit in force can never hold (setLimit lowered it below a cost rule's) is a 400 naming
   * the limit, as for a route with several: the store could not book it (a sliding window would look
   * back a negative number of starts).
   */
  private checkCost (bucket: string, cost: number): void {
    const p = this.policy
    const bound = maxCostOf(p.algorithm, p.limit, p.burst)
    if (cost <= bound.max) return
    const name = formatRate({ count: p.limit, windowMs: p.windowMs })
    throw new SluiceError('BAD_REQUEST', 400, `this request costs ${cost} in limit ${name} of ${this.route.name}, which can hold at most ${bound.max}`,
      this.details(bucket, { limit_name: name, cost, max_cost: bound.max }))
  }

  /** One reservation: in the route's one limit (cost), or in all of its several (a cost per limit). */
  private async book (bucket: string, cost: number | number[], maxWaitMs: number): Promise<Reservation> {
    if (typeof cost === 'number') return await this.failover.book(bucket, cost, maxWaitMs)
    return await (this.limits as LimitSet).book(bucket, cost, maxWaitMs)
  }

  /** The rate part of admit(): reserve, wait, re-reserve a late start. */
  private async scheduleStart (bucket: string, cost: number | number[], maxWaitMs: number, arrived: number, deadline: number, signal: CancelSignal): Promise<Admission> {
    // A request may leave at most half the margin after its slot; the other half absorbs the network.
    const toleranceMs = this.policy.marginMs > 0 ? this.policy.marginMs / 2 : Infinity
    for (let attempt = 0; ; attempt++) {
      this.failover.resumeIfBack()
      const bookedUnder = this.policy.limit
      if (this.failover.handingOver()) await this.waitForLocalShare(bucket, cost, maxWaitMs, deadline, signal)
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
      if (pastBound) await this.giveBackCost(bucket, reservation, cost)
      if (!reservation.admitted || pastBound) throw noRoom(this.refusal(bucket, reservation), attempt, maxWaitMs, receivedAt - arrived)
      this.local.noteStart(bucket, Date.now() + (slot - receivedAt))
      if (typeof cost === 'number') this.failover.noteStart(bucket, reservation, slot - receivedAt, cost)
      else this.limits?.noteStart(reservation, slot - receivedAt)
      if (slot > receivedAt) {
        this.onWaiting?.(slot - receivedAt)
        if (!(await this.local.wait(bucket, slot - receivedAt, signal))) {
          await this.giveBackCost(bucket, reservation, cost)
          throw new ClientGoneError('client disconnected while waiting')
        }
      }
      const lateMs = this.late.lateMs(reservation, slot)
      // A start later than the tolerance (a busy event loop, a burst of arrivals being admitted) could
      // land in the next window at the upstream: give the slot up and reserve again, within the bound.
      // Late against what the store recorded: the next window is counted from there.
      const late = this.late.beyond(lateMs, toleranceMs, reservation, cost)
      const leaves = !late ? 'on-time' : attempt >= MAX_LATE_RETRIES ? 'lateForwarded' : await this.late.postpone(bucket, reservation, cost) ? 'lateMoved' : undefined
      if (leaves !== undefined) {
        if (leaves !== 'on-time') this.late.counts[leaves]++
        // Counted from the start it was booked at: the margin learns how late this path can leave.
        const now = performance.now()
        return { bucket, reservation, waitedMs: now - arrived, startAt: now - Math.max(0, lateMs), bookedUnder }
      }
      this.late.counts.lateRetries++
      await this.giveBackCost(bucket, reservation, cost)
      if (signal.aborted) throw new ClientGoneError('client disconnected while waiting')
    }
  }

  /**
   * Requests of this instance that may start within the next window: those waiting for their slots
   * and those `queued` before booking one (the fair scheduler's), at most this instance's share (the
   * limit over the live instances) of each bucket they are in.
   */
  startsSoon (queued: { requests: number, buckets: number } = { requests: 0, buckets: 0 }): number {
    const waiting = this.local.waitingAll()
    const share = Math.ceil(this.policy.limit / Math.max(1, this.store.instanceCount()))
    return Math.min(waiting.requests + queued.requests, share * Math.max(waiting.buckets, queued.buckets))
  }

  /** Give a reservation back (best effort: StoreFailover.giveBack, LimitSet.giveBack). */
  private async giveBackCost (bucket: string, reservation: Reservation, cost: number | number[]): Promise<boolean> {
    return typeof cost === 'number' ? await this.failover.giveBack(bucket, reservation, cost) : await (this.limits as LimitSet).giveBack(bucket, reservation)
  }

  /**
   * Just after an outage Redis has not seen this instance's local starts: first wait for a slot
   * of the local share, then book in Redis, so what Redis records is when the request leaves.
   */
  private async waitForLocalShare (bucket: string, cost: number | number[], maxWaitMs: number, deadline: number, signal: CancelSignal): Promise<void> {
    const left = Math.max(0, deadline - performance.now())
    let twin: Reservation
    let giveBack: () => Promise<unknown>
    if (typeof cost === 'number') {
      const { store, policy } = this.failover.localShare()
      const share = Math.min(cost, policy.limit)
      twin = await store.reserve(bucket, policy, share, left)
      giveBack = async () => await store.release(bucket, policy, share, twin.ticket as number)
    } else {
      ({ twin, giveBack } = await (this.limits as LimitSet).reserveLocalShare(bucket, cost, left))
    }
    if (!twin.admitted) throw noRoom(this.refusal(bucket, twin), 0, maxWaitMs, 0)
    if (twin.waitMs > 0 && !(await this.local.wait(bucket, twin.waitMs, signal))) {
      await giveBack()
      throw new ClientGoneError('client disconnected while waiting')
    }
  }

  /** Forget buckets idle for a window and its margin (idle-sweep.ts; local-buckets.ts). */
  forgetIdle (now: number): void {
    this.local.forgetIdle(now)
  }

  /** How much per-bucket state this limiter holds (bounded-state tests). */
  stateSizes (): Record<string, number> {
    return { ...this.local.sizes(), ...this.failover.stateSizes(), ...this.limits?.stateSizes() }
  }
}
