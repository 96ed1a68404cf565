// TestRail (Cloud and Server). Errors are {"error": "..."}; a 429 carries an integer
// Retry-After and says "Retry after N seconds." in the text; a 409 on TestRail Cloud is the
// daily maintenance window, not a conflict; 400 covers both a missing entity and a bad body.

import { commonPushback, delayOrDefaultMs, MAINTENANCE_DEFAULT_DELAY_MS, parseAnyError } from './generic'
import type { ParsedError, Profile } from './profile'

// "Field :project_id is not a valid or accessible project."
const FIELD_ERROR = /^Field\s*:(\w{1,64})\b/
const JSON_ERROR = /\b(?:invalid|malformed|bad|unknown)\b.{0,40}\bjson\b|\bjson\b.{0,40}\b(?:invalid|malformed|parse)/i

function parseError (body: Parameters<Profile['parseError']>[0]): ParsedError {
  const parsed = parseAnyError(body)
  if (parsed.message === undefined || parsed.envelope === true) return parsed
  const field = FIELD_ERROR.exec(parsed.message)?.[1]
  if (field !== undefined) return { ...parsed, fieldErrors: { [field]: [parsed.message] }, sluiceCode: 'VALIDATION_ERROR' }
  if (JSON_ERROR.test(parsed.message)) return { ...parsed, sluiceCode: 'MALFORMED_JSON' }
  return parsed
}

export const testrail: Profile = {
  name: 'testrail',
  parseError,
  // TestRail's own body is {"error": "<text>"}: a string where the envelope's `error` is an object
  // ({code, message, details}), and the envelope is kept as it is. So no field is added: a TestRail
  // client finds the text at error.message; a route with `errors: upstream` passes TestRail's own
  // error bodies through untouched for clients that need the bare string.
  nativeFields: () => ({}),
  pushback: (status, headers, parsed, nowMs = Date.now()) => {
    if (status === 409) return { kind: 'maintenance', delayMs: delayOrDefaultMs(headers, parsed, nowMs, testrail.defaultDelayMs.maintenance) }
    return commonPushback(status, headers, parsed, nowMs, testrail.defaultDelayMs)
  },
  // A 429 normally states its delay; without one, a full window of the per-minute limit
  // (60 s) is the wait that surely clears it.
  defaultDelayMs: { rateLimited: 60_000, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
