// `mode: shadow`: a safe first roll-out. Every request reserves in the store exactly as it would when
// enforced (so the store models the enforced world and the numbers are the ones enforcement would
// see), but nothing waits and nothing is refused: the verdict is only reported (metrics, status).
// RouteLimiter admits through this instead of its own waits when the route is in shadow mode.
import type { RouteConfig } from '../config/schema'
import type { BucketPolicy, BucketStore, Reservation } from '../store/bucket-store'
import type { LimitSet } from './limit-set'

export interface ShadowVerdict {
  /** ms this request would have waited (0 when it would have started at once or been refused). */
  wouldWaitMs: number
  /** The refusal enforcement would have answered; undefined when it would have been forwarded. */
  code?: 'RATE_LIMITED' | 'QUEUE_FULL' | 'STORE_UNAVAILABLE'
}

/** What an admission in shadow mode answers (an Admission of route-limiter.ts, with the verdict). */
export interface ShadowAdmission {
  bucket: string
  reservation: Reservation
  waitedMs: number
  shadow: ShadowVerdict
}

export function isShadowAdmission (admission: object): admission is ShadowAdmission {
  return (admission as Partial<ShadowAdmission>).shadow !== undefined
}

export class ShadowAdmitter {
  private readonly route: RouteConfig
  private readonly store: BucketStore
  /** The route's live policy (RouteLimiter.setLimit changes it in place). */
  private readonly policy: BucketPolicy
  /** Requests that would be waiting now, per bucket: each leaves at its would-be start (an unref'd timer). */
  private readonly virtualQueue = new Map<string, number>()
  /** A route with several limits: every request reserves in all of them, as enforcement would. */
  private readonly limits: LimitSet | undefined

  constructor (route: RouteConfig, store: BucketStore, policy: BucketPolicy, limits?: LimitSet) {
    this.route = route
    this.store = store
    this.policy = policy
    this.limits = limits
  }

  queueDepth (bucket: string): number {
    return this.virtualQueue.get(bucket) ?? 0
  }

  async admit (bucket: string, maxWaitMs: number, cost: number, costs?: readonly number[]): Promise<ShadowAdmission> {
    const now = { admitted: true, waitMs: 0, remaining: 0, resetMs: 0, ticket: undefined }
    if (this.queueDepth(bucket) >= this.route.maxQueue) return { bucket, reservation: now, waitedMs: 0, shadow: { wouldWaitMs: 0, code: 'QUEUE_FULL' } }
    const perLimit = this.limits?.costsOf(bucket, costs)
    let reservation: Reservation
    try {
      reservation = perLimit === undefined
        ? await this.store.reserve(bucket, this.policy, cost, maxWaitMs)
        : await (this.limits as LimitSet).reserveShared(bucket, perLimit, maxWaitMs)
    } catch {
      // Shadow never blocks: a dead store is reported, and the request goes through.
      return { bucket, reservation: now, waitedMs: 0, shadow: { wouldWaitMs: 0, code: 'STORE_UNAVAILABLE' } }
    }
    if (!reservation.admitted) {
      return { bucket, reservation: { ...reservation, admitted: true, waitMs: 0 }, waitedMs: 0, shadow: { wouldWaitMs: 0, code: 'RATE_LIMITED' } }
    }
    if (reservation.waitMs > 0) {
      this.virtualQueue.set(bucket, this.queueDepth(bucket) + 1)
      setTimeout(() => {
        const left = this.queueDepth(bucket) - 1
        if (left <= 0) this.virtualQueue.delete(bucket)
        else this.virtualQueue.set(bucket, left)
      }, reservation.waitMs).unref()
    }
    return { bucket, reservation, waitedMs: 0, shadow: { wouldWaitMs: reservation.waitMs } }
  }
}
