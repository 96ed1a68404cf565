// The config's types and defaults. Validation that names the field, what was expected and what was
// received: route.ts (one route) and load.ts (the file). A bad config never starts half a server.
import type { ProfileName } from '../profiles/profile'
import type { CostRule } from './cost-rules'
import type { EgressConfig } from './egress'
import type { LimitSpec } from './limits'
import type { TlsFiles } from './tls'
import type { Rate } from './units'

export const ALGORITHMS = ['token-bucket', 'sliding-window'] as const
export type Algorithm = typeof ALGORITHMS[number]

export type BucketKey = { kind: 'instance' } | { kind: 'header', header: string }

export interface RouteConfig {
  name: string
  /** Mount path, e.g. "/testrail"; "/" for a single upstream. */
  prefix: string
  /** Origin plus optional base path, e.g. "https://acme.testrail.io/index.php?/api/v2" is NOT allowed: no query. */
  upstream: string
  limit: Rate
  /**
   * Set only when `limit` lists several (limits.ts): every one of them, in order; `limit`, `algorithm`,
   * `burst` and `marginMs` are then the first's. A route with one limit never has this field.
   */
  limits?: LimitSpec[]
  /** token-bucket only: requests an idle bucket lets through at once. */
  burst: number
  maxWaitMs: number
  maxQueue: number
  algorithm: Algorithm
  key: BucketKey
  /** Safety margin added to every window so jitter between Sluice and the upstream cannot overshoot: the cap of the adaptive margin. */
  marginMs: number
  /** `margin: fixed`: always marginMs, not adapted to what the path shows (margin.ts). */
  marginFixed?: boolean
  profile: ProfileName
  /** "envelope" (default) normalises upstream errors; "upstream" passes their bodies through untouched. */
  errors: 'envelope' | 'upstream'
  /** Time to wait for the upstream's response headers before answering UPSTREAM_TIMEOUT. */
  timeoutMs: number
  /** Largest request body accepted, in bytes (413 PAYLOAD_TOO_LARGE above it). */
  bodyLimit: number
  /** `limit: auto`: start from AUTO_LIMIT and adopt the limit the upstream announces (up or down). */
  limitAuto: boolean
  /** Bounds of a pause after upstream pushback, ms (some APIs say 0, some a reset a day away). */
  minPauseMs: number
  maxPauseMs: number
  /** Request bodies up to this many bytes are kept in memory so a pushed-back request can be sent again. */
  retryBodyLimit: number
  /** Retries of a transient failure (refused, reset, 502, 503, 504) per request; pushback retries are bounded by the wait only. */
  retries: number
  /** Methods retried after a transient failure besides the idempotent ones (GET, HEAD, PUT, DELETE, OPTIONS), e.g. POST. */
  retryMethods: string[]
  /** Time to open a connection to the upstream before answering UPSTREAM_TIMEOUT (ms). */
  connectTimeoutMs: number
  /** Longest silence between two chunks of an upstream response body (ms); then the response is cut. */
  bodyTimeoutMs: number
  /** "enforce" (default) shapes traffic; "shadow" only measures what it would delay or refuse. */
  mode: RouteMode
  /** While the shared store is unreachable: shape locally with this instance's share, forward unshaped, or refuse. */
  onStoreError: StoreErrorMode
  /** At most this many requests of a bucket in flight at the upstream, across all instances (0 = no cap). */
  concurrency: number
  /** Units of the budget a request takes, first matching rule wins; none match → 1. */
  cost: CostRule[]
  /** Where a request's client identity (for fair share) comes from before the fallbacks. */
  client: ClientSource
  /** Priority of a request without an X-Sluice-Priority header. */
  priority: Priority
  /** Fair-share weight per client identity (as sent, hashed at start-up); others weigh 1. */
  weights: Record<string, number>
}

export const PRIORITIES = ['high', 'normal', 'low'] as const
export type Priority = typeof PRIORITIES[number]

/** The header naming a request's client; missing → the credential (hashed), then the remote address. */
export interface ClientSource { header: string }

export const MAX_WEIGHT = 100

export const STORE_ERROR_MODES = ['local', 'open', 'closed'] as const
export type StoreErrorMode = typeof STORE_ERROR_MODES[number]

export const ROUTE_MODES = ['enforce', 'shadow'] as const
export type RouteMode = typeof ROUTE_MODES[number]

export const ADMIN_ROUTE_SETS = ['all', 'essential'] as const
/** Which admin routes are served: every one, or only the probes' (/_sluice/health and /_sluice/ready). */
export type AdminRoutes = typeof ADMIN_ROUTE_SETS[number]

export interface SluiceConfig {
  host: string
  port: number
  /** redis:// or rediss:// URL; undefined means the in-memory store (one instance, no set-up). */
  redis: string | undefined
  keyPrefix: string
  /** Secret for the HMAC that turns credentials into bucket keys; share it between instances of a team. */
  hashSecret: string
  logLevel: string
  /** On SIGTERM/SIGINT, how long in-flight and waiting requests may still proceed (ms); default 30 s. */
  drainTimeoutMs?: number
  /** "all" (default) serves every admin route; "essential" only /_sluice/health and /_sluice/ready. */
  adminRoutes?: AdminRoutes
  /** PEM certificate and key files: the listener speaks HTTPS (HTTP/1.1 over TLS); undefined: plain HTTP. */
  tls?: TlsFiles | undefined
  /** When set, status, metrics, events and the dashboard need it (http/admin-auth.ts); health and ready never do. */
  adminToken?: string
  /** The egress proxy upstream connections go through (config/egress.ts); undefined: direct. */
  egress?: EgressConfig
  /** --pid-file: where the serving process writes its pid, for `sluice reload` (flag and variable only). */
  pidFile?: string
  routes: RouteConfig[]
}

export const DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  keyPrefix: 'sluice:',
  hashSecret: 'sluice-default-hash-secret',
  logLevel: 'info',
  drainTimeout: '30s',
  adminRoutes: 'all' as AdminRoutes,
  route: {
    prefix: '/',
    burst: 1,
    maxWait: '60s',
    maxQueue: 1000,
    algorithm: 'token-bucket' as Algorithm,
    key: 'instance',
    profile: 'generic' as ProfileName,
    errors: 'envelope' as const,
    timeout: '30s',
    bodyLimit: 10 * 1024 * 1024,
    minPause: '1s',
    maxPause: '15m',
    retryBodyLimit: 1024 * 1024,
    retries: 2,
    connectTimeout: '10s',
    bodyTimeout: '30s',
    mode: 'enforce' as RouteMode,
    onStoreError: 'local' as StoreErrorMode,
    concurrency: 0,
    client: 'header:x-sluice-client',
    priority: 'normal' as Priority
  }
} as const

/**
 * Default margin (ms): 1% of the window, at least 100 ms. Requests reach the upstream later than their
 * reserved start (a cold process, a loaded machine, the internet), and by a varying amount; the
 * margin absorbs that spread, and minute windows get a proportionally larger margin.
 */
export function defaultMarginMs (windowMs: number): number {
  return Math.max(100, Math.round(windowMs / 100))
}

/**
 * Where `limit: auto` starts until the upstream announces its own: 60/min, evenly paced. Below what
 * the APIs Sluice knows allow (TestRail Cloud 180/min, Zulip 200/min, GitHub 5000/h), so the first
 * requests do not provoke a 429; the first announcement (X-RateLimit-Limit, RateLimit-Policy) replaces it.
 */
export const AUTO_LIMIT: Readonly<Rate> = Object.freeze({ count: 60, windowMs: 60_000 })
