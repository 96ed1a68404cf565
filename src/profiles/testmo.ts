// Testmo. Errors are {"message": "...", "errors": {"field": ["..."]}} with 401, 403, 404,
// 405 (wrong method), 422 (invalid data) and 429; a 429 without Retry-After means the
// client must wait at least 60 s (Testmo's API documentation).

import { commonPushback, MAINTENANCE_DEFAULT_DELAY_MS, messageFields, parseAnyError } from './generic'
import type { Profile } from './profile'

export const testmo: Profile = {
  name: 'testmo',
  parseError: parseAnyError,
  // Its clients print the top-level `message` (the Testmo CLI: "Server response (403): …"; Octokit's RequestError).
  nativeFields: messageFields,
  pushback: (status, headers, parsed, nowMs = Date.now()) => commonPushback(status, headers, parsed, nowMs, testmo.defaultDelayMs),
  // Repeated 429s lock a client out for longer: a learned limit probes up by one, after 20 quiet windows.
  probe: { quietWindows: 20, maxStep: 1 },
  defaultDelayMs: { rateLimited: 60_000, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
