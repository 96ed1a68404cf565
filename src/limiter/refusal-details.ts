// The details every refusal of a route's budget carries (the error envelope's `details`), from the
// live policy: after RouteLimiter.setLimit they name the limit and window in force.
import type { BucketPolicy } from '../store/bucket-store'

export function refusalDetails (route: string, policy: BucketPolicy, bucket: string, extra: Record<string, unknown>): Record<string, unknown> {
  return { upstream: route, bucket, limit: policy.limit, window_s: policy.windowMs / 1000, ...extra }
}
