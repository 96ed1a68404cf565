// The budget, told to the client on every response: IETF draft-ietf-httpapi-ratelimit-headers-11
// fields, the legacy X-RateLimit trio (reset in epoch seconds, as GitHub and Zulip send it), and
// Server-Timing with the time spent queued in Sluice.

export interface BudgetView {
  remaining: number
  /** ms until the whole budget is back */
  resetMs: number
}

/** A route's current budget: its limiter (the limit may follow the upstream's announcements). */
export interface RouteBudget {
  route: { name: string }
  policy: { limit: number, windowMs: number }
}

export function rateLimitHeaders (budget: RouteBudget, view: BudgetView, waitedMs: number, into: Record<string, unknown> = {}): Record<string, string> {
  const { route, policy } = budget
  const windowS = Math.max(1, Math.ceil(policy.windowMs / 1000))
  const resetS = Math.max(0, Math.ceil(view.resetMs / 1000))
  const remaining = Math.max(0, Math.floor(view.remaining))
  into['ratelimit-policy'] = `"${route.name}";q=${policy.limit};w=${windowS}`
  into.ratelimit = `"${route.name}";r=${remaining};t=${resetS}`
  into['x-ratelimit-limit'] = String(policy.limit)
  into['x-ratelimit-remaining'] = String(remaining)
  into['x-ratelimit-reset'] = String(Math.ceil((Date.now() + view.resetMs) / 1000))
  into['server-timing'] = `queue;dur=${waitedMs.toFixed(1)}`
  return into as Record<string, string>
}
