// Turns whatever an upstream (or the wire to it) answered into Sluice's one error
// envelope, so a client needs one error handler for every API behind the proxy.
// Runs on the response path: it must never throw, whatever bytes arrive.

import { envelope, retryAfterSeconds, type Envelope, type ErrorCode } from '../errors'
import { getProfile, type ParsedError, type ProfileName, type Pushback, type UpstreamBody } from '../profiles'
import { clampDelayMs, upstreamDelayMs, type HeaderBag } from './retry-after'

/** Bytes of an upstream error body worth reading; the caller stops reading there (64 KiB). */
export const MAX_ERROR_BODY_BYTES = 65536
/** Characters of a non-JSON upstream body kept in `details.upstream_body`. */
export const UPSTREAM_BODY_MAX_CHARS = 512
/** Serialized characters up to which a JSON upstream body is kept parsed; beyond, it is cut as text. */
export const UPSTREAM_JSON_MAX_CHARS = 4096
/** Default ceiling of an announced delay: a reset a year away is a bug, not a plan (1 h). */
export const DEFAULT_MAX_DELAY_MS = 3_600_000

export interface UpstreamErrorInput {
  /** The upstream's HTTP status. */
  status: number
  /** The upstream's response headers (never the request's: those carry credentials). */
  headers: HeaderBag
  /** The body, at most MAX_ERROR_BODY_BYTES; longer input is cut here too. */
  body: Buffer
  /** The route's name, reported as `details.upstream`. */
  route: string
  profile: ProfileName
  requestId: string
  /** Clock for HTTP-date and epoch delays; default Date.now(). */
  nowMs?: number
  /** Floor of an announced delay, ms (some APIs send 0); default 0. The reported retry_after_s is at least 1 anyway. */
  minDelayMs?: number
  /** Ceiling of an announced delay, ms; default DEFAULT_MAX_DELAY_MS. */
  maxDelayMs?: number
}

export interface NormalizedError {
  /** HTTP status for the client. */
  status: number
  /** Whole seconds for the client's Retry-After header; absent when unknown or retrying will not help. */
  retryAfterS?: number
  envelope: Envelope
  /**
   * Set when the upstream pushed back (rate limit, maintenance): the caller pauses the
   * route's bucket for `delayMs` (raw, unclamped; undefined when unknown) and may re-queue.
   */
  pushback?: Pushback
}

/**
 * The envelope for an upstream error response. Status rules:
 * - rate limits (429, Zulip RATE_LIMIT_HIT, GitHub 403 exhausted, Cloudflare 1015) → 429 RATE_LIMITED;
 * - maintenance (TestRail 409, 503 with Retry-After or saying so) → 503 MAINTENANCE;
 * - other 4xx keep their status (408 excepted: the upstream timed out, so 504);
 * - 502 → 502 BAD_GATEWAY, 503 → 503 UPSTREAM_UNAVAILABLE, 504 → 504 UPSTREAM_TIMEOUT (all retryable);
 * - other 5xx → 502 UPSTREAM_ERROR (the upstream failed; 500 from Sluice means Sluice failed);
 * - a status that is not an HTTP error (missing, 2xx, 600) → 502 BAD_GATEWAY.
 * Envelope-style upstreams keep their own code (unless it is a rate limit or maintenance).
 */
export function normalizeUpstreamError (input: UpstreamErrorInput): NormalizedError {
  try {
    return normalize(input)
  } catch (err) {
    return lastResort(input, err)
  }
}

