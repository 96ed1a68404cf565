// Reading "how long to wait" from an upstream response. Pure functions: no clock reads
// (the caller passes `nowMs`), no I/O. Every duration returned is in MILLISECONDS;
// header values arrive in seconds (or as dates) and are converted here, once.

export type HeaderBag = Record<string, string | string[] | undefined>

/** What an upstream announces about its own budget. */
export interface RateLimitInfo {
  /** Requests allowed per window (X-RateLimit-Limit, or the RateLimit-Policy quota `q`). */
  limit?: number
  /** Requests left in the current window (X-RateLimit-Remaining, or RateLimit `r`). */
  remaining?: number
  /** Milliseconds from `nowMs` until the window resets (never negative). */
  resetMs?: number
  /** Window length in milliseconds (RateLimit-Policy `w`). */
  windowMs?: number
  /** Which of the upstream's budgets the numbers are of (GitHub's X-RateLimit-Resource: core, search, graphql…). */
  resource?: string
}

// Numbers as HTTP headers write them: digits with an optional fraction. No sign, no
// exponent: "-5" or "1e999" are not valid delays and must not parse as such.
const DECIMAL = /^\d+(?:\.\d+)?$/

// Every HTTP-date form (IMF-fixdate, RFC 850, asctime) starts with a day name. Requiring
// it keeps Date.parse, which accepts almost anything ("5" is the year 2005), honest.
const HTTP_DATE_START = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s/i

// ISO 8601 date-time as some APIs put in reset headers: 2025-01-01T00:00:30Z.
const ISO_8601 = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$/i

// A reset value above this is an epoch, not a delta: 1e9 s is 2001-09-09, and a delta
// of more than 31 years is not a wait anyone announces.
const EPOCH_SECONDS_ABOVE = 1e9
// Above this the epoch is in milliseconds: 1e12 ms is 2001-09-09 again, whereas 1e12
// epoch SECONDS would be the year 33658.
const EPOCH_MS_ABOVE = 1e12

/**
 * `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. Zulip sends floats
 * ("28.7"), so fractions are accepted. Returns milliseconds from `nowMs`, 0 for a date
 * in the past, undefined when the value is missing or not a valid form.
 */
export function parseRetryAfter (value: string | undefined, nowMs: number): number | undefined {
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (text === '') return undefined
  if (DECIMAL.test(text)) return finiteOrUndefined(Number(text) * 1000)
  if (HTTP_DATE_START.test(text)) return untilMs(Date.parse(text), nowMs)
  return undefined
}

/**
 * `X-RateLimit-Reset` / `RateLimit-Reset`. APIs disagree on the unit, so it is detected:
 * - a number above 1e12 is an epoch in milliseconds,
 * - a number above 1e9 is an epoch in seconds (GitHub),
 * - any other number is a delta in seconds (IETF drafts, many others),
 * - an ISO 8601 date-time or an HTTP-date is an absolute time.
 * Returns milliseconds from `nowMs` (0 when already past), undefined when unreadable.
 */
export function parseResetHeader (value: string | undefined, nowMs: number): number | undefined {
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  if (text === '') return undefined
  if (DECIMAL.test(text)) {
    const n = Number(text)
    if (n > EPOCH_MS_ABOVE) return untilMs(n, nowMs)
    if (n > EPOCH_SECONDS_ABOVE) return untilMs(n * 1000, nowMs)
    return finiteOrUndefined(n * 1000)
  }
  if (ISO_8601.test(text) || HTTP_DATE_START.test(text)) return untilMs(Date.parse(text), nowMs)
  return undefined
}

/**
 * Reads the budget an upstream announces, from either family of headers:
 * - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (and the
 *   unprefixed `RateLimit-Limit/-Remaining/-Reset` of IETF draft 06 and earlier);
 * - IETF draft 11 structured fields: `RateLimit: "name";r=0;t=30` (r = remaining,
 *   t = seconds to reset) and `RateLimit-Policy: "name";q=180;w=60` (q = quota,
 *   w = window seconds). With several policies, the one with the fewest remaining
 *   requests wins, since it is the one that will refuse first.
 * The X- headers take precedence per field; the IETF fields fill in what is missing.
 */
