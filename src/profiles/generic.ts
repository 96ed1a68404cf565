// The default profile: recognises every known error shape by its content, and the
// signals of whatever sits in front of an API (Cloudflare, nginx, load balancers).
// The API-specific profiles read their own shape first and fall back to this one.

import type { ErrorCode } from '../errors'
import { headerValue, upstreamDelayMs, type HeaderBag } from '../upstream/retry-after'
import type { NativeError, ParsedError, Profile, Pushback, UpstreamBody } from './profile'

/** Maintenance states no end time; re-checking every 2 min finds its end without hammering (ms). */
export const MAINTENANCE_DEFAULT_DELAY_MS = 120_000

/** Upper bound, in characters, of a message taken from an upstream body. */
const MESSAGE_MAX_CHARS = 500

/** Reads any known shape: envelope, Zulip, TestRail, Testmo/GitHub, plain text, HTML. */
export function parseAnyError (body: UpstreamBody): ParsedError {
  if (body.isJson) return isRecord(body.json) ? parseJsonObject(body.json) : {}
  const text = body.text.trim()
  if (text === '') return {}
  if (text.startsWith('{') || text.startsWith('[')) return salvageTruncatedJson(text)
  return parseText(text)
}

function parseJsonObject (json: Record<string, unknown>): ParsedError {
  // Envelope: {"success": false, "error": {"code", "message", "details"}}
  if (json.success === false && isRecord(json.error)) {
    const error = json.error
    const parsed: ParsedError = { envelope: true }
    const code = stringOf(error.code)
    const message = stringOf(error.message)
    if (code !== undefined) parsed.code = code
    if (message !== undefined) parsed.message = message
    if (isRecord(error.details)) parsed.details = error.details
    return parsed
  }
  // Zulip: {"result": "error", "msg", "code", "var_name"?, "retry-after"?}
  if (json.result === 'error') {
    const parsed: ParsedError = {}
    const code = stringOf(json.code)
    const message = stringOf(json.msg)
    const varName = stringOf(json.var_name)
    const retryAfterS = json['retry-after']
    if (code !== undefined) {
      parsed.code = code
      const mapped = ZULIP_CODES[code]
      if (mapped !== undefined) parsed.sluiceCode = mapped
    }
    if (message !== undefined) parsed.message = message
    if (varName !== undefined) parsed.varName = varName
    if (typeof retryAfterS === 'number' && Number.isFinite(retryAfterS) && retryAfterS >= 0) parsed.retryAfterS = retryAfterS
    return parsed
  }
  // TestRail {"error": "..."}, Testmo {"message", "errors": {}}, GitHub {"message", "documentation_url", "errors": []},
  // OAuth-style {"error": "invalid_grant", "error_description"}, and the many APIs that use some of the same names.
  const parsed: ParsedError = {}
  const errorText = stringOf(json.error)
  const message = stringOf(json.message) ?? stringOf(json.msg) ?? stringOf(json.error_description) ??
    stringOf(json.detail) ?? (isRecord(json.error) ? stringOf(json.error.message) : undefined)
  if (message !== undefined || errorText !== undefined || stringOf(json.title) !== undefined) {
    parsed.message = message ?? errorText ?? stringOf(json.title)
  }
  // Beside a message, a token-like "error" is a code ("rate_limited", "invalid_grant").
  const errorCode = message !== undefined && errorText !== undefined && TOKEN.test(errorText) ? errorText : undefined
  const code = stringOf(json.code) ?? stringOf(json.error_code) ?? (isRecord(json.error) ? stringOf(json.error.code) : undefined) ?? errorCode
  if (code !== undefined) parsed.code = code
  if (json.errors !== undefined && json.errors !== null) parsed.fieldErrors = json.errors
  const documentationUrl = stringOf(json.documentation_url)
  if (documentationUrl !== undefined) parsed.documentationUrl = documentationUrl
  // Seconds; names seen in the wild besides Zulip's "retry-after".
  const retryAfterS = json.retry_after ?? json.retryAfter
  if (typeof retryAfterS === 'number' && Number.isFinite(retryAfterS) && retryAfterS >= 0) parsed.retryAfterS = retryAfterS
  return parsed
}