function normalize (input: UpstreamErrorInput): NormalizedError {
  const nowMs = finite(input.nowMs) ?? Date.now()
  const headers: HeaderBag = isObject(input.headers) ? input.headers : {}
  const upstreamStatus = Number.isInteger(input.status) ? input.status : undefined
  const profile = getProfile(input.profile)
  const body = decodeErrorBody(input.body)
  const parsed = profile.parseError(body)
  const pushback = profile.pushback(upstreamStatus ?? 0, headers, parsed, nowMs)

  let outcome: Outcome
  let delayMs: number | undefined
  if (pushback !== null) {
    outcome = pushback.kind === 'rate_limited'
      ? { status: 429, code: 'RATE_LIMITED', retryable: true }
      : { status: 503, code: 'MAINTENANCE', retryable: true }
    delayMs = pushback.delayMs
  } else {
    outcome = classifyStatus(upstreamStatus, parsed)
    if (outcome.retryable) {
      delayMs = upstreamDelayMs({ headers, nowMs, ...(parsed.retryAfterS !== undefined ? { bodyRetryAfterS: parsed.retryAfterS } : {}) })
    }
  }

  let retryAfterS: number | undefined
  if (delayMs !== undefined) {
    const minMs = finite(input.minDelayMs) ?? 0
    const maxMs = finite(input.maxDelayMs) ?? DEFAULT_MAX_DELAY_MS
    retryAfterS = retryAfterSeconds(clampDelayMs(delayMs, minMs, maxMs))
  }

  // Upstream details first, so Sluice's own keys win a name clash.
  const details: Record<string, unknown> = {}
  if (parsed.envelope === true && parsed.details !== undefined) {
    const kept = boundedJson(parsed.details)
    if (isObject(kept)) {
      for (const key of Object.keys(kept)) if (key !== '__proto__') details[key] = kept[key]
    } else {
      details.upstream_details_truncated = true
    }
  }
  details.upstream = String(input.route)
  details.upstream_status = upstreamStatus ?? null
  if (parsed.code !== undefined && parsed.code !== '') details.upstream_code = redactText(parsed.code)
  details.retryable = outcome.retryable
  if (retryAfterS !== undefined) details.retry_after_s = retryAfterS
  details.request_id = String(input.requestId)
  if (parsed.fieldErrors !== undefined) details.field_errors = boundedJson(parsed.fieldErrors)
  if (parsed.varName !== undefined) details.var_name = redactText(parsed.varName)
  Object.assign(details, upstreamBodyDetails(body))

  const upstreamMessage = parsed.message !== undefined ? redactText(collapse(parsed.message)) : ''
  const message = upstreamMessage !== '' ? upstreamMessage : defaultMessage(outcome.code, upstreamStatus)
  const result: NormalizedError = { status: outcome.status, envelope: envelope(outcome.code, message, details) }
  if (retryAfterS !== undefined) result.retryAfterS = retryAfterS
  if (pushback !== null) result.pushback = { kind: pushback.kind, delayMs: pushback.delayMs }
  return result
}

interface Outcome {
  status: number
  code: string
  /** Whether sending the same request again may succeed (without changing it). */
  retryable: boolean
}

// Envelope codes are kept only when they look like codes: a client must be able to
// switch on them, and a body must not smuggle prose or markup into `code`.
const KEEPABLE_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

function classifyStatus (status: number | undefined, parsed: ParsedError): Outcome {
  const kept = parsed.envelope === true && parsed.code !== undefined && KEEPABLE_CODE.test(parsed.code) ? parsed.code : undefined
  if (status === undefined || status < 400 || status > 599) return { status: 502, code: kept ?? 'BAD_GATEWAY', retryable: false }
  if (status === 408) return { status: 504, code: kept ?? 'UPSTREAM_TIMEOUT', retryable: true }
  if (status < 500) return { status, code: kept ?? parsed.sluiceCode ?? clientErrorCode(status, parsed), retryable: false }
  const gateway = GATEWAY_STATUSES[status]
  if (gateway !== undefined) return { ...gateway, code: kept ?? gateway.code }
  return { status: 502, code: kept ?? 'UPSTREAM_ERROR', retryable: false }
}

