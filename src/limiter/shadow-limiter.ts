// `mode: shadow`: a safe first roll-out. Every request reserves in the store exactly as it would when
// enforced (so the store models the enforced world and the numbers are the ones enforcement would
// see), but nothing waits and nothing is refused: the verdict is only reported (metrics, status).
import type { BucketStore } from '../store/bucket-store'
import type { CancelSignal } from './cancel'
import type { Admission } from './route-limiter'
import { RouteLimiter } from './route-limiter'
import type { RouteConfig } from '../config/schema'

export interface ShadowVerdict {
  /** ms this request would have waited (0 when it would have started at once or been refused). */
  wouldWaitMs: number
  /** The refusal enforcement would have answered; undefined when it would have been forwarded. */
  code?: 'RATE_LIMITED' | 'QUEUE_FULL' | 'STORE_UNAVAILABLE'
}

export interface ShadowAdmission extends Admission {
  shadow: ShadowVerdict
}

export function isShadowAdmission (admission: Admission): admission is ShadowAdmission {
  return (admission as Partial<ShadowAdmission>).shadow !== undefined
}

export class ShadowLimiter extends RouteLimiter {
  private readonly shadowStore: BucketStore
  /** Requests that would be waiting now, per bucket: each leaves at its would-be start (an unref'd timer). */
  private readonly virtualQueue = new Map<string, number>()

  constructor (route: RouteConfig, store: BucketStore) {
    super(route, store)
    this.shadowStore = store
  }

  override queueDepth (bucket: string): number {
    return this.virtualQueue.get(bucket) ?? 0
  }

  override totalWaiting (): number {
    let n = 0
    for (const v of this.virtualQueue.values()) n += v
    return n
  }

  override async admit (bucket: string, maxWaitMs: number, _signal: CancelSignal, cost = 1): Promise<ShadowAdmission> {
    const now = { admitted: true, waitMs: 0, remaining: 0, resetMs: 0, ticket: undefined }
    if (this.queueDepth(bucket) >= this.route.maxQueue) return { bucket, reservation: now, waitedMs: 0, shadow: { wouldWaitMs: 0, code: 'QUEUE_FULL' } }
    let reservation
    try {
      reservation = await this.shadowStore.reserve(bucket, this.policy, cost, maxWaitMs)
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
