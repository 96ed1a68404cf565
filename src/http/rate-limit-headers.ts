// The budget, told to the client on every response, by one rule a client library can trust:
// - Sluice's own view always goes in the IETF fields (draft-ietf-httpapi-ratelimit-headers-11:
//   RateLimit-Policy `"name";q=<limit>;w=<window s>` and RateLimit `"name";r=<remaining>;t=<reset s>`);
// - where the upstream sends its own X-RateLimit-* (GitHub, Zulip), they pass through untouched: a
//   client library reads one consistent set, the upstream's (Octokit's throttling plugin does);
// - where it sends none, Sluice's legacy trio X-RateLimit-Limit/-Remaining/-Reset (reset in epoch
//   seconds, as GitHub and Zulip send it) stands in;
// - every refusal of Sluice's own (RATE_LIMITED, QUEUE_FULL, MAINTENANCE) says remaining 0 and a
//   reset equal to its Retry-After (refusalView).
// Server-Timing carries the time spent queued in Sluice.

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

/** The legacy trio, lower case, as Node hands headers over. */
export const LEGACY_FIELDS = ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset'] as const

/** Whether an upstream's headers carry any X-RateLimit-* field of its own (then they pass untouched). */
export function hasOwnRateLimitFields (headers: Record<string, unknown>): boolean {
  for (const name of Object.keys(headers)) if (name.toLowerCase().startsWith('x-ratelimit-')) return true
  return false
}

/** What a refusal of Sluice's own tells: nothing left, and the budget back when Retry-After says. */
export function refusalView (retryAfterS: number): BudgetView {
  return { remaining: 0, resetMs: retryAfterS * 1000 }
}

/**
 * Sluice's fields into `into`. `legacy: false` when the upstream's own X-RateLimit-* are on the
 * response: the trio is then left to them (set by the upstream, or absent).
 */
export function rateLimitHeaders (budget: RouteBudget, view: BudgetView, waitedMs: number, into: Record<string, unknown> = {}, legacy = true): Record<string, string> {
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
  if (legacy) {
    into['x-ratelimit-limit'] = String(policy.limit)
    into['x-ratelimit-remaining'] = String(remaining)
    into['x-ratelimit-reset'] = String(Math.ceil(Date.now() / 1000) + resetS)
  }
  into['server-timing'] = `queue;dur=${waitedMs.toFixed(1)}`
  return into as Record<string, string>
}
