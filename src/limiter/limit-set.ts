// The limits of a route with several (`limit: [10/s, 25/5s]`): where each one's state lives for a
// request, and its reservations: one store round trip over all of them (reserve-limits.lua), given
// back limit by limit, and while Redis is unreachable made in this instance's share of each limit.
//
// Where state lives (the Redis Cluster hash tag every key of one reservation shares):
// - every limit keyed like the route (all per credential, or all `instance`): the tag is the request's
//   bucket, so credentials spread over the cluster's slots as single-limit buckets do;
// - a per-credential limit with a shared (`key: instance`) one: the shared limit is ONE state for every
//   credential, so one request's keys can share a slot only if the whole route's state does: the tag
//   is the route's name. Correct and simple; the cost is that such a route lives on one cluster node.
import type { LimitSpec } from '../config/limits'
import type { RouteConfig } from '../config/schema'
import { maxCostOf } from '../config/cost-rules'
import { SluiceError } from '../errors'
import { isMultiLimitStore, type BucketPeek, type BucketPolicy, type BucketStore, type LimitBooking, type LimitRef, type MultiLimitStore, type MultiReservation, type Reservation } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import { AwayStarts } from './away-starts'
import type { StoreFailover } from './store-failover'

export class LimitSet {
  readonly names: string[]
  /** Live policies, one per limit; the first is the route limiter's own `policy` object. */
  readonly policies: BucketPolicy[]
  private readonly route: RouteConfig
  private readonly perCredential: boolean[]
  private readonly mixed: boolean
  private readonly store: BucketStore & MultiLimitStore
  private readonly failover: StoreFailover
  /** The bookings each reservation was made with, and in which store. */
  private readonly made = new WeakMap<Reservation, { store: MultiLimitStore, bookings: LimitBooking[] }>()
  /** The newest reservation per bucket in the route's store (a token bucket gives back only its newest). */
  private readonly newest = new Map<string, Reservation>()
  /** Starts made without Redis, per limit state: recorded there once it answers again (away-starts.ts). */
  private readonly away: AwayStarts<LimitRef>
  private seeded = new Set<string>()

  constructor (route: RouteConfig, first: BucketPolicy, store: BucketStore, failover: StoreFailover) {
    const specs = route.limits ?? []
    if (!isMultiLimitStore(store)) throw new Error(`route ${route.name}: its store cannot reserve several limits at once`)
    this.route = route
    this.store = store
    this.failover = failover
    this.names = specs.map((l) => l.name)
    this.policies = specs.map((l, i) => i === 0 ? first : { algorithm: l.algorithm, limit: l.rate.count, windowMs: l.rate.windowMs, burst: l.burst, marginMs: l.marginMs })
    this.perCredential = specs.map((l) => l.key.kind === 'header')
    this.mixed = route.key.kind === 'header' && this.perCredential.includes(false)
    failover.spanMs = () => this.longestSpanMs()
    this.away = new AwayStarts(store.recordLimitStarts?.bind(store))
  }

  /** Adopt an announced limit for limit `at` (upstream-signals.ts); its burst never exceeds the configured one. */
  setLimit (at: number, limit: number): void {
    const p = this.policies[at]
    p.limit = limit
    p.burst = Math.min((this.route.limits as LimitSpec[])[at].burst, limit)
  }

  /** Each limit's state for a request of `bucket` (see the top of this file). */
  refs (bucket: string): LimitRef[] {
    const tag = this.mixed ? this.route.name : bucket
    return this.names.map((name, i) => ({ tag, state: this.mixed && this.perCredential[i] ? `${bucket}:lim:${name}` : `lim:${name}` }))
  }

  /** The pause of `bucket` that its reservations honour. */
  pauseRef (bucket: string): LimitRef {
    return this.mixed ? { tag: this.route.name, state: bucket } : { tag: bucket, state: '' }
  }

  /** Each limit's state for `bucket`, read-only (status pages; never on the admission path). */
  async peek (bucket: string): Promise<BucketPeek[]> {
    const pause = this.pauseRef(bucket)
    return await Promise.all(this.refs(bucket).map(async (ref, i) => await this.store.peekLimit(ref, pause, this.policies[i])))
  }

