// Weighted costs: how many units of the budget one request takes, by method and path. An upstream
// that counts a POST as 5 points (GitHub's secondary limit) or a bulk endpoint as 10 calls gets the
// same count from Sluice, in the request's one reservation.
import { ConfigError, describeValue as describe } from '../errors'
import { parseRate, type Rate } from './units'

export interface CostRule {
  /** Upper-case method, or undefined for any method. */
  method: string | undefined
  /** The pattern as written, for status pages and errors. */
  path: string
  /** Compiled `path`: `*` matches any run of characters, `/` included. */
  pattern: RegExp
  /** Units of the budget, integer ≥ 1 (≥ 0 when the rule names its limits). */
  cost: number
  /** A route with several limits: the names of the limits this rule charges; undefined = all of them. */
  limits?: string[]
}

/** A limit of a route with several, as cost rules see it: its name, rate and largest cost. */
export interface LimitBound { name: string, rate: Rate, max: number, why: string }

export const DEFAULT_COST = 1

const METHOD = /^(?:\*|[A-Za-z]{1,16})$/

/** `/repos/*` → /^\/repos\/.*$/: literal except `*`, anchored at both ends. */
function compile (path: string): RegExp {
  const source = path.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')
  return new RegExp(`^${source}$`)
}

/**
 * The largest cost a route can honour. A sliding window holds `limit` units, so a request costing
 * more could never start. A token bucket holds `burst` tokens: a request costing more than that would
 * have to be let through on credit, and a window could then see cost + rate × window > limit.
 */
export function maxCostOf (algorithm: 'token-bucket' | 'sliding-window', limit: number, burst: number): { max: number, why: string } {
  return algorithm === 'sliding-window'
    ? { max: limit, why: 'the route\'s limit: a request costing more could never start' }
    : { max: burst, why: 'the route\'s burst: a token bucket holds at most burst tokens; raise burst to allow costlier requests' }
}

/** `limits:` of a cost rule: names (or rates, e.g. 900/min) of the route's limits. */
function limitRefs (at: string, raw: unknown, limits: readonly LimitBound[]): LimitBound[] {
  const refs = typeof raw === 'string' ? [raw] : raw
  if (!Array.isArray(refs) || refs.length === 0) throw new ConfigError(at, `expected a list of the route's limits, e.g. [900/min], got ${describe(raw)}`)
  return refs.map((ref: unknown, i) => {
    const byName = limits.find((l) => l.name === ref)
    if (byName !== undefined) return byName
    let rate: Rate | undefined
    try {
      rate = parseRate(ref)
    } catch {}
    const byRate = rate === undefined ? [] : limits.filter((l) => l.rate.count === rate.count && l.rate.windowMs === rate.windowMs)
    if (byRate.length === 1) return byRate[0]
    throw new ConfigError(`${at}[${i}]`, `names no limit of this route; its limits are ${limits.map((l) => l.name).join(', ')}`)
  })
}

/**
 * Validate `cost:` of a route (`at` is e.g. "routes[0].cost"); `bound` comes from maxCostOf. A route
 * with several limits passes them: a rule may then name the limits it charges (`limits:`), and may
 * charge them 0 (a limit that counts only some requests, e.g. content-creating ones).
 */
export function parseCostRules (at: string, raw: unknown, bound: { max: number, why: string }, limits?: readonly LimitBound[]): CostRule[] {
  if (raw === undefined) return []
  if (!Array.isArray(raw)) throw new ConfigError(at, `expected a list of {method, path, cost}, got ${describe(raw)}`)
  const fields = limits === undefined ? ['method', 'path', 'cost'] : ['method', 'path', 'cost', 'limits']
  return raw.map((item: unknown, i) => {
    const here = `${at}[${i}]`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new ConfigError(here, `expected a mapping {method, path, cost}, got ${describe(item)}`)
    const r = item as Record<string, unknown>
    for (const key of Object.keys(r)) {
      if (key === 'limits' && limits === undefined) throw new ConfigError(`${here}.limits`, 'applies to a route with several limits only (limit: [5000/h, 900/min])')
      if (!fields.includes(key)) throw new ConfigError(`${here}.${key}`, `unknown field; known fields are ${fields.join(', ')}`)
    }
    const charged = limits === undefined ? undefined : r.limits === undefined ? limits : limitRefs(`${here}.limits`, r.limits, limits)
    const tightest = charged === undefined ? bound : charged.reduce((a, b) => (b.max < a.max ? b : a))
    const method = r.method ?? '*'
    if (typeof method !== 'string' || !METHOD.test(method)) throw new ConfigError(`${here}.method`, `expected an HTTP method such as POST, or *, got ${describe(method)}`)
    const path = r.path ?? '*'
    if (typeof path !== 'string' || !(path === '*' || path.startsWith('/')) || path.length > 512) {
      throw new ConfigError(`${here}.path`, `expected a path pattern starting with / (where * matches anything), or *, got ${describe(path)}`)
    }
    const cost = typeof r.cost === 'string' && r.cost.trim() !== '' ? Number(r.cost) : r.cost
    const least = r.limits === undefined ? 1 : 0
    if (typeof cost !== 'number' || !Number.isInteger(cost) || cost < least || cost > tightest.max) {
      throw new ConfigError(`${here}.cost`, `expected an integer from ${least} to ${tightest.max} (${tightest.why}), got ${describe(r.cost)}`)
    }
    const rule: CostRule = { method: method === '*' ? undefined : method.toUpperCase(), path, pattern: compile(path), cost }
    if (r.limits !== undefined && charged !== undefined) rule.limits = charged.map((l) => l.name)
    return rule
  })
}

/**
 * The cost of a request in each of a route's limits (in the order of `names`): per limit, the first
 * rule matching its method and path that charges that limit (no `limits:`, or one naming it), else 1.
 */
export function costsOf (rules: readonly CostRule[], names: readonly string[], method: string, path: string): number[] {
  const upper = method.toUpperCase()
  return names.map((name) => {
    for (const rule of rules) {
      if (rule.limits !== undefined && !rule.limits.includes(name)) continue
      if (rule.method !== undefined && rule.method !== upper) continue
      if (rule.pattern.test(path)) return rule.cost
    }
    return DEFAULT_COST
  })
}

/** The cost of a request: the first rule matching its method and path (below the route's mount, no query), else 1. */
export function costOf (rules: readonly CostRule[], method: string, path: string): number {
  for (const rule of rules) {
    if (rule.method !== undefined && rule.method !== method.toUpperCase()) continue
    if (rule.pattern.test(path)) return rule.cost
  }
  return DEFAULT_COST
}

/** The path a cost rule sees: the request's path below the route's prefix, without its query. */
export function pathBelow (prefix: string, url: string): string {
  const q = url.indexOf('?')
  let path = q === -1 ? url : url.slice(0, q)
  // Decoded as the router decodes it to pick the route, and as the upstream reads it: /%72epos/x is
  // /repos/x to both, so it must cost what /repos/x costs. (The guard refuses bad encodings first.)
  try {
    path = decodeURIComponent(path)
  } catch {}
  if (prefix === '/' || prefix === '') return path
  const rest = path.slice(prefix.length)
  return rest === '' ? '/' : rest
}
