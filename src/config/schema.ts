// The one config schema: validated types, exported defaults, and errors that name the field,
// what was expected and what was received. A bad config never starts half a server.
import type { TlsFiles } from './tls'
import { parseDuration, parseRate, type Rate } from './units'
import { maxCostOf, parseCostRules, type CostRule } from './cost-rules'
import { costBounds, limitItems, parseLimits, type LimitSpec } from './limits'
import { parseMargin } from './margin'
import { ConfigError, describeValue } from '../errors'
import { PROFILE_NAMES, type ProfileName } from '../profiles/profile'
import type { EgressConfig } from './egress'

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

const HTTP_METHODS = ['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'POST', 'PATCH', 'TRACE'] as const

function methodList (name: string, value: unknown): string[] {
  const items = typeof value === 'string' ? value.split(',').map((m) => m.trim()).filter((m) => m !== '') : value
  if (!Array.isArray(items)) throw new ConfigError(name, `expected a list of HTTP methods such as [POST, PATCH], got ${describeValue(value)}`)
  return items.map((m: unknown) => {
    const upper = typeof m === 'string' ? m.toUpperCase() : m
    if (typeof upper !== 'string' || !(HTTP_METHODS as readonly string[]).includes(upper)) {
      throw new ConfigError(name, `expected HTTP methods from ${HTTP_METHODS.join(', ')}, got ${describeValue(m)}`)
    }
    return upper
  })
}

const ROUTE_FIELDS = new Set(['name', 'prefix', 'upstream', 'limit', 'burst', 'maxWait', 'maxQueue', 'algorithm', 'key', 'margin', 'profile', 'errors', 'timeout', 'bodyLimit', 'minPause', 'maxPause', 'retryBodyLimit', 'retries', 'retryMethods', 'connectTimeout', 'bodyTimeout', 'mode', 'onStoreError', 'concurrency', 'cost', 'client', 'priority', 'weights'])

function field<T> (name: string, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError(name, (err as Error).message)
  }
}

function integer (name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `expected an integer from ${min} to ${max}, got ${describeValue(value)}`)
  }
  return n
}

function oneOf<T extends string> (name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(name, `expected one of ${allowed.join(', ')}, got ${describeValue(value)}`)
  }
  return value as T
}

export function parseUpstream (name: string, value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') throw new ConfigError(name, `expected an http:// or https:// URL, got ${describeValue(value)}`)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(name, `expected an http:// or https:// URL, got ${describeValue(value)}`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(name, `expected an http:// or https:// URL, got protocol ${url.protocol}`)
  if (url.username !== '' || url.password !== '') throw new ConfigError(name, 'credentials in the upstream URL are not allowed: send them as request headers')
  if (url.search !== '' || url.hash !== '') throw new ConfigError(name, 'the upstream URL must not have a query or fragment')
  return url.href.replace(/\/$/, '')
}

export function parseClient (name: string, value: unknown): ClientSource {
  if (typeof value === 'string' && /^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(value)) return { header: value.slice('header:'.length).toLowerCase() }
  throw new ConfigError(name, `expected "header:<name>" (for example header:x-ci-job-id), got ${describeValue(value)}`)
}

export function parseWeights (name: string, value: unknown): Record<string, number> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(name, `expected a mapping of client to weight, e.g. {nightly: 3}, got ${describeValue(value)}`)
  const weights: Record<string, number> = {}
  for (const [client, w] of Object.entries(value as Record<string, unknown>)) weights[client] = integer(`${name}.${client}`, w, 1, MAX_WEIGHT)
  return weights
}

