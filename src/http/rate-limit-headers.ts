// The budget, told to the client on every response: IETF draft-ietf-httpapi-ratelimit-headers-11
// fields, the legacy X-RateLimit trio (reset in epoch seconds, as GitHub and Zulip send it), and
// Server-Timing with the time spent queued in Sluice.

export interface BudgetView {
  remaining: number
  /** ms until the whole budget is back */
  resetMs: number
  /** A route with several limits: the index of the binding one (the figures above are its). */
  binding?: number
}

/** A route's current budget: its limiter (the limit may follow the upstream's announcements). */
export interface RouteBudget {
  route: { name: string }
  policy: { limit: number, windowMs: number }
  /** A route with several limits (limit-set.ts): every one's name and live policy. */
  limits?: { names: readonly string[], policies: ReadonlyArray<{ limit: number, windowMs: number }> }
}

export function rateLimitHeaders (budget: RouteBudget, view: BudgetView, waitedMs: number, into: Record<string, unknown> = {}): Record<string, string> {
  const { route, limits } = budget
  const windowOf = (p: { windowMs: number }): number => Math.max(1, Math.ceil(p.windowMs / 1000))
  const resetS = Math.max(0, Math.ceil(view.resetMs / 1000))
  const remaining = Math.max(0, Math.floor(view.remaining))
  // Several limits: every one is a policy, and RateLimit (like the legacy trio) reports the binding one.
  const at = limits === undefined ? -1 : Math.min(view.binding ?? 0, limits.names.length - 1)
  const policy = limits === undefined ? budget.policy : limits.policies[at]
  const name = limits === undefined ? route.name : `${route.name}:${limits.names[at]}`
  into['ratelimit-policy'] = limits === undefined
    ? `"${route.name}";q=${policy.limit};w=${windowOf(policy)}`
    : limits.names.map((n, i) => `"${route.name}:${n}";q=${limits.policies[i].limit};w=${windowOf(limits.policies[i])}`).join(', ')
  into.ratelimit = `"${name}";r=${remaining};t=${resetS}`
  into['x-ratelimit-limit'] = String(policy.limit)
  into['x-ratelimit-remaining'] = String(remaining)
  into['x-ratelimit-reset'] = String(Math.ceil((Date.now() + view.resetMs) / 1000))
  into['server-timing'] = `queue;dur=${waitedMs.toFixed(1)}`
  return into as Record<string, string>
}
