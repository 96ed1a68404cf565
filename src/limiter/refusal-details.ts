// The details every refusal of a route's budget carries (the error envelope's `details`), from the
// live policy: after RouteLimiter.setLimit they name the limit and window in force.
// With the route's limit sources, they also say where the limit in force comes from (limit_sources:
// configured, announced, learned; a source that says nothing is left out). And the refusal of a
// reservation that found no start within the wait bound.
import { SluiceError, retryAfterSeconds } from '../errors'
import type { BucketPolicy } from '../store/bucket-store'
import type { LimitView } from './limit-sources'

export function refusalDetails (route: string, policy: BucketPolicy, bucket: string, extra: Record<string, unknown>, sources?: LimitView): Record<string, unknown> {
  const details: Record<string, unknown> = { upstream: route, bucket, limit: policy.limit, window_s: policy.windowMs / 1000 }
  if (sources !== undefined) {
    const named: Record<string, number> = {}
    if (sources.configured !== undefined) named.configured = sources.configured
    if (sources.announced !== undefined) named.announced = sources.announced
    if (sources.learned !== undefined) named.learned = sources.learned
    details.limit_sources = named
  }
  return { ...details, ...extra }
}

/** A reservation that found no start within the bound: its route, wait, binding limit (of several) and the details maker. */
export interface Refusal {
  route: string
  waitMs: number
  binding: Record<string, unknown> | undefined
  details: (extra: Record<string, unknown>) => Record<string, unknown>
}

/** No start within the bound: RATE_LIMITED on the first reservation, QUEUE_TIMEOUT after late starts. */
export function noRoom (r: Refusal, attempt: number, maxWaitMs: number, waitedMs: number): SluiceError {
  const ms = Math.ceil(r.waitMs)
  const bound = Math.round(maxWaitMs)
  if (attempt > 0) {
    return new SluiceError('QUEUE_TIMEOUT', 503, `the request waited ${Math.round(waitedMs)} ms, but Sluice could not start it on time within its wait bound`,
      r.details({ retry_after_ms: ms, max_wait_ms: bound, late_starts: attempt }), retryAfterSeconds(ms))
  }
  if (r.binding !== undefined) {
    return new SluiceError('RATE_LIMITED', 429, `limit ${String(r.binding.limit_name)} of ${r.route} has no room within the wait bound of ${bound} ms; retry after ${retryAfterSeconds(ms)} s`,
      r.details({ ...r.binding, retry_after_ms: ms, max_wait_ms: bound }), retryAfterSeconds(ms))
  }
  return new SluiceError('RATE_LIMITED', 429, `the budget of ${r.route} has no room within the wait bound of ${bound} ms; retry after ${retryAfterSeconds(ms)} s`,
    r.details({ retry_after_ms: ms, max_wait_ms: bound }), retryAfterSeconds(ms))
}
