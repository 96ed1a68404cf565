// Weighted costs: how many units of the budget one request takes, by method and path. An upstream
// that counts a POST as 5 points (GitHub's secondary limit) or a bulk endpoint as 10 calls gets the
// same count from Sluice, in the request's one reservation.
import { ConfigError, describeValue as describe } from '../errors'

export interface CostRule {
  /** Upper-case method, or undefined for any method. */
  method: string | undefined
  /** The pattern as written, for status pages and errors. */
  path: string
  /** Compiled `path`: `*` matches any run of characters, `/` included. */
  pattern: RegExp
  /** Units of the budget, integer ≥ 1. */
  cost: number
}

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

/** Validate `cost:` of a route (`at` is e.g. "routes[0].cost"); `bound` comes from maxCostOf. */
export function parseCostRules (at: string, raw: unknown, bound: { max: number, why: string }): CostRule[] {
  const maxCost = bound.max
  if (raw === undefined) return []
  if (!Array.isArray(raw)) throw new ConfigError(at, `expected a list of {method, path, cost}, got ${describe(raw)}`)
  return raw.map((item: unknown, i) => {
    const here = `${at}[${i}]`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new ConfigError(here, `expected a mapping {method, path, cost}, got ${describe(item)}`)
    const r = item as Record<string, unknown>
    for (const key of Object.keys(r)) {
      if (!['method', 'path', 'cost'].includes(key)) throw new ConfigError(`${here}.${key}`, 'unknown field; known fields are method, path, cost')
    }
    const method = r.method ?? '*'
    if (typeof method !== 'string' || !METHOD.test(method)) throw new ConfigError(`${here}.method`, `expected an HTTP method such as POST, or *, got ${describe(method)}`)
    const path = r.path ?? '*'
    if (typeof path !== 'string' || !(path === '*' || path.startsWith('/')) || path.length > 512) {
      throw new ConfigError(`${here}.path`, `expected a path pattern starting with / (where * matches anything), or *, got ${describe(path)}`)
    }
    const cost = typeof r.cost === 'string' && r.cost.trim() !== '' ? Number(r.cost) : r.cost
    if (typeof cost !== 'number' || !Number.isInteger(cost) || cost < 1 || cost > maxCost) {
      throw new ConfigError(`${here}.cost`, `expected an integer from 1 to ${maxCost} (${bound.why}), got ${describe(r.cost)}`)
    }
    return { method: method === '*' ? undefined : method.toUpperCase(), path, pattern: compile(path), cost }
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
