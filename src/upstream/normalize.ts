// Turns whatever an upstream answered into Sluice's one error envelope, so a client needs one error
// handler for every API behind the proxy. Runs on the response path: it must never throw, whatever
// bytes arrive. Failures to get an answer at all are transport-error.ts's.

import { envelope, retryAfterSeconds } from '../errors'
import { getProfile, type ParsedError, type ProfileName, type UpstreamNative } from '../profiles'
import { isRecord } from '../profiles/generic'
import { redactText } from '../secrets'
import { lastResort, type NormalizedError } from './normalized-error'
import { clampDelayMs, upstreamDelayMs, type HeaderBag } from './retry-after'
import { classifyStatus, defaultMessage, type Outcome } from './status-outcome'
import { boundedJson, collapse, decodeErrorBody, upstreamBodyDetails } from './upstream-body'

export type { NormalizedError } from './normalized-error'
export { isTransportError, sluiceErrorFromTransport } from './transport-error'
export { decodeErrorBody, htmlToText, MAX_ERROR_BODY_BYTES, UPSTREAM_BODY_MAX_CHARS, UPSTREAM_JSON_MAX_CHARS } from './upstream-body'

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
  const headers: HeaderBag = isRecord(input.headers) ? input.headers : {}
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
    if (isRecord(kept)) {
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
  const field = fieldNamed(parsed)
  if (field !== undefined) details.field = redactText(field)
  Object.assign(details, upstreamBodyDetails(body))

  const upstreamMessage = parsed.message !== undefined ? redactText(collapse(parsed.message)) : ''
  const message = upstreamMessage !== '' ? upstreamMessage : defaultMessage(outcome.code, upstreamStatus)
  const result: NormalizedError = { status: outcome.status, envelope: envelope(outcome.code, message, details) }
  if (retryAfterS !== undefined) result.retryAfterS = retryAfterS
  if (pushback !== null) result.pushback = { kind: pushback.kind, delayMs: pushback.delayMs }
  result.native = upstreamNative(parsed, details.field_errors)
  return result
}

/** What the upstream's body said that its own clients read, bounded and redacted as `details` are. */
function upstreamNative (parsed: ParsedError, fieldErrors: unknown): UpstreamNative {
  const native: UpstreamNative = {}
  // An envelope upstream's code is Sluice's vocabulary, not the API's own.
  if (parsed.code !== undefined && parsed.code !== '' && parsed.envelope !== true) native.code = redactText(parsed.code)
  if (parsed.documentationUrl !== undefined) native.documentationUrl = redactText(parsed.documentationUrl)
  if (fieldErrors !== undefined) native.errors = fieldErrors
  if (parsed.varName !== undefined) native.varName = redactText(parsed.varName)
  return native
}

/**
 * The one request field an error names, if it names one: TestRail's "Field :run_id …", Zulip's
 * var_name, or a per-field error object (Testmo, Laravel-style) with a single field. Several fields
 * are in field_errors; a field name longer than 100 characters is not a field name.
 */
function fieldNamed (parsed: ParsedError): string | undefined {
  if (parsed.varName !== undefined && parsed.varName !== '') return parsed.varName.slice(0, 100)
  const errors = parsed.fieldErrors
  if (errors === null || typeof errors !== 'object' || Array.isArray(errors)) return undefined
  const names = Object.keys(errors)
  return names.length === 1 && names[0].length <= 100 ? names[0] : undefined
}

function finite (value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined
}