const TOKEN = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/

/** Zulip codes in Sluice's vocabulary; `msg` is translated, so the code is what we map on. */
export const ZULIP_CODES: Readonly<Record<string, ErrorCode>> = {
  RATE_LIMIT_HIT: 'RATE_LIMITED',
  INVALID_API_KEY: 'INVALID_API_KEY',
  UNAUTHORIZED: 'AUTH_FAILED',
  USER_DEACTIVATED: 'AUTH_FAILED',
  REALM_DEACTIVATED: 'AUTH_FAILED',
  REQUEST_VARIABLE_MISSING: 'VALIDATION_ERROR',
  REQUEST_VARIABLE_INVALID: 'VALIDATION_ERROR',
  INVALID_JSON: 'MALFORMED_JSON',
  BAD_REQUEST: 'BAD_REQUEST',
  STREAM_DOES_NOT_EXIST: 'NOT_FOUND'
}

// A body cut off by a size cap or a dying connection still usually names its message
// and code near the start. Bounded repetitions keep these linear on 64 KiB of garbage.
const SALVAGE_MESSAGE = /"(?:message|msg|error)"\s*:\s*"((?:[^"\\]|\\.){1,500})/
const SALVAGE_CODE = /"code"\s*:\s*"([A-Za-z0-9_.-]{1,64})"/

function salvageTruncatedJson (text: string): ParsedError {
  const parsed: ParsedError = {}
  const message = SALVAGE_MESSAGE.exec(text)?.[1]
  if (message !== undefined) parsed.message = message.replace(/\\(.)/g, '$1')
  const code = SALVAGE_CODE.exec(text)?.[1]
  if (code !== undefined) {
    parsed.code = code
    const mapped = ZULIP_CODES[code]
    if (mapped !== undefined && text.includes('"result"')) parsed.sluiceCode = mapped
  }
  return parsed
}

// Cloudflare answers in plain text, `error code: 1015`, or with an HTML page naming "Error 1015".
const CLOUDFLARE_TEXT = /\berror code:\s*(\d{3,4})\b/i
const CLOUDFLARE_HTML = /\bError\s+(1\d{3})\b/

function parseText (text: string): ParsedError {
  const cloudflare = CLOUDFLARE_TEXT.exec(text) ?? CLOUDFLARE_HTML.exec(text)
  const parsed: ParsedError = {}
  if (cloudflare?.[1] !== undefined) parsed.code = cloudflare[1]
  const title = looksLikeHtml(text) ? htmlTitle(text) : firstLine(text)
  if (title !== undefined && title !== '') parsed.message = title
  return parsed
}

export function looksLikeHtml (text: string): boolean {
  return /^\s*<(?:!doctype|html|head|body|\?xml|!--|center|h1|div|p)\b/i.test(text) || text.includes('</html>')
}

// indexOf rather than a regex: a page of unclosed "<title" must not cost quadratic time.
function htmlTitle (text: string): string | undefined {
  const lower = text.toLowerCase()
  for (const tag of ['title', 'h1']) {
    const open = lower.indexOf(`<${tag}`)
    if (open < 0) continue
    const start = lower.indexOf('>', open)
    const end = lower.indexOf(`</${tag}`, start)
    if (start < 0 || end < 0) continue
    const inner = text.slice(start + 1, end).replace(/\s+/g, ' ').trim()
    if (inner !== '') return inner.slice(0, MESSAGE_MAX_CHARS)
  }
  return undefined
}

function firstLine (text: string): string {
  const end = text.indexOf('\n')
  return (end < 0 ? text : text.slice(0, end)).trim().slice(0, MESSAGE_MAX_CHARS)
}