  /** Each limit as status shows it: name, live limit and window, algorithm, and whether it is per credential. */
  describe (): Array<{ name: string, limit: number, windowMs: number, algorithm: string, perCredential: boolean }> {
    return this.names.map((name, i) => ({ name, limit: this.policies[i].limit, windowMs: this.policies[i].windowMs, algorithm: this.policies[i].algorithm, perCredential: this.perCredential[i] }))
  }

  /** A request's cost in each limit: `costs`, or 1 in each; 400 when one is more than its limit can ever hold. */
  costsOf (bucket: string, costs: readonly number[] | undefined): number[] {
    const out = costs === undefined ? this.names.map(() => 1) : [...costs]
    out.forEach((cost, i) => {
      const p = this.policies[i]
      const bound = maxCostOf(p.algorithm, p.limit, p.burst)
      if (cost > bound.max) {
        throw new SluiceError('BAD_REQUEST', 400, `this request costs ${cost} in limit ${this.names[i]} of ${this.route.name}, which can hold at most ${bound.max}`,
          { upstream: this.route.name, bucket, limit_name: this.names[i], limit: p.limit, window_s: p.windowMs / 1000, cost, max_cost: bound.max })
      }
    })
    return out
  }

  /** One reservation in every limit, in the route's store only (shadow mode: no outage fallback, nothing given back). */
  async reserveShared (bucket: string, costs: number[], maxWaitMs: number): Promise<MultiReservation> {
    return await this.store.reserveLimits(this.refs(bucket).map((ref, i) => ({ ref, policy: this.policies[i], cost: costs[i] })), this.pauseRef(bucket), maxWaitMs)
  }

  /** One reservation in every limit: in the shared store while it answers, else the route's onStoreError. */
  async book (bucket: string, costs: number[], maxWaitMs: number): Promise<MultiReservation> {
    const bookings = this.refs(bucket).map((ref, i) => ({ ref, policy: this.policies[i], cost: costs[i] }))
    if (this.failover.answers()) {
      let fault: unknown
      try {
        const r = await this.store.reserveLimits(bookings, this.pauseRef(bucket), maxWaitMs)
        this.seeded.clear()
        if (this.away.size > 0) this.away.record()
        if (r.admitted) this.newest.set(bucket, r)
        this.made.set(r, { store: this.store, bookings })
        return r
      } catch (err) {
        if (this.store.kind === 'memory') throw err
        fault = err
      }
      return await this.local(bucket, bookings, maxWaitMs, fault)
    }
    return await this.local(bucket, bookings, maxWaitMs, undefined)
  }

  /**
   * Give a reservation whose request never left back, limit by limit (best effort): a sliding window's
   * part wherever it is in the list, a token bucket's only while it is that limit's newest (the store
   * checks; a later reservation of this instance says so without asking).
   */
  async giveBack (bucket: string, reservation: Reservation): Promise<boolean> {
    const made = this.made.get(reservation)
    if (made === undefined || !reservation.admitted) return false
    const older = made.store === this.store && this.newest.get(bucket) !== reservation
    const limits = (reservation as MultiReservation).limits
    const done = await Promise.all(made.bookings.map(async (b, i) => older && b.policy.algorithm === 'token-bucket'
      ? false
      : await made.store.releaseLimit(b, limits[i].ticket).catch(() => false)))
    if (this.newest.get(bucket) === reservation) this.newest.delete(bucket)
    return done.some((d) => d)
  }

  /** The limit a refusal could not meet, for its details: name, limit and window. */
  bindingDetails (reservation: Reservation): Record<string, unknown> | undefined {
    const binding = (reservation as Partial<MultiReservation>).binding
    if (binding === undefined) return undefined
    const p = this.policies[binding]
    return { limit_name: this.names[binding], limit: p.limit, window_s: p.windowMs / 1000 }
  }

  /** Made by the shared store (its start is in Redis's clock). */
  fromSharedStore (reservation: Reservation): boolean {
    return this.store.kind === 'redis' && this.made.get(reservation)?.store === this.store
  }