// Gateway failures, including Cloudflare's 52x family, which reports on the origin behind it.
const GATEWAY_STATUSES: Readonly<Record<number, Outcome>> = {
  502: { status: 502, code: 'BAD_GATEWAY', retryable: true },
  503: { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true },
  504: { status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  520: { status: 502, code: 'BAD_GATEWAY', retryable: true }, // unknown error from the origin
  521: { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true }, // origin is down
  522: { status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true }, // connect to origin timed out
  523: { status: 502, code: 'BAD_GATEWAY', retryable: true }, // origin unreachable
  524: { status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true }, // origin response timed out
  525: { status: 502, code: 'BAD_GATEWAY', retryable: false }, // TLS handshake failed
  526: { status: 502, code: 'BAD_GATEWAY', retryable: false } // invalid origin certificate
}

function clientErrorCode (status: number, parsed: ParsedError): ErrorCode {
  switch (status) {
    case 400: return hasEntries(parsed.fieldErrors) ? 'VALIDATION_ERROR' : 'BAD_REQUEST'
    case 401: return 'AUTH_FAILED'
    case 403: return 'FORBIDDEN'
    case 404:
    case 410: return 'NOT_FOUND'
    case 405: return 'METHOD_NOT_ALLOWED'
    case 409: return 'CONFLICT'
    case 413: return 'PAYLOAD_TOO_LARGE'
    case 422: return 'VALIDATION_ERROR'
    case 429: return 'RATE_LIMITED'
    default: return 'BAD_REQUEST'
  }
}

const DEFAULT_MESSAGES: Readonly<Record<string, string>> = {
  RATE_LIMITED: 'The upstream rate limit was reached',
  MAINTENANCE: 'The upstream is in maintenance',
  AUTH_FAILED: 'The upstream rejected the credentials',
  FORBIDDEN: 'The upstream refused access',
  NOT_FOUND: 'The upstream found no such resource',
  METHOD_NOT_ALLOWED: 'The upstream does not allow this method here',
  VALIDATION_ERROR: 'The upstream rejected the request data',
  CONFLICT: 'The upstream reported a conflict',
  PAYLOAD_TOO_LARGE: 'The upstream refused the request body as too large',
  BAD_GATEWAY: 'The upstream sent an invalid or failed response',
  UPSTREAM_UNAVAILABLE: 'The upstream is unavailable',
  UPSTREAM_TIMEOUT: 'The upstream timed out',
  UPSTREAM_ERROR: 'The upstream failed to process the request'
}

function defaultMessage (code: string, upstreamStatus: number | undefined): string {
  const text = DEFAULT_MESSAGES[code] ?? 'The upstream rejected the request'
  return upstreamStatus === undefined ? text : `${text} (HTTP ${upstreamStatus})`
}

// Old TestRail servers print this line before the JSON of every API response.
const TESTRAIL_AUTH_PREFIX = /^USER AUTHENTICATION SUCCESSFUL!\s*?\r?\n/i

/**
 * Decodes an error body for `Profile.parseError`: at most MAX_ERROR_BODY_BYTES, UTF-8,
 * BOM and TestRail's login banner removed, JSON parsed when it is JSON. Never throws.
 */
export function decodeErrorBody (raw: unknown): UpstreamBody {
  let text = ''
  if (Buffer.isBuffer(raw)) text = raw.subarray(0, MAX_ERROR_BODY_BYTES).toString('utf8')
  else if (typeof raw === 'string') text = raw.slice(0, MAX_ERROR_BODY_BYTES)
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  text = text.replace(TESTRAIL_AUTH_PREFIX, '')
  if (text.trim() === '') return { text: '', json: undefined, isJson: false }
  try {
    return { text, json: JSON.parse(text), isJson: true }
  } catch {
    return { text, json: undefined, isJson: false }
  }
}

function upstreamBodyDetails (body: UpstreamBody): Record<string, unknown> {
  if (body.isJson) {
    const kept = sanitize(body.json, 0)
    const serialized = JSON.stringify(kept) ?? ''
    if (serialized.length <= UPSTREAM_JSON_MAX_CHARS) return { upstream_body: kept }
    return { upstream_body: serialized.slice(0, UPSTREAM_BODY_MAX_CHARS), upstream_body_truncated: true }
  }
  const text = redactText(collapse(htmlToText(body.text)))
  if (text.length <= UPSTREAM_BODY_MAX_CHARS) return { upstream_body: text }
  return { upstream_body: text.slice(0, UPSTREAM_BODY_MAX_CHARS), upstream_body_truncated: true }
}

/**
 * Visible text of an HTML page (also fine on plain text). A linear scan rather than
 * regexes: unclosed tags or comments in 64 KiB of garbage must not cost quadratic time.
 */
export function htmlToText (text: string): string {
  if (!text.includes('<')) return text
  const lower = text.toLowerCase()
  let out = ''
  let i = 0
  while (i < text.length) {
    const open = text.indexOf('<', i)
    if (open < 0) {
      out += text.slice(i)
      break
    }
    out += text.slice(i, open) + ' '
    let skipTo: number
    if (lower.startsWith('<!--', open)) {
      const end = lower.indexOf('-->', open + 4)
      skipTo = end < 0 ? text.length : end + 3
    } else if (lower.startsWith('<script', open) || lower.startsWith('<style', open)) {
      const tag = lower.startsWith('<script', open) ? '</script' : '</style'
      const end = lower.indexOf(tag, open)
      const close = end < 0 ? -1 : lower.indexOf('>', end)
      skipTo = close < 0 ? text.length : close + 1
    } else {
      const close = text.indexOf('>', open)
      skipTo = close < 0 ? text.length : close + 1
    }
    i = skipTo
  }
  return out.replace(/&(nbsp|amp|lt|gt|quot|#39|apos);/g, (_, name: string) => ENTITIES[name] ?? ' ')
}

const ENTITIES: Readonly<Record<string, string>> = { nbsp: ' ', amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", apos: "'" }

function collapse (text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}

// Cheap credential scrubbing. Sluice never copies request headers into an envelope; this
// catches upstreams that echo a token back in their error text or JSON.
const SECRET_KEY = /pass(?:word|wd)?$|secret|token|api[_-]?key|authorization|cookie|credential|session/i
const SECRET_TEXT: ReadonlyArray<[RegExp, string]> = [
  [/\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}/gi, '$1 [redacted]'],
  [/\b((?:api[_-]?key|access[_-]?token|token|password|passwd|secret|authorization)["']?\s*[:=]\s*["']?)[^\s"'&,;]{4,}/gi, '$1[redacted]'],
  [/(\/\/[^/\s:@]{1,64}:)[^/\s@]{1,128}@/g, '$1[redacted]@'] // https://user:password@host
]
export const REDACTED = '[redacted]'

function redactText (text: string): string {
  let out = text
  for (const [pattern, replacement] of SECRET_TEXT) out = out.replace(pattern, replacement)
  return out
}

// Bounds for echoing upstream JSON: deep or wide structures are cut, not walked.
const MAX_DEPTH = 8
const MAX_ENTRIES = 100

/** Serialized characters up to which upstream details or field errors are copied whole. */
const DETAILS_MAX_CHARS = 8192

/** `sanitize`, and beyond DETAILS_MAX_CHARS the start of its JSON text: an envelope stays small. */
function boundedJson (value: unknown): unknown {
  const kept = sanitize(value, 0)
  const serialized = JSON.stringify(kept) ?? ''
  return serialized.length <= DETAILS_MAX_CHARS ? kept : serialized.slice(0, UPSTREAM_BODY_MAX_CHARS)
}

/** A bounded, JSON-safe, credential-scrubbed copy of upstream JSON. */
function sanitize (value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactText(value.length > UPSTREAM_JSON_MAX_CHARS ? value.slice(0, UPSTREAM_JSON_MAX_CHARS) : value)
  if (typeof value === 'number') return Number.isFinite(value) ? value : null
  if (typeof value === 'boolean' || value === null) return value
  if (depth >= MAX_DEPTH) return '[depth limit]'
  if (Array.isArray(value)) return value.slice(0, MAX_ENTRIES).map(item => sanitize(item, depth + 1))
  if (isObject(value)) {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).slice(0, MAX_ENTRIES)) {
      if (key === '__proto__') continue
      const item = value[key]
      out[key] = typeof item === 'string' && SECRET_KEY.test(key) ? REDACTED : sanitize(item, depth + 1)
    }
    return out
  }
  return null
}

function hasEntries (value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0
  return isObject(value) && Object.keys(value).length > 0
}

function isObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function finite (value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined
}

// Reached only if a bug above throws. Reads the input defensively: it may be anything.
function lastResort (input: unknown, err: unknown): NormalizedError {
  const field = (name: string): unknown => {
    try {
      return isObject(input) ? input[name] : undefined
    } catch {
      return undefined
    }
  }
  const status = field('status')
  const details: Record<string, unknown> = {
    upstream: safeString(field('route')),
    upstream_status: typeof status === 'number' && Number.isInteger(status) ? status : null,
    retryable: false,
    request_id: safeString(field('requestId')),
    normalizer_error: safeString(err instanceof Error ? err.message : err).slice(0, 200)
  }
  return { status: 502, envelope: envelope('UPSTREAM_ERROR', 'The upstream answered with an error Sluice could not read', details) }
}

function safeString (value: unknown): string {
  try {
    return String(value)
  } catch {
    return ''
  }
}

// --- Failures before or while receiving a response -----------------------------------

interface TransportRule {
  status: number
  code: ErrorCode
  retryable: boolean
  message: string
}

const TIMEOUT: TransportRule = { status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true, message: 'The upstream did not answer in time' }
// Connection refused is 503, not 502: nothing listens, the request provably never
// reached the upstream, so it is safe to retry for any method, like an upstream 503.
const REFUSED: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream refused the connection' }
const UNREACHABLE: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream host is unreachable' }
const DNS_FAILED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The upstream host name does not resolve' }
const DNS_TRY_AGAIN: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: true, message: 'The upstream host name could not be resolved right now' }
const TLS_FAILED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The TLS connection to the upstream failed' }
const RESET: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: true, message: 'The upstream closed the connection' }
const INVALID_RESPONSE: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The upstream sent an invalid HTTP response' }
const UNAVAILABLE: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream is unavailable' }
const UNKNOWN: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The request to the upstream failed' }