export function parseKey (name: string, value: unknown): BucketKey {
  if (value === 'instance') return { kind: 'instance' }
  if (typeof value === 'string' && /^header:[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(value)) {
    return { kind: 'header', header: value.slice('header:'.length).toLowerCase() }
  }
  throw new ConfigError(name, `expected "instance" or "header:<name>", got ${describeValue(value)}`)
}

function parsePrefix (name: string, value: unknown): string {
  if (typeof value !== 'string' || !/^\/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$/.test(value) || value.includes('//') || /(^|\/)\.\.?(\/|$)/.test(value)) {
    throw new ConfigError(name, `expected a path such as /testrail or /, got ${describeValue(value)}`)
  }
  if (value.startsWith('/_sluice')) throw new ConfigError(name, '/_sluice is reserved for Sluice\'s own admin routes')
  return value.length > 1 ? value.replace(/\/$/, '') : value
}

/** Validate one route; `at` is its path in the config, e.g. "routes[1]". */
export function parseRoute (raw: unknown, at: string): RouteConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(at, `expected a mapping, got ${describeValue(raw)}`)
  const r = raw as Record<string, unknown>
  for (const key of Object.keys(r)) {
    if (!ROUTE_FIELDS.has(key)) throw new ConfigError(`${at}.${key}`, `unknown field; known fields are ${[...ROUTE_FIELDS].join(', ')}`)
  }
  const d = DEFAULTS.route
  const name = r.name ?? 'default'
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new ConfigError(`${at}.name`, `expected 1-64 letters, digits, "_", "." or "-", got ${describeValue(name)}`)
  if (r.upstream === undefined) throw new ConfigError(`${at}.upstream`, 'is required (the URL of the API this route forwards to)')
  if (r.limit === undefined) throw new ConfigError(`${at}.limit`, 'is required, e.g. 180/min')
  const limitAuto = r.limit === 'auto'
  const items = limitAuto ? undefined : limitItems(`${at}.limit`, r.limit)
  if (items !== undefined) return severalLimits(at, r, items)
  const limit = limitAuto ? { ...AUTO_LIMIT } : field(`${at}.limit`, () => parseRate(r.limit))
  const minPauseMs = field(`${at}.minPause`, () => parseDuration(r.minPause ?? d.minPause))
  const maxPauseMs = field(`${at}.maxPause`, () => parseDuration(r.maxPause ?? d.maxPause))
  if (minPauseMs > maxPauseMs) throw new ConfigError(`${at}.minPause`, `must not be longer than maxPause (${maxPauseMs} ms), got ${minPauseMs} ms`)
  const algorithm = oneOf(`${at}.algorithm`, r.algorithm ?? d.algorithm, ALGORITHMS)
  const burst = integer(`${at}.burst`, r.burst ?? d.burst, 1, limit.count)
  if (algorithm === 'sliding-window' && r.burst !== undefined) {
    throw new ConfigError(`${at}.burst`, 'applies to token-bucket only; sliding-window always allows the whole limit at once')
  }
  return {
    name,
    prefix: parsePrefix(`${at}.prefix`, r.prefix ?? d.prefix),
    upstream: parseUpstream(`${at}.upstream`, r.upstream),
    limit,
    burst,
    maxWaitMs: field(`${at}.maxWait`, () => parseDuration(r.maxWait ?? d.maxWait)),
    maxQueue: integer(`${at}.maxQueue`, r.maxQueue ?? d.maxQueue, 0),
    algorithm,
    key: parseKey(`${at}.key`, r.key ?? d.key),
    ...parseMargin(`${at}.margin`, r.margin, defaultMarginMs(limit.windowMs)),
    profile: oneOf(`${at}.profile`, r.profile ?? d.profile, PROFILE_NAMES),
    errors: oneOf(`${at}.errors`, r.errors ?? d.errors, ['envelope', 'upstream'] as const),
    timeoutMs: field(`${at}.timeout`, () => parseDuration(r.timeout ?? d.timeout)),
    bodyLimit: integer(`${at}.bodyLimit`, r.bodyLimit ?? d.bodyLimit, 0),
    limitAuto,
    minPauseMs,
    maxPauseMs,
    retryBodyLimit: integer(`${at}.retryBodyLimit`, r.retryBodyLimit ?? d.retryBodyLimit, 0),
    retries: integer(`${at}.retries`, r.retries ?? d.retries, 0, 10),
    retryMethods: methodList(`${at}.retryMethods`, r.retryMethods ?? []),
    connectTimeoutMs: field(`${at}.connectTimeout`, () => parseDuration(r.connectTimeout ?? d.connectTimeout)),
    bodyTimeoutMs: field(`${at}.bodyTimeout`, () => parseDuration(r.bodyTimeout ?? d.bodyTimeout)),
    mode: oneOf(`${at}.mode`, r.mode ?? d.mode, ROUTE_MODES),
    onStoreError: oneOf(`${at}.onStoreError`, r.onStoreError ?? d.onStoreError, STORE_ERROR_MODES),
    concurrency: integer(`${at}.concurrency`, r.concurrency ?? d.concurrency, 0, 100_000),
    cost: parseCostRules(`${at}.cost`, r.cost, maxCostOf(algorithm, limit.count, burst)),
    client: parseClient(`${at}.client`, r.client ?? d.client),
    priority: oneOf(`${at}.priority`, r.priority ?? d.priority, PRIORITIES),
    weights: parseWeights(`${at}.weights`, r.weights)
  }
}

