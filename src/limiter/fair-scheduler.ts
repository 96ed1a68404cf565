// Fair share of one budget across clients, instances and priorities, in front of RouteLimiter.admit.
//
// Each request still makes ONE reservation in the store, but a client may only have a few units of
// the budget reserved ahead at a time (its look-ahead, per instance: max(1 unit, 40 ms of budget
// plus the store's measured round trip,
// the largest cost) × weight; fair-pacing.ts); the rest waits here, in per-client FIFO queues, and is
// handed to the limiter when one of the client's reservations starts. The store's schedule is FIFO, so
// every backlogged client keeps exactly its look-ahead booked and gets look-ahead / (sum of
// look-aheads) of the budget — on every instance alike, because the shares are made in the shared
// schedule, not by dividing it between instances.
// A newcomer is booked behind at most the others' look-aheads, never behind their backlogs.
// Nothing polls: the queues move when a reservation starts (the limiter's one timer per request),
// and low priority retries when the schedule's answer says the bucket will have room.
import type { Priority, RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds, ClientGoneError } from '../errors'
import { hasClientPresence, hasStoreDistance, type BucketStore } from '../store/bucket-store'
import { ClientStatsTable, recordAdmitted, recordFailure, type ClientStats } from './client-stats'
import { FairBucket, type ClientQueue } from './fair-bucket'
import { FairPacing, distanceMs } from './fair-pacing'
import type { FairAdmission, FairRequest, Held } from './held-queue'
import { PresenceGossip } from './presence-gossip'
import type { Admission, RouteLimiter } from './route-limiter'

const CLASSES: readonly Priority[] = ['high', 'normal']

export class FairScheduler {
  readonly route: RouteConfig
  private readonly limiter: RouteLimiter
  private readonly weights: Map<string, number>
  private readonly buckets = new Map<string, FairBucket>()
  private readonly clientStats = new ClientStatsTable()
  /** Slot and look-ahead, following the limiter's live policy (RouteLimiter.setLimit). */
  private readonly pacing: FairPacing
  /** Low-priority probes made and refused, held requests timed out, requests refused at arrival. */
  private readonly counts = { lowProbes: 0, lowProbesRefused: 0, heldTimeouts: 0, refusedAtArrival: 0 }
  /** Clients active in several instances book 1/n of their look-ahead in each (shared store only). */
  private readonly gossip: PresenceGossip<FairBucket> | undefined

  /** `store`: when shared (Redis), clients active in several instances book 1/n of their look-ahead in each. */
  constructor (route: RouteConfig, limiter: RouteLimiter, weights: Map<string, number> = new Map(), store?: BucketStore) {
    this.route = route
    this.limiter = limiter
    this.weights = weights
    // A distant store's round trip widens the look-ahead (fair-pacing.ts); the embedded one has none.
    const distance = store !== undefined && hasStoreDistance(store) ? store : undefined
    this.pacing = new FairPacing(limiter.policy, route.cost.map((r) => r.cost), () => distanceMs(distance?.reserveRoundTrips()))
    this.gossip = store !== undefined && store.kind === 'redis' && hasClientPresence(store)
      ? new PresenceGossip(store, () => this.buckets.values(), (b) => this.pump(b))
      : undefined
  }

  /** Units of look-ahead for weight 1: enough for the route's costliest request. */
  get lookaheadUnits (): number {
    return this.pacing.lookaheadUnits
  }

  /** One slot of the budget, ms: the wait bound of a low-priority probe per unit of cost. */
  get slotMs (): number {
    return this.pacing.slotMs
  }

  get stats (): Readonly<{ lowProbes: number, lowProbesRefused: number, heldTimeouts: number, refusedAtArrival: number }> {
    return this.counts
  }

  close (): void {
    this.gossip?.close()
  }

  /** Held here plus reserved and not yet started, for one bucket (maxQueue counts both). */
  queueDepth (bucket: string): number {
    const b = this.buckets.get(bucket)
    return b === undefined ? 0 : b.held + b.reserved
  }

  /** Requests held here (not reserved yet), in all buckets, and how many buckets hold some. */
  heldAll (): { requests: number, buckets: number } {
    let requests = 0
    let buckets = 0
    for (const b of this.buckets.values()) {
      if (b.held === 0) continue
      requests += b.held
      buckets++
    }
    return { requests, buckets }
  }

  /** Per-client usage and waits, for metrics and status (ids are hashes). */
  clients (): ClientStats[] {
    return this.clientStats.all()
  }

  /** Forget the stats of clients idle for `idleMs` (queues and buckets go as soon as they are empty). */
  forgetIdle (now: number, idleMs: number): void {
    this.clientStats.forgetIdle(now, idleMs)
  }

  /** How much per-bucket and per-client state this scheduler holds (bounded-state tests). */
  stateSizes (): { buckets: number, clientStats: number } {
    return { buckets: this.buckets.size, clientStats: this.clientStats.size }
  }