const TRANSPORT_RULES: Readonly<Record<string, TransportRule>> = {
  UND_ERR_HEADERS_TIMEOUT: TIMEOUT,
  UND_ERR_BODY_TIMEOUT: TIMEOUT,
  UND_ERR_CONNECT_TIMEOUT: TIMEOUT,
  ETIMEDOUT: TIMEOUT,
  ESOCKETTIMEDOUT: TIMEOUT,
  FST_REPLY_FROM_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP2_REQUEST_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP2_SESSION_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_GATEWAY_TIMEOUT: TIMEOUT,
  ECONNREFUSED: REFUSED,
  EHOSTUNREACH: UNREACHABLE,
  ENETUNREACH: UNREACHABLE,
  EHOSTDOWN: UNREACHABLE,
  ENETDOWN: UNREACHABLE,
  ENOTFOUND: DNS_FAILED,
  EAI_AGAIN: DNS_TRY_AGAIN,
  EPROTO: TLS_FAILED,
  DEPTH_ZERO_SELF_SIGNED_CERT: TLS_FAILED,
  SELF_SIGNED_CERT_IN_CHAIN: TLS_FAILED,
  HOSTNAME_MISMATCH: TLS_FAILED,
  ECONNRESET: RESET,
  EPIPE: RESET,
  ECONNABORTED: RESET,
  UND_ERR_SOCKET: RESET,
  UND_ERR_CLOSED: RESET,
  ERR_STREAM_PREMATURE_CLOSE: RESET,
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: RESET,
  FST_REPLY_FROM_SERVICE_UNAVAILABLE: UNAVAILABLE,
  FST_REPLY_FROM_BAD_GATEWAY: INVALID_RESPONSE
}

