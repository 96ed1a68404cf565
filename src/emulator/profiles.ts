// How each emulated API says "too many requests" and how it announces its limit on accepted answers.
// One small object per API; the bodies and headers follow what the real services send (see issue 3).
import type { EmulatorProfile, RateLimitHeaderDraft } from './options'

/** The window as one answer sees it. Times are epoch ms; durations ms. */
export interface WindowState {
  now: number
  limit: number
  announcedLimit: number
  windowMs: number
  /** Accepted arrivals in the window ending now (including this one when it was accepted). */
  used: number
  /** Until the enforced limit has room for one more arrival. */
  msUntilFree: number
  /** Until the announced limit has room again (or the oldest arrival leaves, when it already has). */
  announcedResetMs: number
  testmoPenaltyMs: number
  announce: boolean
  draft: RateLimitHeaderDraft
}

/** What an answer tells the client to wait: relative to the moment it is sent, or until an epoch time. */
export type AskedDelay = { afterMs: number } | { untilEpochMs: number }

export interface Reply {
  status: number
  headers: Record<string, string>
  body: string
  asks?: AskedDelay
}

export interface EmulatedProfile {
  /** The answer to an arrival over the limit. */
  limited: (s: WindowState) => Reply
  /** Rate-limit headers on an accepted answer when `announce` is on. */
  announce: (s: WindowState) => Record<string, string>
}

const JSON_TYPE = { 'content-type': 'application/json; charset=utf-8' }

/** Integer seconds for Retry-After, rounded up and never 0 (RFC 9110 delay-seconds). */
function wholeSeconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

function remaining (s: WindowState): number {
  return Math.max(0, s.announcedLimit - s.used)
}

function epochSecondsAfter (s: WindowState, ms: number): number {
  return Math.ceil((s.now + ms) / 1000)
}

// TestRail Cloud: 180 per minute; the text always says "per minute" even when tests scale the window.
const testrail: EmulatedProfile = {
  limited (s) {
    const seconds = wholeSeconds(s.msUntilFree)
    return {
      status: 429,
      headers: { ...JSON_TYPE, 'retry-after': String(seconds) },
      body: JSON.stringify({ error: `API Rate Limit Exceeded - ${s.limit} per minute maximum allowed. Retry after ${seconds} seconds.` }),
      asks: { afterMs: seconds * 1000 }
    }
  },
  announce: () => ({})
}

function zulipHeaders (s: WindowState, left: number): Record<string, string> {
  return {
    'x-ratelimit-limit': String(s.announcedLimit),
    'x-ratelimit-remaining': String(left),
    // Zulip: epoch seconds at which the window resets.
    'x-ratelimit-reset': String(epochSecondsAfter(s, s.announcedResetMs))
  }
}

// Zulip: float seconds in both the Retry-After header and the body's "retry-after".
const zulip: EmulatedProfile = {
  limited (s) {
    const seconds = Math.max(1, Math.ceil(s.msUntilFree)) / 1000
    return {
      status: 429,
      headers: { ...JSON_TYPE, 'retry-after': String(seconds), ...(s.announce ? zulipHeaders(s, 0) : {}) },
      body: JSON.stringify({ result: 'error', msg: 'API usage exceeded rate limit', code: 'RATE_LIMIT_HIT', 'retry-after': seconds }),
      asks: { afterMs: seconds * 1000 }
    }
  },
  announce: (s) => zulipHeaders(s, remaining(s))
}

// Testmo (Laravel throttle): no Retry-After; the documented rule is to wait 60 s (testmoPenaltyMs here).
const testmo: EmulatedProfile = {
  limited (s) {
    return {
      status: 429,
      headers: { ...JSON_TYPE },
      body: JSON.stringify({ message: 'Too Many Attempts.' }),
      asks: { afterMs: s.testmoPenaltyMs }
    }
  },
  announce: () => ({})
}

function githubHeaders (s: WindowState, left: number, resetMs: number): Record<string, string> {
  return {
    'x-ratelimit-limit': String(s.announcedLimit),
    'x-ratelimit-remaining': String(left),
    // GitHub: epoch seconds, not a delta.
    'x-ratelimit-reset': String(epochSecondsAfter(s, resetMs)),
    'x-ratelimit-used': String(s.used),
    'x-ratelimit-resource': 'core'
  }
}

// GitHub primary limit: 403 (not 429), remaining 0, reset as epoch seconds; no Retry-After.
const github: EmulatedProfile = {
  limited (s) {
    const resetS = epochSecondsAfter(s, s.msUntilFree)
    return {
      status: 403,
      headers: { ...JSON_TYPE, ...githubHeaders(s, 0, s.msUntilFree) },
      body: JSON.stringify({
        message: 'API rate limit exceeded for user ID 1.',
        documentation_url: 'https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting'
      }),
      asks: { untilEpochMs: resetS * 1000 }
    }
  },
  announce: (s) => githubHeaders(s, remaining(s), s.announcedResetMs)
}

// IETF RateLimit headers. `w` and `reset`/`t` are whole seconds: a sub-second window is announced as 1 s.
function ietfHeaders (s: WindowState, left: number, resetMs: number): Record<string, string> {
  const windowS = wholeSeconds(s.windowMs)
  const resetS = Math.ceil(resetMs / 1000)
  if (s.draft === 'draft-8') {
    return {
      'ratelimit-policy': `"default";q=${s.announcedLimit};w=${windowS}`,
      ratelimit: `"default";r=${left};t=${resetS}`
    }
  }
  return {
    'ratelimit-policy': `${s.announcedLimit};w=${windowS}`,
    ratelimit: `limit=${s.announcedLimit}, remaining=${left}, reset=${resetS}`
  }
}

const generic: EmulatedProfile = {
  limited (s) {
    const seconds = wholeSeconds(s.msUntilFree)
    return {
      status: 429,
      headers: { ...JSON_TYPE, 'retry-after': String(seconds), ...(s.announce ? ietfHeaders(s, 0, s.msUntilFree) : {}) },
      body: JSON.stringify({ error: 'rate_limited', message: `Too many requests. Retry after ${seconds} seconds.`, retry_after: seconds }),
      asks: { afterMs: seconds * 1000 }
    }
  },
  announce: (s) => ietfHeaders(s, remaining(s), s.announcedResetMs)
}

export const PROFILES: Readonly<Record<EmulatorProfile, EmulatedProfile>> = Object.freeze({ testrail, zulip, testmo, github, generic })

/**
 * TestRail Cloud's daily maintenance: 409 (not a conflict), whatever profile is emulated.
 * `remainingMs` is how long maintenance lasts from now; Retry-After is sent only when asked to.
 */
export function maintenanceReply (remainingMs: number, withRetryAfter: boolean): Reply {
  const body = JSON.stringify({ error: 'TestRail is currently undergoing maintenance. Please try again in a few minutes.' })
  if (!withRetryAfter) return { status: 409, headers: { ...JSON_TYPE }, body }
  const seconds = wholeSeconds(remainingMs)
  return { status: 409, headers: { ...JSON_TYPE, 'retry-after': String(seconds) }, body, asks: { afterMs: seconds * 1000 } }
}