  /** Wait for the request's fair turn and its start, or throw what the limiter throws (details.client added). */
  async admit (req: FairRequest): Promise<FairAdmission> {
    if (req.signal.aborted) throw new ClientGoneError('client disconnected before admission')
    const b = this.bucketState(req.bucket)
    const c = this.clientQueue(b, req.client)
    const arrived = performance.now()
    const lowerBoundMs = this.pacing.lowerBoundMs(b.unitsAhead(c, req.priority), req.cost)
    if (lowerBoundMs > req.maxWaitMs) {
      this.counts.refusedAtArrival++
      const ms = Math.ceil(lowerBoundMs)
      this.refuse(b, c, new SluiceError('RATE_LIMITED', 429, `client ${req.client} already has ${b.unitsAhead(c, req.priority)} units waiting in ${this.route.name}; this one could not start within the wait bound of ${Math.round(req.maxWaitMs)} ms`,
        this.limiter.details(b.name, { retry_after_ms: ms, max_wait_ms: Math.round(req.maxWaitMs) }), retryAfterSeconds(ms)))
    }
    if (req.priority !== 'low' && c.held[req.priority].length === 0 && this.mayReserve(b, c, req.priority, req.cost)) {
      // Nothing of this client waits here and its look-ahead has room: pump() would hand this request
      // to the limiter at once (every other client it would move is blocked by its own look-ahead,
      // or it would have moved before), so it goes straight there, without a place in the queues.
      return await this.reserveFor(b, c, req, arrived, 0, req.maxWaitMs)
    }
    return await new Promise<FairAdmission>((resolve, reject) => {
      const held: Held = {
        req,
        arrived,
        deadline: arrived + req.maxWaitMs,
        done: false,
        resolve,
        reject,
        onAbort: () => {
          if (held.done) return
          b.unhold(c, held)
          c.stats.cancelled++
          this.tidy(b, c)
          reject(new ClientGoneError('client disconnected while waiting'))
          // What waited behind it may fit the client's look-ahead now (admit's fast path assumes
          // nothing that fits is left held).
          if (this.buckets.get(b.name) === b) this.pump(b)
        }
      }
      b.hold(c, held)
      this.pump(b)
      if (!held.done && b.held + b.reserved > this.route.maxQueue) {
        b.unhold(c, held)
        const aheadMs = Math.round(b.held * this.slotMs)
        try {
          this.refuse(b, c, new SluiceError('QUEUE_FULL', 429, `${b.held + b.reserved} requests of bucket ${b.name} are already waiting in this instance (maxQueue ${this.route.maxQueue})`,
            this.limiter.details(b.name, { queue_depth: b.held + b.reserved, max_queue: this.route.maxQueue, retry_after_ms: aheadMs }), retryAfterSeconds(aheadMs)))
        } catch (err) {
          reject(err)
        }
        return
      }
      if (!held.done) b.deadlines.watch(held)
    })
  }

  /** A refusal of the client's new request: counted, and thrown with details.client. */
  private refuse (b: FairBucket, c: ClientQueue, err: SluiceError): never {
    err.details.client = c.id
    c.stats.rejected++
    this.tidy(b, c)
    throw err
  }

  private bucketState (name: string): FairBucket {
    let b = this.buckets.get(name)
    if (b === undefined) {
      b = new FairBucket(name, (due) => this.expire(due))
      this.buckets.set(name, b)
    }
    return b
  }

  private clientQueue (b: FairBucket, id: string): ClientQueue {
    return b.client(id, () => {
      this.gossip?.wake()
      const weight = this.weights.get(id) ?? 1
      return { weight, stats: this.clientStats.of(b.name, id, weight) }
    })
  }

  /** Forget a client (and then the bucket) that has nothing held or reserved. */
  private tidy (b: FairBucket, c: ClientQueue): void {
    if (b.tidy(c) && this.buckets.get(b.name) === b) {
      b.close()
      this.buckets.delete(b.name)
    }
  }

  private mayReserve (b: FairBucket, c: ClientQueue, p: Priority, cost: number): boolean {
    return b.mayReserve(c, p, cost, this.lookaheadUnits)
  }

  /**
   * Hand held requests to the limiter: high before normal, round-robin over clients, each client up
   * to its look-ahead; low only when nothing of higher priority is held in this instance.
   * Never more, even into room an idle bucket reports: a client's next reservation is made when its
   * previous one leaves, so what the store records follows what this process really sends. Booking a
   * whole burst at once records one instant for starts a loaded event loop spreads over a longer
   * time, and the next window's burst then meets the tail of this one at the upstream.
   */
  private pump (b: FairBucket): void {
    for (const p of CLASSES) {
      for (let moved = true; moved;) {
        moved = false
        for (const c of [...b.clients.values()]) {
          const next = c.held[p].first()
          if (next === undefined || !this.mayReserve(b, c, p, next.req.cost)) continue
          this.dispatch(b, c, next, next.deadline - performance.now())
          moved = true
        }
      }
    }
    if (b.lowProbing || b.lowTimer !== undefined) return
    for (const c of b.clients.values()) if (c.held.high.length > 0 || c.held.normal.length > 0) return
    for (const c of b.clients.values()) {
      const next = c.held.low.first()
      if (next === undefined) continue
      // Only if the bucket has room within about one slot: what others leave, not a place in line.
      this.probeLow(b, c, next)
      return
    }
  }