function transportRule (code: string, name: string): TransportRule | undefined {
  const rule = TRANSPORT_RULES[code]
  if (rule !== undefined) return rule
  // Node's TLS and OpenSSL errors come in families; one rule per prefix.
  if (/^(?:ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_(?:GET|VERIFY|DECRYPT))/.test(code)) return TLS_FAILED
  if (code.startsWith('HPE_')) return INVALID_RESPONSE // llhttp parser: the response was not HTTP
  if (name === 'TimeoutError') return TIMEOUT // AbortSignal.timeout()
  return undefined
}

/**
 * The envelope for a failure to get a response at all: a Node/undici error, or the error
 * @fastify/reply-from wraps around one (which hides the real code in `cause`, e.g. it
 * reports ECONNREFUSED as a 500 FST_REPLY_FROM_INTERNAL_SERVER_ERROR). The innermost
 * recognised cause decides. Status choices:
 * - timeouts → 504 UPSTREAM_TIMEOUT (retryable);
 * - ECONNREFUSED, host/network unreachable → 503 UPSTREAM_UNAVAILABLE (retryable: never reached the upstream);
 * - ENOTFOUND → 502 BAD_GATEWAY (not retryable: usually a wrong host); EAI_AGAIN → 502 (retryable);
 * - TLS failures → 502 BAD_GATEWAY (not retryable);
 * - ECONNRESET, EPIPE, UND_ERR_SOCKET → 502 BAD_GATEWAY (retryable; the upstream may have acted);
 * - anything else → 502 BAD_GATEWAY (not retryable).
 * `details.upstream_status` is null: no response was received.
 */