/**
 * A route whose `limit` lists several: parsed as one with the first limit (every other field as usual),
 * then given all of them, the route's key they imply, and cost rules bounded by each limit they charge.
 */
function severalLimits (at: string, r: Record<string, unknown>, items: unknown[]): RouteConfig {
  const d = DEFAULTS.route
  const algorithm = oneOf(`${at}.algorithm`, r.algorithm ?? d.algorithm, ALGORITHMS)
  if (algorithm === 'sliding-window' && r.burst !== undefined) throw new ConfigError(`${at}.burst`, 'applies to token-bucket only; set burst on a token-bucket limit of the list')
  const defaults = {
    algorithm,
    burst: integer(`${at}.burst`, r.burst ?? d.burst, 1),
    key: r.key === undefined ? undefined : parseKey(`${at}.key`, r.key),
    margin: r.margin,
    parseKey,
    defaultMarginMs
  }
  const { limits, key } = parseLimits(`${at}.limit`, items, defaults)
  const first = limits[0]
  const route = parseRoute({ ...r, limit: `${first.rate.count}/${first.rate.windowMs / 1000}s`, algorithm: first.algorithm, burst: first.algorithm === 'token-bucket' ? first.burst : undefined, key: key.kind === 'instance' ? 'instance' : `header:${key.header}`, cost: undefined }, at)
  const bounds = costBounds(limits)
  // A limit's own rules charge only it, and come before the route's.
  const ownRules = (l: LimitSpec): unknown => Array.isArray(l.cost) ? l.cost.map((rule: unknown) => rule !== null && typeof rule === 'object' ? { ...rule, limits: [l.name] } : rule) : l.cost
  const own = limits.flatMap((l, i) => parseCostRules(`${at}.limit[${i}].cost`, ownRules(l), bounds[i], bounds))
  const cost = [...own, ...parseCostRules(`${at}.cost`, r.cost, bounds[0], bounds)]
  return { ...route, limits: limits.map((l) => ({ ...l, cost: undefined })), marginMs: first.marginMs, cost }
}

export function checkRoutes (routes: RouteConfig[]): void {
  if (routes.length === 0) throw new ConfigError('routes', 'at least one route is required (give --upstream and --limit, or --config FILE)')
  const names = new Set<string>()
  const prefixes = new Set<string>()
  routes.forEach((route, i) => {
    if (names.has(route.name)) throw new ConfigError(`routes[${i}].name`, `duplicate route name "${route.name}"`)
    if (prefixes.has(route.prefix)) throw new ConfigError(`routes[${i}].prefix`, `duplicate prefix "${route.prefix}"`)
    names.add(route.name)
    prefixes.add(route.prefix)
  })
}
