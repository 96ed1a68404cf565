// A profile is what Sluice knows about one upstream API's errors: how its error bodies
// look, which answers mean "back off", and how long to back off when it does not say.
// Adding an API is adding one module that implements `Profile`, plus its fixtures.

import type { ErrorCode } from '../errors'
import type { HeaderBag } from '../upstream/retry-after'

/** Every valid `profile` value of a route, the one list of them; `generic` is the default. */
export const PROFILE_NAMES = Object.freeze(['generic', 'testrail', 'testmo', 'zulip', 'github'] as const)
export type ProfileName = typeof PROFILE_NAMES[number]

/** An upstream error body, decoded once by the normalizer before any profile sees it. */
export interface UpstreamBody {
  /** UTF-8 text with a BOM and TestRail's `USER AUTHENTICATION SUCCESSFUL!` line removed; '' when empty. */
  text: string
  /** The parsed JSON when `text` is valid JSON; undefined otherwise (check `isJson`). */
  json: unknown
  isJson: boolean
}

/** What a profile reads out of an error body. Every field is optional: bodies lie, or are HTML. */
export interface ParsedError {
  /** The upstream's own machine-readable code (Zulip `code`, an envelope's `error.code`). */
  code?: string
  /** Human-readable message as the upstream wrote it. */
  message?: string
  /** Per-field errors: Testmo's `errors` object, GitHub's `errors` array, a TestRail field. */
  fieldErrors?: unknown
  /** Zulip's `var_name`: the request parameter at fault. */
  varName?: string
  /** An envelope upstream's `error.details`, kept as the upstream sent it. */
  details?: Record<string, unknown>
  /** GitHub's `documentation_url`: where the API explains this error. */
  documentationUrl?: string
  /** Seconds to wait, from the body (Zulip's `retry-after`, may be a float). */
  retryAfterS?: number
  /** True when the upstream speaks Sluice's own envelope: its code is kept as is. */
  envelope?: boolean
  /** The profile's reading of the error in Sluice's vocabulary, where the status alone would mislead. */
  sluiceCode?: ErrorCode
}

export interface Pushback {
  kind: 'rate_limited' | 'maintenance'
  /** Milliseconds to wait before the upstream accepts requests again; undefined when unknown. */
  delayMs: number | undefined
}

/** What the upstream's own error body said that its clients read, kept for the native fields (bounded, redacted). */
export interface UpstreamNative {
  /** The upstream's own code (Zulip's `code`); never an envelope upstream's code. */
  code?: string
  documentationUrl?: string
  /** The upstream's `errors` (Testmo's per-field object, GitHub's array), bounded. */
  errors?: unknown
  varName?: string
}

/** An error as a profile's native fields describe it: Sluice's own or an upstream's. */
export interface NativeError {
  /** Sluice's code (the envelope's `error.code`). */
  code: string
  /** The envelope's `error.message`: the upstream's own text for an upstream error. */
  message: string
  /** The HTTP status the client gets. */
  status: number
  /** The Retry-After the client gets, s. */
  retryAfterS?: number
  /** Set for an error the upstream answered. */
  upstream?: UpstreamNative
}

export interface Profile {
  readonly name: ProfileName
  /** Reads an error body. Must not throw; returns {} for a body it does not recognise. */
  parseError: (body: UpstreamBody) => ParsedError
  /**
   * Whether this answer is the upstream pushing back (rate limit, maintenance) rather
   * than refusing this one request; null when it is not. `nowMs` resolves HTTP-dates
   * and epoch resets; it defaults to the current time.
   */
  pushback: (status: number, headers: HeaderBag, parsed: ParsedError, nowMs?: number) => Pushback | null
  /**
   * The top-level fields this API's own clients read in an error body (its own error shape), added
   * beside the envelope's `success` and `error`, for upstream errors and Sluice's own alike. Must not
   * throw; never returns `success` or an `error` object (testrail's `error` is its message string).
   */
  nativeFields: (error: NativeError) => Record<string, unknown>
  /**
   * How carefully a learned limit probes back up (learned-limit.ts): windows without pushback before a
   * step, and the largest step. Unset: the defaults. An upstream whose repeated 429s escalate wants more.
   */
  readonly probe?: { readonly quietWindows: number, readonly maxStep: number }
  /** Milliseconds to wait when the upstream pushes back without saying how long. */
  readonly defaultDelayMs: {
    readonly rateLimited: number | undefined
    readonly maintenance: number | undefined
  }
}
