// The details every refusal of a route's budget carries (the error envelope's `details`), from the
// live policy: after RouteLimiter.setLimit they name the limit and window in force.
// With the route's limit sources, they also say where the limit in force comes from (limit_sources:
// configured, announced, learned; a source that says nothing is left out).
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