export function parseRateLimitHeaders (headers: HeaderBag, nowMs: number): RateLimitInfo {
  const info: RateLimitInfo = {}
  // Most answers announce nothing: one look at the names instead of eight lookups.
  if (!announcesBudget(headers)) return info
  const limit = nonNegativeNumber(headerValue(headers, 'x-ratelimit-limit') ?? headerValue(headers, 'ratelimit-limit'))
  const remaining = nonNegativeNumber(headerValue(headers, 'x-ratelimit-remaining') ?? headerValue(headers, 'ratelimit-remaining'))
  const resetMs = parseResetHeader(headerValue(headers, 'x-ratelimit-reset') ?? headerValue(headers, 'ratelimit-reset'), nowMs)
  if (limit !== undefined) info.limit = limit
  if (remaining !== undefined) info.remaining = remaining
  if (resetMs !== undefined) info.resetMs = resetMs
  const resource = headerValue(headers, 'x-ratelimit-resource')
  if (resource !== undefined && resource.trim() !== '') info.resource = resource.trim().toLowerCase().slice(0, 64)

  const current = pickMostConstrained(parseStructuredList(headerList(headers, 'ratelimit')))
  if (current !== undefined) {
    const r = nonNegativeNumber(current.params.r ?? current.params.remaining)
    const t = nonNegativeNumber(current.params.t ?? current.params.reset)
    if (info.remaining === undefined && r !== undefined) info.remaining = r
    if (info.resetMs === undefined && t !== undefined) info.resetMs = t * 1000
    const l = nonNegativeNumber(current.params.limit)
    if (info.limit === undefined && l !== undefined) info.limit = l
  }

  const policies = parseStructuredList(headerList(headers, 'ratelimit-policy'))
  const policy = policies.find(p => current?.name !== undefined && p.name === current.name) ?? policies[0]
  if (policy !== undefined) {
    // Draft 11 names the quota `q`; drafts up to 07 wrote it as the bare item: `100;w=60`.
    const q = nonNegativeNumber(policy.params.q ?? policy.bare)
    const w = nonNegativeNumber(policy.params.w)
    if (info.limit === undefined && q !== undefined) info.limit = q
    if (w !== undefined) info.windowMs = w * 1000
  }
  return info
}

// "Retry after 1 seconds." (TestRail), "try again in 30 seconds", "retry after 2 minutes".
const RETRY_TEXT = /\b(?:retry|try again)\s+(?:after|in)\s+(\d{1,9}(?:\.\d{1,6})?)\s*(seconds?|secs?|s|minutes?|mins?)\b/i

/** The delay stated in a human-readable message, in milliseconds; undefined when none. */
export function retryAfterTextMs (text: string | undefined): number | undefined {
  if (typeof text !== 'string') return undefined
  const match = RETRY_TEXT.exec(text.length > 4096 ? text.slice(0, 4096) : text)
  if (match === null) return undefined
  const amount = Number(match[1])
  const unitMs = /^m/i.test(match[2] ?? '') ? 60_000 : 1000
  return finiteOrUndefined(amount * unitMs)
}

/**
 * Bounds a delay: some APIs send 0 (which would hammer them), some send a reset a year
 * away. NaN becomes `minMs`; Infinity becomes `maxMs`.
 */
export function clampDelayMs (ms: number, minMs: number, maxMs: number): number {
  if (Number.isNaN(ms)) return minMs
  return Math.min(maxMs, Math.max(minMs, ms))
}

export interface DelaySources {
  headers: HeaderBag
  /** Seconds, from the body (Zulip's `retry-after`). */
  bodyRetryAfterS?: number
  /** Free text that may say "Retry after N seconds". */
  text?: string
  nowMs: number
}

/**
 * The upstream's requested delay in milliseconds, read in this order: `Retry-After`;
 * the body's `retry-after`; the reset of X-RateLimit/RateLimit headers; a "Retry after
 * N seconds" text. Undefined when none says anything, so the caller applies its default.
 * A reset is only used when remaining is 0 or not given: with requests still left, the
 * reset describes another limit than the one that pushed back (GitHub's secondary limits).
 */
export function upstreamDelayMs (sources: DelaySources): number | undefined {
  const fromHeader = parseRetryAfter(headerValue(sources.headers, 'retry-after'), sources.nowMs)
  if (fromHeader !== undefined) return fromHeader
  const fromBody = sources.bodyRetryAfterS
  if (typeof fromBody === 'number' && Number.isFinite(fromBody) && fromBody >= 0) return fromBody * 1000
  const budget = parseRateLimitHeaders(sources.headers, sources.nowMs)
  if (budget.resetMs !== undefined && (budget.remaining === undefined || budget.remaining === 0)) return budget.resetMs
  return retryAfterTextMs(sources.text)
}

