// Fair share of one budget across clients, instances and priorities, in front of RouteLimiter.admit.
//
// Each request still makes ONE reservation in the store, but a client may only have a few units of
// the budget reserved ahead at a time (its look-ahead, per instance: max(1 unit, 40 ms of budget,
// the largest cost) × weight); the rest waits here, in per-client FIFO queues, and is handed to the limiter when one of the client's
// reservations starts. The store's schedule is FIFO, so every backlogged client keeps exactly its
// look-ahead booked and gets look-ahead / (sum of look-aheads) of the budget — on every instance
// alike, because the shares are made in the shared schedule, not by dividing it between instances.
// A newcomer is booked behind at most the others' look-aheads, never behind their backlogs.
// Nothing polls: the queues move when a reservation starts (the limiter's one timer per request),
// and low priority retries when the schedule's answer says the bucket will have room.
import { randomUUID } from 'node:crypto'
import type { Priority, RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds, ClientGoneError } from '../errors'
import { hasClientPresence, slidingWindowParams, tokenBucketParams, type BucketStore, type ClientPresence } from '../store/bucket-store'
import type { CancelSignal } from './cancel'
import { type Admission, type RouteLimiter } from './route-limiter'

/** Units of the budget a client of weight 1 may have reserved ahead, per instance: at least one... */
export const LOOKAHEAD_UNITS = 1
/** ...and at least this much time of the budget (ms): the next reservation of a backlogged client is
 *  booked when one of its reservations starts, and must be in the store before the slot after it
 *  passes. 40 ms covers a Redis round trip and the event-loop stalls of a loaded CI machine; a
 *  newcomer starts behind the others' look-aheads, so each unit more is a slot more of its wait
 *  (measured at 50/s, slots of 22 ms, two backlogged clients: 100 ms floor, newcomer after 10.6 slots;
 *  50 ms, 6.8 slots; utilization 1.00 with each). At 180/min one unit is a third of a second. */
export const LOOKAHEAD_MIN_MS = 40

/** A weight-1 client's look-ahead in units, for slots of `slotMs` and requests of these costs. */
export function lookaheadUnitsFor (slotMs: number, costs: readonly number[] = []): number {
  return Math.max(LOOKAHEAD_UNITS, Math.ceil(LOOKAHEAD_MIN_MS / slotMs), ...costs)
}

/** How often each instance tells a shared store which clients it holds requests of (ms), and how long that stays true. */
export const PRESENCE_EVERY_MS = 500
const PRESENCE_TTL_MS = 2000

/** Per-client statistics kept at most for this many clients per route (oldest dropped first). */
const MAX_TRACKED_CLIENTS = 1000

export interface FairRequest {
  bucket: string
  /** Hashed client id (client-identity.ts). */
  client: string
  priority: Priority
  /** Units of the budget (cost-rules.ts). */
  cost: number
  maxWaitMs: number
  signal: CancelSignal
}

export interface FairAdmission extends Admission {
  /** ms held in this instance's fair queue before the reservation was made (part of waitedMs). */
  heldMs: number
}

export interface ClientStats {
  bucket: string
  client: string
  weight: number
  /** Requests and units admitted (started). */
  admitted: number
  units: number
  /** Refused (RATE_LIMITED, QUEUE_FULL, QUEUE_TIMEOUT, STORE_UNAVAILABLE) and abandoned while waiting. */
  rejected: number
  cancelled: number
  /** Sum and maximum of the waits of admitted requests, ms. */
  waitedMsTotal: number
  waitedMsMax: number
  /** Requests waiting now: held here, and reserved but not yet started. */
  held: number
  reserved: number
}

interface Held {
  req: FairRequest
  arrived: number
  deadline: number
  /** No longer held in its client's HeldQueue: handed to the limiter, dropped or timed out. */
  done: boolean
  resolve: (admission: FairAdmission) => void
  reject: (err: unknown) => void
  onAbort: () => void
}

/**
 * One client's held requests of one priority class, oldest first. Adding, taking the oldest and
 * dropping any one (a client that left, a deadline) are O(1), and so are the count and the units held:
 * with 10,000 requests held (a CI burst behind a pause), an array's indexOf/splice and a sum over
 * the queue per arrival cost seconds of event loop.
 */
export class HeldQueue {
  private items: Held[] = []
  private head = 0
  /** Requests held. */
  length = 0
  /** Their units (cost). */
  units = 0

  push (held: Held): void {
    this.items.push(held)
    this.added(held)
  }

