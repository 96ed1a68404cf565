// One route of the config, validated: every field checked, with an error that names the field
// (routes[1].limit), what was expected and what was received; then the routes checked together.
import { ConfigError, describeValue } from '../errors'
import { PROFILE_NAMES } from '../profiles/profile'
import { maxCostOf, parseCostRules } from './cost-rules'
import { costBounds, limitItems, parseLimits, type LimitSpec } from './limits'
import { parseMargin } from './margin'
import { ALGORITHMS, AUTO_LIMIT, DEFAULTS, MAX_WEIGHT, PRIORITIES, ROUTE_MODES, STORE_ERROR_MODES, defaultMarginMs, type BucketKey, type ClientSource, type RouteConfig } from './schema'
import { parseDuration, parseRate } from './units'

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
