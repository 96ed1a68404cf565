// GitHub-style APIs: {"message", "documentation_url", "errors": [...]}. A 403 (or 429)
// with `x-ratelimit-remaining: 0` or "rate limit" in the message is a rate limit, not a
// permission error. GitHub's guidance: honour Retry-After; else, if remaining is 0, wait
// until x-ratelimit-reset (epoch seconds); else wait at least one minute.

import { commonPushback, MAINTENANCE_DEFAULT_DELAY_MS, messageFields, parseAnyError } from './generic'
import type { Profile } from './profile'

export const github: Profile = {
  name: 'github',
  parseError: parseAnyError,
  // Its clients print the top-level `message` (the Testmo CLI: "Server response (403): …"; Octokit's RequestError).
  nativeFields: messageFields,
  pushback: (status, headers, parsed, nowMs = Date.now()) => commonPushback(status, headers, parsed, nowMs, github.defaultDelayMs),
  defaultDelayMs: { rateLimited: 60_000, maintenance: MAINTENANCE_DEFAULT_DELAY_MS }
}