  /** Back in front of the others (a low-priority probe that did not fit). */
  unshift (held: Held): void {
    if (this.head > 0) this.items[--this.head] = held
    else this.items.unshift(held)
    this.added(held)
  }

  /** The oldest held, if any. */
  first (): Held | undefined {
    while (this.head < this.items.length && this.items[this.head].done) this.head++
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return this.items[this.head]
  }

  /** Drop one (wherever it is); false when it was not held here. Dropped entries are skipped later. */
  remove (held: Held): boolean {
    if (held.done) return false
    held.done = true
    this.length--
    this.units -= held.req.cost
    if (this.length === 0) {
      this.items = []
      this.head = 0
    }
    return true
  }

  private added (held: Held): void {
    held.done = false
    this.length++
    this.units += held.req.cost
  }
}

interface ClientQueue {
  id: string
  weight: number
  held: Record<Priority, HeldQueue>
  /** Units reserved and not yet started, per priority class. */
  reserved: Record<Priority, number>
  stats: ClientStats
}

interface BucketState {
  name: string
  /** In round-robin order: a client served moves to the end. */
  clients: Map<string, ClientQueue>
  held: number
  /** Requests handed to the limiter and not yet started. */
  reserved: number
  /** Deadlines of held requests (min-heap), served by one timer. */
  deadlines: Held[]
  deadlineTimer: NodeJS.Timeout | undefined
  deadlineAt: number
  /** Low priority: one probe at a time, and none before lowRetryAt (performance.now() ms). */
  lowProbing: boolean
  lowTimer: NodeJS.Timeout | undefined
  /** In how many instances each client is active (shared store only; missing: 1). */
  instances: Map<string, number>
  presenceBusy: boolean
}

const CLASSES: readonly Priority[] = ['high', 'normal']

export class FairScheduler {
  readonly route: RouteConfig
  private readonly limiter: RouteLimiter
  private readonly weights: Map<string, number>
  private readonly buckets = new Map<string, BucketState>()
  private readonly clientStats = new Map<string, ClientStats>()
  /** Units of look-ahead for weight 1: enough for the route's costliest request. */
  readonly lookaheadUnits: number
  /** One slot of the budget, ms: the wait bound of a low-priority probe per unit of cost. */
  readonly slotMs: number
  readonly stats = { lowProbes: 0, lowProbesRefused: 0, heldTimeouts: 0, refusedAtArrival: 0 }
  private readonly presence: (BucketStore & ClientPresence) | undefined
  private readonly instanceId = randomUUID().replaceAll('-', '').slice(0, 16)
  private presenceTimer: NodeJS.Timeout | undefined

  /** `store`: when shared (Redis), clients active in several instances book 1/n of their look-ahead in each. */
  constructor (route: RouteConfig, limiter: RouteLimiter, weights: Map<string, number> = new Map(), store?: BucketStore) {
    this.route = route
    this.limiter = limiter
    this.weights = weights
    this.presence = store !== undefined && store.kind === 'redis' && hasClientPresence(store) ? store : undefined
    if (this.presence !== undefined) {
      this.presenceTimer = setInterval(() => this.sharePresence(), PRESENCE_EVERY_MS)
      this.presenceTimer.unref()
    }
    this.slotMs = route.algorithm === 'token-bucket'
      ? tokenBucketParams(limiter.policy).intervalUs / 1000
      : slidingWindowParams(limiter.policy).windowUs / 1000 / route.limit.count
    this.lookaheadUnits = lookaheadUnitsFor(this.slotMs, route.cost.map((r) => r.cost))
  }

  close (): void {
    if (this.presenceTimer !== undefined) clearInterval(this.presenceTimer)
    this.presenceTimer = undefined
  }

  /** Tell the shared store which clients this instance holds requests of, and learn in how many instances each is. */
  private sharePresence (): void {
    const store = this.presence
    if (store === undefined) return
    for (const b of this.buckets.values()) {
      const ids = [...b.clients.keys()]
      if (ids.length === 0 || b.presenceBusy) continue
      b.presenceBusy = true
      store.clientPresence(b.name, this.instanceId, ids, PRESENCE_TTL_MS).then((counts) => {
        b.instances.clear()
        ids.forEach((id, i) => { if (counts[i] > 1) b.instances.set(id, counts[i]) })
        this.pump(b)
      }, () => {
        // Unreachable store: keep the last counts; the limiter reports the outage on admission.
      }).finally(() => { b.presenceBusy = false })
    }
  }

  /** Held here plus reserved and not yet started, for one bucket (maxQueue counts both). */
  queueDepth (bucket: string): number {
    const b = this.buckets.get(bucket)
    return b === undefined ? 0 : b.held + b.reserved
  }

