// What Sluice knows about one request while it handles it: its route and bucket, the admission's
// wait and budget view, the attempts upstream, and how it ended. Admission (admission.ts) fills it,
// forward.ts adds the attempts, the access log line (access-log.ts) and the observer read it.
import type { RouteConfig } from '../config/schema'
import type { Cancel } from '../limiter/cancel'
import type { Reservation } from '../store/bucket-store'
import type { BudgetView } from './rate-limit-headers'

export interface RequestState {
  route: RouteConfig
  bucket: string | undefined
  /** Hashed client identity (fair share), once known. */
  client?: string
  waitedMs: number
  view: BudgetView | undefined
  outcome: 'forwarded' | 'rejected' | 'cancelled' | 'admin' | 'unrouted'
  code?: string
  upstreamStatus?: number
  /** The client's wait bound in ms: the route's maxWait, shortened by Prefer: wait (forward.ts retries within it). */
  maxWaitMs?: number
  /** What the request costs (admission.ts): a retry is booked at the same cost (forward.ts). */
  cost?: number
  /** A route with several limits: the cost in each (cost is then the most of them). */
  costs?: number[]
  /** Attempts sent upstream after the first (forward.ts). */
  retries?: number
  /** The start the store recorded for the current attempt, performance.now (margin-probe.ts measures from it). */
  startAt?: number
  /** The limit in force when the current attempt's start was booked (route-limiter.ts Admission.bookedUnder). */
  bookedUnder?: number
  /** The current attempt's reservation: one that reaches the upstream late is recorded again (margin-probe.ts). */
  reservation?: Reservation
  /** The upstream's last answer carried X-RateLimit-* of its own: they pass untouched (rate-limit-headers.ts). */
  upstreamRateLimit?: boolean
  /** The admission's abort controller: retries are admitted under the same one (forward.ts). */
  controller?: Cancel
}

declare module 'fastify' {
  interface FastifyRequest {
    sluice?: RequestState
  }
}

/** An admin route's request: no route, no log line, not counted. */
export function markAdmin (request: { sluice?: RequestState }): void {
  request.sluice = { route: undefined as unknown as RouteConfig, bucket: undefined, waitedMs: 0, view: undefined, outcome: 'admin' }
}
