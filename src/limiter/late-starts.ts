// A start that leaves late (route-limiter.ts's scheduleStart): how late it is, against the slot in
// this process's clock and against the start the store recorded; how much later a sliding window
// recorded it; recording it again at when it leaves; and the counts the metrics and benchmarks read.
import { hasStoreClock, hasStoreDistance, type BucketPolicy, type BucketStore, type Reservation } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import type { LimitSet } from './limit-set'
import type { StoreFailover } from './store-failover'

/**
 * Late starts given up and booked again (lateRetries), forwarded late after the retries ran out
 * (lateForwarded), recorded again at when they left (lateMoved: a sliding window's, late at their
 * check or held up after it: see postpone and RouteLimiter.sentLate), and sent later than the margin
 * covered, so the bucket's next starts came later (pushedBack: a token bucket's, RouteLimiter.pushBack).
 */
export interface LateStartCounts { lateRetries: number, lateForwarded: number, lateMoved: number, pushedBack: number }

export class LateStarts {
  readonly counts: LateStartCounts = { lateRetries: 0, lateForwarded: 0, lateMoved: 0, pushedBack: 0 }

  constructor (private readonly policy: BucketPolicy, private readonly store: BucketStore, private readonly failover: StoreFailover,
    private readonly limits: LimitSet | undefined) {}

  /**
   * How late a request leaving now is (ms): against its slot counted from the reply's receipt, and
   * against the start the store recorded. A reply read long after Redis sent it (an event loop busy
   * with a burst of arrivals) makes a request that looks on time here leave long after the start the
   * next window is counted from.
   */
  lateMs (reservation: Reservation, slot: number): number {
    return Math.max(performance.now() - slot, this.lateInStoreClock(reservation))
  }

  /** Later than `toleranceMs` beyond what the store recorded for it (see recordedAfterStart). */
  beyond (lateMs: number, toleranceMs: number, reservation: Reservation, cost: number | number[]): boolean {
    return lateMs - this.recordedAfterStart(reservation, cost) > toleranceMs
  }

  /**
   * A sliding window's late start, recorded again at when it leaves: when no window holding that
   * time and not the old one gets more than `limit` starts (postpone-sliding-window-2.lua: the next
   * window's start `limit` places after it is not booked yet, as in a backlog booked by look-ahead,
   * or far enough away), the request leaves now instead of a window later. Recorded
   * the store's fastest recent round trip and 1 ms ahead of its now: the reply's way back and this
   * loop's turn (later is always within the limit; the median would count the stall that made the
   * start late). Not for several limits (each would have to move).
   */
  async postpone (bucket: string, reservation: Reservation, cost: number | number[]): Promise<boolean> {
    if (!this.oneSlidingWindow(cost)) return false
    const trips = hasStoreDistance(this.store) ? this.store.reserveRoundTrips() : undefined
    return await this.failover.postpone(bucket, reservation, cost, 1 + (trips?.fastestMs ?? 0))
  }

  /**
   * How much later than the start a sliding window recorded it (ms): a start the window had room for
   * is recorded one margin later (the pad, slidingWindowParams), and none before the newest. The next
   * window's starts are counted from the recorded one, so a request may leave that much later and
   * still be on time for them. 0 for a token bucket (its ticket is the bucket's next start) and for
   * several limits.
   */
  private recordedAfterStart (reservation: Reservation, cost: number | number[]): number {
    if (!this.oneSlidingWindow(cost)) return 0
    const { ticket, startMs } = reservation
    return ticket === undefined || startMs === undefined ? 0 : Math.max(0, ticket / 1000 - startMs)
  }

  /** A reservation in the route's one limit, a sliding window: its start is recorded in a list of starts. */
  private oneSlidingWindow (cost: number | number[]): cost is number {
    return this.policy.algorithm === 'sliding-window' && typeof cost === 'number'
  }

  /** How long after the start the store recorded this moment is (ms; negative when before it). */
  private lateInStoreClock (reservation: Reservation): number {
    // The store knows how its clock differs from this process's (redis-store.ts: TIME on connection,
    // before any traffic, then its fastest reservations); this process's clock is monotonic.
    const clock = hasStoreClock(this.store) ? this.store.clockOffset() : undefined
    const shared = this.limits !== undefined ? this.limits.fromSharedStore(reservation) : this.failover.fromSharedStore(reservation)
    if (clock === undefined || !shared || reservation.startMs === undefined) return -Infinity
    return nowMs() + clock.skewMs - reservation.startMs
  }
}
