// What an upstream's error status means for the client when the upstream did not push back: the
// status and code Sluice answers with, whether retrying may help, and the message when it gave none.
import type { ErrorCode } from '../errors'
import type { ParsedError } from '../profiles'

export interface Outcome {
  status: number
  code: string
  /** Whether sending the same request again may succeed (without changing it). */
  retryable: boolean
}

// Envelope codes are kept only when they look like codes: a client must be able to
// switch on them, and a body must not smuggle prose or markup into `code`.
const KEEPABLE_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

export function classifyStatus (status: number | undefined, parsed: ParsedError): Outcome {
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

function hasEntries (value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0
  return typeof value === 'object' && value !== null && Object.keys(value).length > 0
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

/** The message of an envelope whose upstream gave none. */
export function defaultMessage (code: string, upstreamStatus: number | undefined): string {
  const text = DEFAULT_MESSAGES[code] ?? 'The upstream rejected the request'
  return upstreamStatus === undefined ? text : `${text} (HTTP ${upstreamStatus})`
}
