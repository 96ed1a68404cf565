// Zulip. Errors are {"result": "error", "msg", "code", "var_name"?, "retry-after"?}.
// `msg` is translated, so only `code` is mapped; RATE_LIMIT_HIT can come with a status
// other than 429, and both the Retry-After header and the body's retry-after may be floats.

import { commonPushback, MAINTENANCE_DEFAULT_DELAY_MS, parseAnyError } from './generic'
import type { Profile } from './profile'

export const zulip: Profile = {
  name: 'zulip',
  parseError: parseAnyError,
  pushback: (status, headers, parsed, nowMs = Date.now()) => commonPushback(status, headers, parsed, nowMs, zulip.defaultDelayMs),
  // Zulip always states the delay; should it not, its limits are per-minute windows.
  defaultDelayMs: { rateLimited: 60_000, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