export function sluiceErrorFromTransport (err: unknown, route: string, requestId: string): NormalizedError {
  try {
    const chain = causeChain(err)
    const match = innermostTransport(chain)
    const transportCode = match?.code
    const chosen = match?.rule ?? UNKNOWN
    const details: Record<string, unknown> = {
      upstream: String(route),
      upstream_status: null,
      retryable: chosen.retryable,
      request_id: String(requestId)
    }
    const firstCode = chain.find(link => link.code !== '')?.code
    if (transportCode !== undefined || firstCode !== undefined) details.transport_code = transportCode ?? firstCode
    const innermost = chain[chain.length - 1]
    if (innermost !== undefined && innermost.message !== '') details.transport_message = redactText(innermost.message).slice(0, 200)
    return { status: chosen.status, envelope: envelope(chosen.code, chosen.message, details) }
  } catch (caught) {
    return lastResort({ route, requestId }, caught)
  }
}

/** True when the error, or one it wraps, is a failure to get (all of) a response, not a fault of Sluice's. */
export function isTransportError (err: unknown): boolean {
  try {
    return innermostTransport(causeChain(err)) !== undefined
  } catch {
    return false
  }
}

/** The innermost recognised cause decides: its rule, and its code (or name) for the details. */
function innermostTransport (chain: CauseLink[]): { rule: TransportRule, code: string } | undefined {
  for (let i = chain.length - 1; i >= 0; i--) {
    const link = chain[i]
    if (link === undefined) continue
    const rule = transportRule(link.code, link.name)
    if (rule !== undefined) return { rule, code: link.code !== '' ? link.code : link.name }
  }
  return undefined
}

interface CauseLink {
  code: string
  name: string
  message: string
}

/** The error and its causes, outermost first; AggregateError (Node's happy eyeballs) contributes its first error. */
function causeChain (err: unknown): CauseLink[] {
  const chain: CauseLink[] = []
  const seen = new Set<unknown>()
  let current: unknown = err
  while (isObjectLike(current) && !seen.has(current) && chain.length < 8) {
    seen.add(current)
    const code = current.code
    const name = current.name
    const message = current.message
    chain.push({
      code: typeof code === 'string' ? code : '',
      name: typeof name === 'string' ? name : '',
      message: typeof message === 'string' ? message : ''
    })
    const errors = current.errors
    current = current.cause ?? (Array.isArray(errors) ? errors[0] : undefined)
  }
  return chain
}

function isObjectLike (value: unknown): value is Record<string, unknown> {
  return (typeof value === 'object' && value !== null) || typeof value === 'function'
}
