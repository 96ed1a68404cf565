import { describeValue } from '../errors'
import { PROFILE_NAMES, type ProfileName } from '../profiles/profile'
import type { Arrival } from './arrival-log'

// Options of the emulated upstream, their defaults, and validation that names the option,
// the expected form and what was received. A bad option never starts a half-configured server.

/** The emulator mimics every API Sluice has a profile for. */
export const EMULATOR_PROFILES = PROFILE_NAMES
export type EmulatorProfile = ProfileName

export const RATE_LIMIT_HEADER_DRAFTS = ['draft-7', 'draft-8'] as const
export type RateLimitHeaderDraft = typeof RATE_LIMIT_HEADER_DRAFTS[number]

export interface FlakyOptions {
  /** Probability (0..1) per arrival of an nginx-style 502 HTML page. Default 0. */
  p502?: number
  /** Probability (0..1) per arrival of an nginx-style 503 HTML page, without Retry-After. Default 0. */
  p503?: number
  /** Probability (0..1) per arrival that the connection is reset (TCP RST) instead of answered. Default 0. */
  pReset?: number
  /** PRNG seed: the same seed gives the same outcome to the n-th arrival. Default 1. */
  seed?: number
}

export interface EmulatorOptions {
  /** Which API's rate-limit answers to mimic. Default 'testrail'. */
  profile?: EmulatorProfile
  /** At most `limit` accepted arrivals in any window of `windowMs`. Default 180 (TestRail Cloud). */
  limit?: number
  /** Sliding window length in ms. Default 60_000 (TestRail Cloud: 180 per minute). */
  windowMs?: number
  /** Send the API's own rate-limit headers on accepted responses (github, zulip, generic). Default false. */
  announce?: boolean
  /** Limit to announce in those headers when it should differ from (be lower than) `limit`. Default `limit`. */
  announceLimit?: number
  /** IETF RateLimit header syntax for the generic profile. Default 'draft-7'. */
  rateLimitHeaders?: RateLimitHeaderDraft
  /**
   * Testmo answers 429 without Retry-After; a client must then wait 60 s (60_000 ms, the real API's rule).
   * This is the delay the emulator considers "asked for" by such a 429 (see earlyAfterPushback). Default 60_000.
   */
  testmoPenaltyMs?: number
  /** Random gateway failures, reproducible by seed. Default none. */
  flaky?: FlakyOptions
  /** Delay in ms before every answer (accepted or not), after the body is read. Default 0. */
  latencyMs?: number
  /** Loopback address to bind. Default '127.0.0.1'. */
  host?: string
  /** Port to bind; 0 picks a free one. Default 0. */
  port?: number
  /** Called synchronously for every arrival, once its outcome is decided (for progress display). */
  onArrival?: (arrival: Arrival) => void
}

export interface ResolvedEmulatorOptions {
  profile: EmulatorProfile
  limit: number
  windowMs: number
  announce: boolean
  announceLimit: number
  rateLimitHeaders: RateLimitHeaderDraft
  testmoPenaltyMs: number
  flaky: Required<FlakyOptions>
  latencyMs: number
  host: string
  port: number
  onArrival: ((arrival: Arrival) => void) | undefined
}

export const EMULATOR_DEFAULTS = Object.freeze({
  profile: 'testrail' as EmulatorProfile,
  limit: 180,
  windowMs: 60_000,
  announce: false,
  rateLimitHeaders: 'draft-7' as RateLimitHeaderDraft,
  testmoPenaltyMs: 60_000,
  flaky: Object.freeze({ p502: 0, p503: 0, pReset: 0, seed: 1 }),
  latencyMs: 0,
  host: '127.0.0.1',
  port: 0
})

function fail (name: string, expected: string, value: unknown): never {
  throw new TypeError(`emulator option "${name}": expected ${expected}, received ${describeValue(value)}`)
}

function positiveInteger (name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) fail(name, 'a positive integer', value)
  return value
}

function nonNegativeNumber (name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) fail(name, 'a finite number >= 0', value)
  return value
}

function probability (name: string, value: unknown): number {
  if (value === undefined) return 0
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) fail(name, 'a probability between 0 and 1', value)
  return value
}

// Loopback only: the emulator is test and demo infrastructure, never a service on the network.
function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}

export function resolveEmulatorOptions (options: EmulatorOptions = {}): ResolvedEmulatorOptions {
  const d = EMULATOR_DEFAULTS
  const profile = options.profile ?? d.profile
  if (!(EMULATOR_PROFILES as readonly string[]).includes(profile)) fail('profile', `one of ${EMULATOR_PROFILES.join(', ')}`, profile)

  const limit = positiveInteger('limit', options.limit, d.limit)
  const windowMs = nonNegativeNumber('windowMs', options.windowMs, d.windowMs)
  if (windowMs === 0) fail('windowMs', 'a number of ms > 0', windowMs)

  const announceLimit = positiveInteger('announceLimit', options.announceLimit, limit)
  const rateLimitHeaders = options.rateLimitHeaders ?? d.rateLimitHeaders
  if (!(RATE_LIMIT_HEADER_DRAFTS as readonly string[]).includes(rateLimitHeaders)) {
    fail('rateLimitHeaders', `one of ${RATE_LIMIT_HEADER_DRAFTS.join(', ')}`, rateLimitHeaders)
  }

  const flakyIn = options.flaky ?? {}
  const flaky = {
    p502: probability('flaky.p502', flakyIn.p502),
    p503: probability('flaky.p503', flakyIn.p503),
    pReset: probability('flaky.pReset', flakyIn.pReset),
    seed: flakyIn.seed ?? d.flaky.seed
  }
  if (!Number.isInteger(flaky.seed)) fail('flaky.seed', 'an integer', flaky.seed)
  if (flaky.p502 + flaky.p503 + flaky.pReset > 1) {
    fail('flaky', 'p502 + p503 + pReset <= 1', flaky.p502 + flaky.p503 + flaky.pReset)
  }

  const host = options.host ?? d.host
  if (typeof host !== 'string' || !isLoopback(host)) fail('host', 'a loopback address (127.x.x.x, ::1 or localhost)', host)
  const port = options.port ?? d.port
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('port', 'an integer port between 0 and 65535', port)

  if (options.onArrival !== undefined && typeof options.onArrival !== 'function') fail('onArrival', 'a function', options.onArrival)

  return {
    profile,
    limit,
    windowMs,
    announce: options.announce ?? d.announce,
    announceLimit,
    rateLimitHeaders,
    testmoPenaltyMs: nonNegativeNumber('testmoPenaltyMs', options.testmoPenaltyMs, d.testmoPenaltyMs),
    flaky,
    latencyMs: nonNegativeNumber('latencyMs', options.latencyMs, d.latencyMs),
    host,
    port,
    onArrival: options.onArrival
  }
}