  /** Per-client usage and waits, for metrics and status (ids are hashes). */
  clients (): ClientStats[] {
    return [...this.clientStats.values()].map((s) => ({ ...s }))
  }

  /** Wait for the request's fair turn and its start, or throw what the limiter throws (details.client added). */
  async admit (req: FairRequest): Promise<FairAdmission> {
    if (req.signal.aborted) throw new ClientGoneError('client disconnected before admission')
    const b = this.bucketState(req.bucket)
    const c = this.clientQueue(b, req.client)
    const arrived = performance.now()
    const refuse = (err: SluiceError): never => {
      err.details.client = req.client
      c.stats.rejected++
      this.tidy(b, c)
      throw err
    }
    const lowerBoundMs = this.lowerBoundMs(c, req)
    if (lowerBoundMs > req.maxWaitMs) {
      this.stats.refusedAtArrival++
      const ms = Math.ceil(lowerBoundMs)
      refuse(new SluiceError('RATE_LIMITED', 429, `client ${req.client} already has ${this.unitsAhead(c, req.priority)} units waiting in ${this.route.name}; this one could not start within the wait bound of ${Math.round(req.maxWaitMs)} ms`,
        this.details(b, { retry_after_ms: ms, max_wait_ms: Math.round(req.maxWaitMs) }), retryAfterSeconds(ms)))
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
          this.unhold(b, c, held)
          c.stats.cancelled++
          this.tidy(b, c)
          reject(new ClientGoneError('client disconnected while waiting'))
          // What waited behind it may fit the client's look-ahead now (admit's fast path assumes
          // nothing that fits is left held).
          if (this.buckets.get(b.name) === b) this.pump(b)
        }
      }
      c.held[req.priority].push(held)
      b.held++
      req.signal.addEventListener('abort', held.onAbort, { once: true })
      this.pump(b)
      if (!held.done && b.held + b.reserved > this.route.maxQueue) {
        this.unhold(b, c, held)
        const aheadMs = Math.round(b.held * this.slotMs)
        try {
          refuse(new SluiceError('QUEUE_FULL', 429, `${b.held + b.reserved} requests of bucket ${b.name} are already waiting in this instance (maxQueue ${this.route.maxQueue})`,
            this.details(b, { queue_depth: b.held + b.reserved, max_queue: this.route.maxQueue, retry_after_ms: aheadMs }), retryAfterSeconds(aheadMs)))
        } catch (err) {
          reject(err)
        }
        return
      }
      if (!held.done) this.watchDeadline(b, held)
    })
  }

  private details (b: BucketState, extra: Record<string, unknown>): Record<string, unknown> {
    return { upstream: this.route.name, bucket: b.name, limit: this.route.limit.count, window_s: this.route.limit.windowMs / 1000, ...extra }
  }

  /** Units of this client ahead of a new request of `priority`: queued here, or reserved and not started. */
  private unitsAhead (c: ClientQueue, priority: Priority): number {
    let units = 0
    for (const p of ['high', 'normal', 'low'] as const) {
      units += c.reserved[p] + c.held[p].units
      if (p === priority) break
    }
    return units
  }

  /** The earliest this request could start even with the whole budget to itself: what is queued ahead of it must go first. */
  private lowerBoundMs (c: ClientQueue, req: FairRequest): number {
    const ahead = this.unitsAhead(c, req.priority)
    if (this.route.algorithm === 'token-bucket') return Math.max(0, ahead + req.cost - this.route.burst) * this.slotMs
    const windowMs = slidingWindowParams(this.limiter.policy).windowUs / 1000
    return Math.floor((ahead + req.cost - 1) / this.route.limit.count) * windowMs
  }

  private bucketState (name: string): BucketState {
    let b = this.buckets.get(name)
    if (b === undefined) {
      b = { name, clients: new Map(), held: 0, reserved: 0, deadlines: [], deadlineTimer: undefined, deadlineAt: Infinity, lowProbing: false, lowTimer: undefined, instances: new Map(), presenceBusy: false }
      this.buckets.set(name, b)
    }
    return b
  }

  private clientQueue (b: BucketState, id: string): ClientQueue {
    let c = b.clients.get(id)
    if (c === undefined) {
      const weight = this.weights.get(id) ?? 1
      const key = `${b.name}\n${id}`
      let stats = this.clientStats.get(key)
      if (stats === undefined) {
        stats = { bucket: b.name, client: id, weight, admitted: 0, units: 0, rejected: 0, cancelled: 0, waitedMsTotal: 0, waitedMsMax: 0, held: 0, reserved: 0 }
        this.clientStats.set(key, stats)
        if (this.clientStats.size > MAX_TRACKED_CLIENTS) this.clientStats.delete(this.clientStats.keys().next().value as string)
      }
      c = { id, weight, held: { high: new HeldQueue(), normal: new HeldQueue(), low: new HeldQueue() }, reserved: { high: 0, normal: 0, low: 0 }, stats }
      b.clients.set(id, c)
    }
    return c
  }

  /** Forget a client (and then the bucket) that has nothing held or reserved. */
  private tidy (b: BucketState, c: ClientQueue): void {
    c.stats.held = c.held.high.length + c.held.normal.length + c.held.low.length
    c.stats.reserved = c.reserved.high + c.reserved.normal + c.reserved.low
    if (c.stats.held === 0 && c.stats.reserved === 0 && b.clients.get(c.id) === c) b.clients.delete(c.id)
    if (b.clients.size === 0 && b.held === 0 && b.reserved === 0 && this.buckets.get(b.name) === b) {
      if (b.deadlineTimer !== undefined) clearTimeout(b.deadlineTimer)
      if (b.lowTimer !== undefined) clearTimeout(b.lowTimer)
      this.buckets.delete(b.name)
    }
  }

  private unhold (b: BucketState, c: ClientQueue, held: Held): void {
    held.req.signal.removeEventListener('abort', held.onAbort)
    if (c.held[held.req.priority].remove(held)) b.held--
  }

  /** A client's look-ahead in this instance: its share of it when it is active in several. */
  private lookahead (b: BucketState, c: ClientQueue): number {
    return Math.max(1, Math.round(this.lookaheadUnits * c.weight / (b.instances.get(c.id) ?? 1)))
  }

  private mayReserve (b: BucketState, c: ClientQueue, p: Priority, cost: number): boolean {
    return c.reserved[p] === 0 || c.reserved[p] + cost <= this.lookahead(b, c)
  }

  /**
   * Hand held requests to the limiter: high before normal, round-robin over clients, each client up
   * to its look-ahead; low only when nothing of higher priority is held in this instance.
   * Never more, even into room an idle bucket reports: a client's next reservation is made when its
   * previous one leaves, so what the store records follows what this process really sends. Booking a
   * whole burst at once records one instant for starts a loaded event loop spreads over 100 ms and
   * more, and the next window's burst then meets the tail of this one at the upstream (measured:
   * 88 and 95 points in a 1 s window of a 50-point budget).
   */
  private pump (b: BucketState): void {
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

  private dispatch (b: BucketState, c: ClientQueue, held: Held, boundMs: number): void {
    this.unhold(b, c, held)
    this.reserveFor(b, c, held.req, held.arrived, performance.now() - held.arrived, boundMs).then(held.resolve, held.reject)
  }

  /**
   * Hand a request to the limiter: the client moves to the end of the round robin and its units count
   * as reserved until the start (or the failure), which is counted in its stats.
   */
  private async reserveFor (b: BucketState, c: ClientQueue, req: FairRequest, arrived: number, heldMs: number, boundMs: number): Promise<FairAdmission> {
    b.clients.delete(c.id)
    b.clients.set(c.id, c)
    c.reserved[req.priority] += req.cost
    b.reserved++
    let admission: Admission
    try {
      admission = await this.limiter.admit(req.bucket, Math.max(0, boundMs), req.signal, req.cost)
    } catch (err) {
      this.settle(b, c, req)
      this.countFailure(c, err)
      this.tidy(b, c)
      throw err
    }
    this.settle(b, c, req)
    const waitedMs = this.recordAdmitted(c, req.cost, arrived)
    this.tidy(b, c)
    return { ...admission, waitedMs, heldMs }
  }

  /** Count a started request in its client's stats; returns its whole wait (held here plus the limiter's), ms. */
  private recordAdmitted (c: ClientQueue, cost: number, arrived: number): number {
    const waitedMs = performance.now() - arrived
    c.stats.admitted++
    c.stats.units += cost
    c.stats.waitedMsTotal += waitedMs
    c.stats.waitedMsMax = Math.max(c.stats.waitedMsMax, waitedMs)
    return waitedMs
  }

  private settle (b: BucketState, c: ClientQueue, req: FairRequest): void {
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
    if (err instanceof ClientGoneError) c.stats.cancelled++
    else c.stats.rejected++
    if (err instanceof SluiceError) err.details.client = c.id
  }

  private probeLow (b: BucketState, c: ClientQueue, held: Held): void {
    const { req } = held
    const remaining = held.deadline - performance.now()
    const probeMs = Math.min(remaining, req.cost * this.slotMs)
    // Not held while the probe is out (its deadline is then the limiter's business).
    this.unhold(b, c, held)
    b.clients.delete(c.id)
    b.clients.set(c.id, c)
    b.lowProbing = true
    c.reserved.low += req.cost
    b.reserved++
    this.stats.lowProbes++
    const finish = (): void => {
      b.lowProbing = false
      c.reserved.low -= req.cost
      b.reserved--
    }
    this.limiter.admit(req.bucket, Math.max(0, probeMs), req.signal, req.cost).then((admission) => {
      finish()
      const waitedMs = this.recordAdmitted(c, held.req.cost, held.arrived)
      this.tidy(b, c)
      held.resolve({ ...admission, waitedMs, heldMs: waitedMs - admission.waitedMs })
      this.pump(b)
    }, (err: unknown) => {
      finish()
      const busy = err instanceof SluiceError && (err.code === 'RATE_LIMITED' || err.code === 'QUEUE_TIMEOUT')
      if (busy && probeMs < remaining && !req.signal.aborted) {
        // The bucket is booked further ahead by others: back to the front, and try again when the
        // schedule said this request could have started (no polling in between).
        this.stats.lowProbesRefused++
        c.held.low.unshift(held)
        b.held++
        req.signal.addEventListener('abort', held.onAbort, { once: true })
        const retryMs = Math.max(this.slotMs, Number(err.details.retry_after_ms ?? this.slotMs))
        b.lowTimer = setTimeout(() => {
          b.lowTimer = undefined
          this.pump(b)
        }, Math.min(retryMs, Math.max(1, remaining)))
        this.watchDeadline(b, held)
        this.tidy(b, c)
        return
      }
      this.fail(c, held, err)
      this.tidy(b, c)
      this.pump(b)
    })
  }

  // Deadlines of held requests: a min-heap and one timer per bucket.
  private watchDeadline (b: BucketState, held: Held): void {
    const heap = b.deadlines
    heap.push(held)
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (heap[parent].deadline <= heap[i].deadline) break
      ;[heap[parent], heap[i]] = [heap[i], heap[parent]]
      i = parent
    }
    this.armDeadlines(b)
  }

  private popDeadline (heap: Held[]): Held | undefined {
    const top = heap[0]
    const last = heap.pop()
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last
      for (let i = 0; ;) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < heap.length && heap[l].deadline < heap[m].deadline) m = l
        if (r < heap.length && heap[r].deadline < heap[m].deadline) m = r
        if (m === i) break
        ;[heap[m], heap[i]] = [heap[i], heap[m]]
        i = m
      }
    }
    return top
  }

  private armDeadlines (b: BucketState): void {
    while (b.deadlines.length > 0 && b.deadlines[0].done) this.popDeadline(b.deadlines)
    const next = b.deadlines[0]?.deadline ?? Infinity
    if (next === b.deadlineAt) return
    if (b.deadlineTimer !== undefined) clearTimeout(b.deadlineTimer)
    b.deadlineTimer = undefined
    b.deadlineAt = next
    if (next === Infinity) return
    b.deadlineTimer = setTimeout(() => this.expire(b), Math.max(0, next - performance.now()) + 1)
  }

  /** Held requests whose wait bound has passed: refused, since they cannot start within it any more. */
  private expire (b: BucketState): void {
    b.deadlineTimer = undefined
    b.deadlineAt = Infinity
    const now = performance.now()
    while (b.deadlines.length > 0 && (b.deadlines[0].done || b.deadlines[0].deadline <= now)) {
      const held = this.popDeadline(b.deadlines) as Held
      if (held.done) continue
      const c = b.clients.get(held.req.client)
      if (c === undefined) continue
      this.unhold(b, c, held)
      this.stats.heldTimeouts++
      const ms = Math.ceil(b.held * this.slotMs)
      this.fail(c, held, new SluiceError('QUEUE_TIMEOUT', 503, `the request waited its whole wait bound of ${Math.round(held.req.maxWaitMs)} ms for its fair turn in ${this.route.name} and was not forwarded`,
        this.details(b, { retry_after_ms: ms, max_wait_ms: Math.round(held.req.maxWaitMs) }), retryAfterSeconds(ms)))
      this.tidy(b, c)
    }
    if (this.buckets.get(b.name) !== b) return
    this.armDeadlines(b)
    this.pump(b)
  }
}
