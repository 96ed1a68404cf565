// How fast a route's fair queues move: one slot of the budget, and how many units a client may have
// reserved ahead (its look-ahead), both from the limiter's live policy.
import type { BucketPolicy } from '../store/bucket-store'
import { slidingWindowParams, tokenBucketParams } from '../store/bucket-store'

/** Units of the budget a client of weight 1 may have reserved ahead, per instance: at least one... */
export const LOOKAHEAD_UNITS = 1
/** ...and at least this much time of the budget (ms): the next reservation of a backlogged client is
 *  booked when one of its reservations starts, and must be in the store before the slot after it
 *  passes, so this covers a Redis round trip and an event-loop stall; a newcomer starts behind the
 *  others' look-aheads, so each unit more is a slot more of its wait. Chosen with bench/fairness.ts.
 *  At 180/min one unit is a third of a second. */
export const LOOKAHEAD_MIN_MS = 40

/**
 * A store whose fastest recent round trip is shorter than this (ms) is near (loopback, the same zone):
 * its slower round trips are this machine's event-loop stalls, which LOOKAHEAD_MIN_MS covers already
 * (counted twice, they made newcomers wait behind longer look-aheads on a loaded machine).
 */
export const NEAR_STORE_MS = 20

/**
 * The round trip a look-ahead covers beyond LOOKAHEAD_MIN_MS (ms): none for a near store, else the
 * median of the recent ones (the fastest alone left the budget idle 300 ms away on a loaded machine).
 */
export function distanceMs (roundTrips: { fastestMs: number, medianMs: number } | undefined): number {
  return roundTrips === undefined || roundTrips.fastestMs < NEAR_STORE_MS ? 0 : roundTrips.medianMs
}

/**
 * A weight-1 client's look-ahead in units, for slots of `slotMs`, requests of these costs, and a store
 * `roundTripMs` away. A client's next reservation is booked when one of its reservations starts, and
 * its start must still be ahead when the reply comes back: with fewer units booked ahead than a round
 * trip holds, each client gets about one start per round trip, however large the budget. So the
 * look-ahead covers the measured round trip (distanceMs) as well as LOOKAHEAD_MIN_MS (on loopback it
 * is unchanged).
 */
export function lookaheadUnitsFor (slotMs: number, costs: readonly number[] = [], roundTripMs = 0): number {
  return Math.max(LOOKAHEAD_UNITS, Math.ceil((LOOKAHEAD_MIN_MS + roundTripMs) / slotMs), ...costs)
}

/** One slot of the budget, ms: a token bucket's interval, or a sliding window's (window + margin) / limit. */
export function slotMsOf (policy: BucketPolicy): number {
  return policy.algorithm === 'token-bucket'
    ? tokenBucketParams(policy).intervalUs / 1000
    : slidingWindowParams(policy).windowUs / 1000 / policy.limit
}

/** The slot and look-ahead of a live policy, worked out again only when its limit or window changed. */
export class FairPacing {
  private readonly policy: BucketPolicy
  private readonly costs: readonly number[]
  private readonly seen = { limit: NaN, windowMs: NaN, marginMs: NaN, burst: NaN }
  private slot = 0
  private units = 0
  private readonly roundTripMs: () => number

  /**
   * `costs`: of the route's cost rules (a look-ahead holds the costliest request); `roundTripMs`: the
   * store's recent reservation round trip (distanceMs of what the store measured), read on each use.
   */
  constructor (policy: BucketPolicy, costs: readonly number[], roundTripMs: () => number = () => 0) {
    this.policy = policy
    this.costs = costs
    this.roundTripMs = roundTripMs
  }

  get slotMs (): number {
    this.follow()
    return this.slot
  }

  get lookaheadUnits (): number {
    this.follow()
    const rtt = this.roundTripMs()
    return rtt > 0 ? Math.max(this.units, Math.ceil((LOOKAHEAD_MIN_MS + rtt) / this.slot)) : this.units
  }

  /**
   * The earliest a request of `cost` could start with `aheadUnits` queued before it, even with the
   * whole budget to itself (ms): what is ahead of it must go first.
   */
  lowerBoundMs (aheadUnits: number, cost: number): number {
    const policy = this.policy
    if (policy.algorithm === 'token-bucket') return Math.max(0, aheadUnits + cost - policy.burst) * this.slotMs
    const windowMs = slidingWindowParams(policy).windowUs / 1000
    return Math.floor((aheadUnits + cost - 1) / policy.limit) * windowMs
  }

  private follow (): void {
    const { limit, windowMs, marginMs, burst } = this.policy
    const seen = this.seen
    if (seen.limit === limit && seen.windowMs === windowMs && seen.marginMs === marginMs && seen.burst === burst) return
    Object.assign(seen, { limit, windowMs, marginMs, burst })
    this.slot = slotMsOf(this.policy)
    this.units = lookaheadUnitsFor(this.slot, this.costs)
  }
}