  /** A start `inMs` from now, remembered per limit when it was made without Redis. */
  noteStart (reservation: Reservation, inMs: number): void {
    const made = this.made.get(reservation)
    if (made === undefined || made.store === this.store || this.store.kind !== 'redis') return
    const at = nowMs() + inMs
    made.bookings.forEach((b, i) => {
      if (b.cost > 0) this.away.note(`${b.ref.tag}\u0000${b.ref.state}`, b.ref, this.policies[i], at, b.cost)
    })
  }

  /** Forget buckets admission no longer remembers (its sweep), and starts made without Redis older than a window. */
  forgetBeyond (remembered: ReadonlyMap<string, unknown>): void {
    for (const name of this.newest.keys()) if (!remembered.has(name)) this.newest.delete(name)
    for (const name of this.seeded) if (!remembered.has(name)) this.seeded.delete(name)
    this.away.forgetOld()
  }

  stateSizes (): { limitsNewest: number, limitsSeeded: number, limitsAway: number } {
    return { limitsNewest: this.newest.size, limitsSeeded: this.seeded.size, limitsAway: this.away.size }
  }

  /** While Redis is unreachable: this instance's share of every limit, each begun its own window after the last start. */
  private async local (bucket: string, bookings: LimitBooking[], maxWaitMs: number, err: unknown): Promise<MultiReservation> {
    if (this.failover.enterOutage(bucket, err) === 'open') {
      return { admitted: true, waitMs: 0, remaining: 0, resetMs: 0, ticket: undefined, limits: bookings.map(() => ({ ticket: 0, remaining: 0, resetMs: 0 })), binding: 0 }
    }
    const store = this.failover.local()
    const shares = this.shares(bookings)
    if (!this.seeded.has(bucket)) {
      // As a single limit's local share (store-failover.ts), limit by limit: starts booked in Redis
      // before the outage still happen, so no window of a limit may hold both. A hold in each limit's
      // own state, not one pause: a request that costs nothing in a long limit is not held for it.
      this.seeded.add(bucket)
      const sinceLastMs = Date.now() - (this.failover.lastStartOf(bucket) ?? 0)
      for (const b of shares) {
        const holdMs = b.policy.windowMs + b.policy.marginMs - sinceLastMs
        if (holdMs > 0) store.holdLimit(b.ref, b.policy, holdMs)
      }
    }
    const r = await store.reserveLimits(shares, this.pauseRef(bucket), maxWaitMs)
    this.made.set(r, { store, bookings: shares })
    return r
  }

  /** Each booking in this instance's share of its limit (limit and burst over the live instances). */
  private shares (bookings: LimitBooking[]): LimitBooking[] {
    return bookings.map((b) => {
      const limit = this.failover.share(b.policy.limit)
      return { ...b, policy: { ...b.policy, limit, burst: Math.min(limit, this.failover.share(b.policy.burst)) }, cost: Math.min(b.cost, limit) }
    })
  }

  /**
   * Just after an outage (as RouteLimiter.waitForLocalShare for one limit): a slot of the local share
   * in every limit, which the request waits for before it books in Redis; `giveBack` undoes it.
   */
  async reserveLocalShare (bucket: string, costs: number[], maxWaitMs: number): Promise<{ twin: MultiReservation, giveBack: () => Promise<void> }> {
    const store = this.failover.local()
    const shares = this.shares(this.refs(bucket).map((ref, i) => ({ ref, policy: this.policies[i], cost: costs[i] })))
    const twin = await store.reserveLimits(shares, this.pauseRef(bucket), maxWaitMs)
    const giveBack = async (): Promise<void> => { await Promise.all(shares.map(async (b, i) => await store.releaseLimit(b, twin.limits[i].ticket))) }
    return { twin, giveBack }
  }

  /** The longest window and margin of the limits: how long an outage's local starts count (store-failover.ts). */
  longestSpanMs (): number {
    return Math.max(...this.policies.map((p) => p.windowMs + p.marginMs))
  }
}