/** Whether any header name mentions "ratelimit" (parseRateLimitHeaders looks no further otherwise). */
function announcesBudget (headers: HeaderBag): boolean {
  if (headers === null || typeof headers !== 'object') return false
  for (const key in headers) if (key.toLowerCase().includes('ratelimit')) return true
  return false
}

/** First value of a header, looked up case-insensitively (Node lowercases, fixtures may not). */
export function headerValue (headers: HeaderBag, name: string): string | undefined {
  const all = headerList(headers, name)
  return all.length > 0 ? all[0] : undefined
}

function headerList (headers: HeaderBag, name: string): string[] {
  if (headers === null || typeof headers !== 'object') return []
  const wanted = name.toLowerCase()
  const out: string[] = []
  for (const key of Object.keys(headers)) {
    if (key.toLowerCase() !== wanted) continue
    const value: unknown = headers[key]
    if (typeof value === 'string') out.push(value)
    else if (Array.isArray(value)) for (const v of value) if (typeof v === 'string') out.push(v)
  }
  return out
}

interface StructuredItem {
  /** The item's name when it is a string or token ("default" in `"default";r=0`). */
  name?: string
  /** The bare item itself as text ("100" in the draft-06 policy `100;w=60`). */
  bare: string
  params: Record<string, string>
}

// A tolerant reader for the RFC 8941 lists the drafts use. It does not validate; it
// extracts what can be read and ignores the rest. Older drafts wrote a dictionary
// (`limit=100, remaining=0, reset=30`); those members land in one item's params.
function parseStructuredList (lines: string[]): StructuredItem[] {
  const items: StructuredItem[] = []
  const loose: Record<string, string> = {}
  for (const member of splitOutsideQuotes(lines.join(','), ',')) {
    const parts = splitOutsideQuotes(member, ';').map(p => p.trim())
    const head = parts[0] ?? ''
    if (head === '') continue
    const eq = head.indexOf('=')
    if (eq > 0 && !head.startsWith('"')) {
      loose[head.slice(0, eq).trim().toLowerCase()] = unquote(head.slice(eq + 1).trim())
      continue
    }
    const params: Record<string, string> = {}
    for (const p of parts.slice(1)) {
      const i = p.indexOf('=')
      if (i > 0) params[p.slice(0, i).trim().toLowerCase()] = unquote(p.slice(i + 1).trim())
    }
    const bare = unquote(head)
    items.push(DECIMAL.test(bare) ? { bare, params } : { name: bare, bare, params })
  }
  if (Object.keys(loose).length > 0) items.push({ bare: '', params: loose })
  return items
}

function pickMostConstrained (items: StructuredItem[]): StructuredItem | undefined {
  let best: StructuredItem | undefined
  let bestRemaining = Infinity
  for (const item of items) {
    const r = nonNegativeNumber(item.params.r ?? item.params.remaining) ?? Infinity
    if (best === undefined || r < bestRemaining) {
      best = item
      bestRemaining = r
    }
  }
  return best
}

function splitOutsideQuotes (text: string, separator: string): string[] {
  const out: string[] = []
  let current = ''
  let quoted = false
  for (const ch of text) {
    if (ch === '"') quoted = !quoted
    if (ch === separator && !quoted) {
      out.push(current)
      current = ''
    } else {
      current += ch
    }
  }
  out.push(current)
  return out
}

function unquote (text: string): string {
  return text.length >= 2 && text.startsWith('"') && text.endsWith('"') ? text.slice(1, -1) : text
}

function nonNegativeNumber (value: string | undefined): number | undefined {
  if (typeof value !== 'string') return undefined
  const text = value.trim()
  return DECIMAL.test(text) ? finiteOrUndefined(Number(text)) : undefined
}

function untilMs (epochMs: number, nowMs: number): number | undefined {
  if (!Number.isFinite(epochMs) || !Number.isFinite(nowMs)) return undefined
  return Math.max(0, epochMs - nowMs)
}

function finiteOrUndefined (n: number): number | undefined {
  return Number.isFinite(n) ? n : undefined
}
