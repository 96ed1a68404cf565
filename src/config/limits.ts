// Several limits on one route (`limit: [5000/h, 900/min]`): each item a rate, or a mapping
// {rate, key, algorithm, burst, cost, name}. A route with one rate never gets here: it keeps its single
// `limit` and today's code path. Every item is validated here; the route's fields are the defaults.
import { ConfigError, describeValue as describe } from '../errors'
import { maxCostOf } from './cost-rules'
import { formatRate, parseDuration, parseRate, type Rate } from './units'

export type LimitAlgorithm = 'token-bucket' | 'sliding-window'
export type LimitKey = { kind: 'instance' } | { kind: 'header', header: string }

export interface LimitSpec {
  /** How cost rules, headers, status and refusals name it: given, or its rate (e.g. "900/min"). */
  name: string
  rate: Rate
  /** `instance`: one budget for every request of the route; header: one per credential (the route's key). */
  key: LimitKey
  algorithm: LimitAlgorithm
  /** token-bucket only. */
  burst: number
  marginMs: number
  /** The limit's own cost rules (as a route's `cost`), checked before the route's. */
  cost: unknown
}

/** The route fields a limit item inherits (already validated), and how `key` and `margin` were given. */
export interface LimitDefaults {
  algorithm: LimitAlgorithm
  burst: number
  /** undefined when the route does not set `key` (then a keyed item sets the route's). */
  key: LimitKey | undefined
  margin: unknown
  parseKey: (name: string, value: unknown) => LimitKey
  defaultMarginMs: (windowMs: number) => number
}

const ITEM_FIELDS = ['rate', 'key', 'algorithm', 'burst', 'cost', 'name']
const NAME = /^[A-Za-z0-9_./:-]{1,64}$/

/**
 * The raw items of `limit` when it lists more than one rate (a YAML list, or "5000/h,900/min" from a
 * flag or variable); undefined for a single rate, which stays a plain `limit`.
 */
export function limitItems (at: string, raw: unknown): unknown[] | undefined {
  const items = typeof raw === 'string' && raw.includes(',') ? raw.split(',').map((s) => s.trim()) : raw
  if (!Array.isArray(items)) return undefined
  if (items.length === 0) throw new ConfigError(at, 'expected at least one rate, e.g. [5000/h, 900/min]')
  if (items.length === 1 && typeof items[0] !== 'object') return undefined
  if (items.length > 8) throw new ConfigError(at, `expected at most 8 limits, got ${items.length}`)
  return items
}

function sameKey (a: LimitKey, b: LimitKey): boolean {
  return a.kind === b.kind && (a.kind === 'instance' || a.header === (b as { header: string }).header)
}

/** One item of the list; `at` is e.g. "routes[0].limit[1]". */
function parseItem (at: string, raw: unknown, d: LimitDefaults): LimitSpec {
  const r: Record<string, unknown> = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? raw as Record<string, unknown> : { rate: raw }
  for (const k of Object.keys(r)) if (!ITEM_FIELDS.includes(k)) throw new ConfigError(`${at}.${k}`, `unknown field; known fields are ${ITEM_FIELDS.join(', ')}`)
  if (r.rate === undefined) throw new ConfigError(`${at}.rate`, 'is required, e.g. {rate: 900/min}')
  let rate: Rate
  try {
    rate = parseRate(r.rate)
  } catch (err) {
    throw new ConfigError(typeof raw === 'object' ? `${at}.rate` : at, (err as Error).message)
  }
  const algorithm = r.algorithm ?? d.algorithm
  if (algorithm !== 'token-bucket' && algorithm !== 'sliding-window') throw new ConfigError(`${at}.algorithm`, `expected one of token-bucket, sliding-window, got ${describe(algorithm)}`)
  if (algorithm === 'sliding-window' && r.burst !== undefined) throw new ConfigError(`${at}.burst`, 'applies to token-bucket only; sliding-window always allows the whole limit at once')
  const burst = r.burst === undefined ? Math.min(d.burst, rate.count) : Number(r.burst)
  if (!Number.isInteger(burst) || burst < 1 || burst > rate.count) throw new ConfigError(`${at}.burst`, `expected an integer from 1 to ${rate.count}, got ${describe(r.burst)}`)
  const name = r.name ?? formatRate(rate)
  if (typeof name !== 'string' || !NAME.test(name)) throw new ConfigError(`${at}.name`, `expected 1-64 letters, digits or "_./:-", got ${describe(name)}`)
  let marginMs: number
  try {
    marginMs = d.margin === undefined ? d.defaultMarginMs(rate.windowMs) : parseDuration(d.margin)
  } catch (err) {
    throw new ConfigError('margin', (err as Error).message)
  }
  const key = r.key === undefined ? (d.key ?? { kind: 'instance' }) : d.parseKey(`${at}.key`, r.key)
  return { name, rate, key, algorithm, burst: algorithm === 'token-bucket' ? burst : 1, marginMs, cost: r.cost }
}

/**
 * Every item, and the route's key: the credential header the keyed items share (a route keys its
 * requests by one credential; an item is per that credential or `instance`, one budget for all).
 */
export function parseLimits (at: string, items: unknown[], d: LimitDefaults): { limits: LimitSpec[], key: LimitKey } {
  const limits = items.map((raw, i) => parseItem(`${at}[${i}]`, raw, d))
  const named = items.map((raw) => raw !== null && typeof raw === 'object' && 'name' in raw)
  let key = d.key
  limits.forEach((l, i) => {
    if (l.key.kind !== 'header') return
    key ??= l.key
    if (!sameKey(key, l.key)) {
      const mine = key.kind === 'header' ? `header:${key.header}` : 'instance'
      throw new ConfigError(`${at}[${i}].key`, `a per-key limit needs the route keyed by the same header, but the route's key is ${mine}; key each limit by "${mine}" or "instance"`)
    }
  })
  const routeKey: LimitKey = key ?? { kind: 'instance' }
  const seen = new Map<string, number>()
  limits.forEach((l, i) => {
    if (l.key.kind === 'header') l.key = routeKey
    // Two limits of one window and key only differ by what cost rules charge them, which needs names.
    const twin = limits.findIndex((o, j) => j < i && o.rate.windowMs === l.rate.windowMs && sameKey(o.key, l.key) && !(named[i] && named[j]))
    if (twin !== -1) throw new ConfigError(`${at}[${i}]`, `has the same window (${l.rate.windowMs} ms) and key as ${at}[${twin}]; keep only the lower of the two, or name both to charge them differently`)
    if (seen.has(l.name)) throw new ConfigError(`${at}[${i}].name`, `duplicate limit name "${l.name}" (also ${at}[${seen.get(l.name) as number}]); give each a name`)
    seen.set(l.name, i)
  })
  return { limits, key: routeKey }
}

/** What a cost rule may charge each limit at most, by name (see maxCostOf). */
export function costBounds (limits: readonly LimitSpec[]): Array<{ name: string, rate: Rate, max: number, why: string }> {
  return limits.map((l) => {
    const bound = maxCostOf(l.algorithm, l.rate.count, l.burst)
    return { name: l.name, rate: l.rate, max: bound.max, why: `${bound.why.replace('the route\'s', `limit ${l.name}'s`)}` }
  })
}