  private dispatch (b: FairBucket, c: ClientQueue, held: Held, boundMs: number): void {
    b.unhold(c, held)
    this.reserveFor(b, c, held.req, held.arrived, performance.now() - held.arrived, boundMs).then(held.resolve, held.reject)
  }

  /**
   * Hand a request to the limiter: the client moves to the end of the round robin and its units count
   * as reserved until the start (or the failure), which is counted in its stats.
   */
  private async reserveFor (b: FairBucket, c: ClientQueue, req: FairRequest, arrived: number, heldMs: number, boundMs: number): Promise<FairAdmission> {
    b.toBack(c)
    c.reserved[req.priority] += req.cost
    b.reserved++
    let admission: Admission
    try {
      admission = await this.limiter.admit(req.bucket, Math.max(0, boundMs), req.signal, req.cost, req.costs)
    } catch (err) {
      this.settle(b, c, req)
      this.countFailure(c, err)
      this.tidy(b, c)
      throw err
    }
    this.settle(b, c, req)
    const waitedMs = recordAdmitted(c.stats, req.cost, arrived)
    this.tidy(b, c)
    return { ...admission, waitedMs, heldMs }
  }

  private settle (b: FairBucket, c: ClientQueue, req: FairRequest): void {
    c.reserved[req.priority] -= req.cost
    b.reserved--
    // A reservation started (or failed): the client may book its next one now.
    this.pump(b)
  }

  private fail (c: ClientQueue, held: Held, err: unknown): void {
    this.countFailure(c, err)
    held.reject(err)
  }

  private countFailure (c: ClientQueue, err: unknown): void {
    recordFailure(c.stats, err)
    if (err instanceof SluiceError) err.details.client = c.id
  }

  private probeLow (b: FairBucket, c: ClientQueue, held: Held): void {
    const { req } = held
    const remaining = held.deadline - performance.now()
    const probeMs = Math.min(remaining, req.cost * this.slotMs)
    // Not held while the probe is out (its deadline is then the limiter's business).
    b.unhold(c, held)
    b.toBack(c)
    b.lowProbing = true
    c.reserved.low += req.cost
    b.reserved++
    this.counts.lowProbes++
    const finish = (): void => {
      b.lowProbing = false
      c.reserved.low -= req.cost
      b.reserved--
    }
    this.limiter.admit(req.bucket, Math.max(0, probeMs), req.signal, req.cost, req.costs).then((admission) => {
      finish()
      const waitedMs = recordAdmitted(c.stats, held.req.cost, held.arrived)
      this.tidy(b, c)
      held.resolve({ ...admission, waitedMs, heldMs: waitedMs - admission.waitedMs })
      this.pump(b)
    }, (err: unknown) => {
      finish()
      const busy = err instanceof SluiceError && (err.code === 'RATE_LIMITED' || err.code === 'QUEUE_TIMEOUT')
      if (busy && probeMs < remaining && !req.signal.aborted) {
        // The bucket is booked further ahead by others: back to the front, and try again when the
        // schedule said this request could have started (no polling in between).
        this.counts.lowProbesRefused++
        b.hold(c, held, true)
        const retryMs = Math.max(this.slotMs, Number(err.details.retry_after_ms ?? this.slotMs))
        b.lowTimer = setTimeout(() => {
          b.lowTimer = undefined
          this.pump(b)
        }, Math.min(retryMs, Math.max(1, remaining)))
        b.deadlines.watch(held)
        this.tidy(b, c)
        return
      }
      this.fail(c, held, err)
      this.tidy(b, c)
      this.pump(b)
    })
  }

  /** Held requests whose wait bound has passed: refused, since they cannot start within it any more. */
  private expire (b: FairBucket): void {
    const now = performance.now()
    for (let held = b.deadlines.takeDue(now); held !== undefined; held = b.deadlines.takeDue(now)) {
      const c = b.clients.get(held.req.client)
      if (c === undefined) continue
      b.unhold(c, held)
      this.counts.heldTimeouts++
      const ms = Math.ceil(b.held * this.slotMs)
      this.fail(c, held, new SluiceError('QUEUE_TIMEOUT', 503, `the request waited its whole wait bound of ${Math.round(held.req.maxWaitMs)} ms for its fair turn in ${this.route.name} and was not forwarded`,
        this.limiter.details(b.name, { retry_after_ms: ms, max_wait_ms: Math.round(held.req.maxWaitMs) }), retryAfterSeconds(ms)))
      this.tidy(b, c)
    }
    if (this.buckets.get(b.name) !== b) return
    b.deadlines.arm()
    this.pump(b)
  }
}
