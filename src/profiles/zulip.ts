// Zulip. Errors are {"result": "error", "msg", "code", "var_name"?, "retry-after"?}.
// `msg` is translated, so only `code` is mapped; RATE_LIMIT_HIT can come with a status
// other than 429, and both the Retry-After header and the body's retry-after may be floats.

import { commonPushback, MAINTENANCE_DEFAULT_DELAY_MS, parseAnyError } from './generic'
import type { NativeError, Profile } from './profile'

/** Zulip codes are upper-case words (RATE_LIMIT_HIT, BAD_REQUEST…). */
const ZULIP_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/**
 * The nearest Zulip code for a Sluice code, for errors Zulip did not answer itself (Sluice's own, or
 * an upstream's without a Zulip code). Zulip's own default for a refused request is BAD_REQUEST.
 */
const NEAREST_ZULIP_CODE: Readonly<Record<string, string>> = {
  RATE_LIMITED: 'RATE_LIMIT_HIT',
  QUEUE_FULL: 'RATE_LIMIT_HIT',
  QUEUE_TIMEOUT: 'RATE_LIMIT_HIT',
  INVALID_API_KEY: 'INVALID_API_KEY',
  AUTH_FAILED: 'UNAUTHORIZED',
  AUTH_EXPIRED: 'UNAUTHORIZED',
  FORBIDDEN: 'ACCESS_DENIED',
  MALFORMED_JSON: 'INVALID_JSON',
  REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  MAINTENANCE: 'SERVER_NOT_READY',
  UPSTREAM_UNAVAILABLE: 'SERVER_NOT_READY',
  STORE_UNAVAILABLE: 'SERVER_NOT_READY',
  SHUTTING_DOWN: 'SERVER_NOT_READY'
}

/** Zulip's error body: {"result": "error", "msg", "code", "var_name"?, "retry-after"?}. */
function nativeFields (error: NativeError): Record<string, unknown> {
  const own = error.upstream?.code
  const varName = error.upstream?.varName
  let code = own !== undefined && ZULIP_CODE.test(own) ? own : NEAREST_ZULIP_CODE[error.code]
  if (code === undefined) code = error.code === 'VALIDATION_ERROR' && varName !== undefined ? 'REQUEST_VARIABLE_INVALID' : 'BAD_REQUEST'
  const fields: Record<string, unknown> = { result: 'error', msg: error.message, code }
  if (varName !== undefined) fields.var_name = varName
  // Zulip states the wait of a RATE_LIMIT_HIT in the body too; zulip clients read it there.
  if (code === 'RATE_LIMIT_HIT' && error.retryAfterS !== undefined) fields['retry-after'] = error.retryAfterS
  return fields
}

export const zulip: Profile = {
  name: 'zulip',
  parseError: parseAnyError,
  nativeFields,
  pushback: (status, headers, parsed, nowMs = Date.now()) => commonPushback(status, headers, parsed, nowMs, zulip.defaultDelayMs),
  // Zulip always states the delay; should it not, its limits are per-minute windows.
  defaultDelayMs: { rateLimited: 60_000, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