/** A "slow down" phrased in words: GitHub's secondary limits, many gateways. */
export function mentionsRateLimit (message: string | undefined): boolean {
  return typeof message === 'string' && /\brate[ -]?limit|too many requests/i.test(message)
}

function mentionsMaintenance (message: string | undefined): boolean {
  return typeof message === 'string' && /\bmaintenance\b/i.test(message)
}

/**
 * Pushback signals every profile honours, whatever API sits behind the proxy: HTTP 429,
 * Zulip's RATE_LIMIT_HIT at any status, an envelope's RATE_LIMITED, Cloudflare 1015,
 * a 403 with `x-ratelimit-remaining: 0` or a rate-limit message (GitHub-style), a 503
 * with Retry-After, a 503 or 409 whose message says maintenance. `defaults` fills in an unstated delay.
 */
export function commonPushback (status: number, headers: HeaderBag, parsed: ParsedError, nowMs: number, defaults: Profile['defaultDelayMs']): Pushback | null {
  const kind = commonPushbackKind(status, headers, parsed)
  if (kind === null) return null
  return { kind, delayMs: delayOrDefaultMs(headers, parsed, nowMs, kind === 'rate_limited' ? defaults.rateLimited : defaults.maintenance) }
}

function commonPushbackKind (status: number, headers: HeaderBag, parsed: ParsedError): Pushback['kind'] | null {
  if (status === 429) return 'rate_limited'
  if (parsed.code === 'RATE_LIMIT_HIT' || parsed.code === 'RATE_LIMITED' || parsed.code === '1015') return 'rate_limited'
  if (status === 403 && (headerValue(headers, 'x-ratelimit-remaining')?.trim() === '0' || mentionsRateLimit(parsed.message))) return 'rate_limited'
  if (status === 503 && headerValue(headers, 'retry-after') !== undefined) return 'maintenance'
  // TestRail's maintenance 409 reaches routes of any profile when TestRail sits behind them.
  if ((status === 503 || status === 409) && mentionsMaintenance(parsed.message)) return 'maintenance'
  return null
}

/** The upstream's stated delay (see `upstreamDelayMs` for the order), else `defaultMs`. */
export function delayOrDefaultMs (headers: HeaderBag, parsed: ParsedError, nowMs: number, defaultMs: number | undefined): number | undefined {
  const sources = { headers, nowMs, ...(parsed.retryAfterS !== undefined ? { bodyRetryAfterS: parsed.retryAfterS } : {}), ...(parsed.message !== undefined ? { text: parsed.message } : {}) }
  return upstreamDelayMs(sources) ?? defaultMs
}

export function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function stringOf (value: unknown): string | undefined {
  if (typeof value === 'string') return value.slice(0, MESSAGE_MAX_CHARS)
  if (typeof value === 'number' && Number.isFinite(value)) return String(value)
  return undefined
}

/**
 * The native fields of APIs that put their text in a top-level `message` (Testmo, GitHub and most
 * others): `message`, and `documentation_url` and `errors` where the upstream gave them.
 */
export function messageFields (error: NativeError): Record<string, unknown> {
  const fields: Record<string, unknown> = { message: error.message }
  const upstream = error.upstream
  if (upstream?.documentationUrl !== undefined) fields.documentation_url = upstream.documentationUrl
  if (upstream?.errors !== undefined) fields.errors = upstream.errors
  return fields
}

export const generic: Profile = {
  name: 'generic',
  parseError: parseAnyError,
  nativeFields: messageFields,
  pushback: (status, headers, parsed, nowMs = Date.now()) => commonPushback(status, headers, parsed, nowMs, generic.defaultDelayMs),
  // No rate-limit default: an unknown API may count per second or per hour; one that does
  // not say how long gets the limiter's own minimum.
  defaultDelayMs: { rateLimited: undefined, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
