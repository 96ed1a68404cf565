// Whether a failed attempt upstream is sent again, and why not when it is not: a pure function of
// what failed, the method, the attempts so far and the route's settings. Pushback (429, maintenance)
// means the upstream did not act, so any method may be sent again; a transient failure (refused,
// reset, 502, 503, 504) only where the method is safe to repeat or the request never left.

/** Methods that may be sent twice without doing twice what they do (RFC 9110 §9.2.2), TRACE aside. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'])
/** Full-jitter backoff of transient retries: a random wait in [0, min(cap, base × 2^n)) ms. */
export const BACKOFF_BASE_MS = 100
export const BACKOFF_CAP_MS = 5_000
/** A request is sent at most this often after pushback, whatever its wait bound (a runaway guard). */
export const MAX_PUSHBACK_RETRIES = 20
const TRANSIENT_STATUSES: ReadonlySet<number> = new Set([502, 503, 504])
// Failures before the request reached the upstream: safe to send again whatever the method.
const NEVER_SENT: ReadonlySet<string> = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])

export type RetryKind = 'pushback' | 'transient'

/** What went wrong with one attempt. */
export type Failure =
  /** The upstream pushed back (429, maintenance): the bucket is paused. */
  | { kind: 'pushback' }
  /** The upstream answered an error status; `retryable` as its normalized envelope says. */
  | { kind: 'status', status: number, retryable: boolean }
  /** No answer (refused, reset, timeout): the normalized envelope's code, retryable and transport code. */
  | { kind: 'transport', code: string, retryable: boolean, transportCode: string }

export interface RetryContext {
  /** The request's method, upper case. */
  method: string
  /** mode: shadow routes only measure: nothing is sent twice. */
  shadow: boolean
  /** The route's `retries`: transient retries allowed per request. */
  retries: number
  /** The route's `retryMethods`: methods retried after a transient failure although not idempotent. */
  retryMethods: readonly string[]
  pushbackRetries: number
  transientRetries: number
  /** Why the request body cannot be sent again (it was streamed); undefined when it can. */
  bodyBlocker: string | undefined
}

/**
 * Send again (as `retry`), or not: then `skipped` says why, for a failure that could otherwise have
 * been retried (the envelope's retry_skipped), and is undefined for one that never is.
 */
export type RetryDecision = { retry: RetryKind } | { retry: false, skipped?: string }

export function retryDecision (failure: Failure, ctx: RetryContext): RetryDecision {
  if (failure.kind === 'pushback') {
    const skipped = ctx.shadow
      ? 'shadow route'
      : ctx.pushbackRetries >= MAX_PUSHBACK_RETRIES ? `sent ${MAX_PUSHBACK_RETRIES} times after pushback already` : ctx.bodyBlocker
    return skipped === undefined ? { retry: 'pushback' } : { retry: false, skipped }
  }
  let neverSent = false
  if (failure.kind === 'status') {
    if (!TRANSIENT_STATUSES.has(failure.status) || !failure.retryable) return { retry: false }
  } else {
    neverSent = NEVER_SENT.has(failure.transportCode)
    // A response timeout is not retried: the attempt already took the whole timeout.
    if (!failure.retryable || (failure.code === 'UPSTREAM_TIMEOUT' && !neverSent)) return { retry: false }
  }
  const skipped = transientBlocker(neverSent, ctx)
  return skipped === undefined ? { retry: 'transient' } : { retry: false, skipped }
}

/** Why a transient failure is not retried; undefined when it is. */
function transientBlocker (neverSent: boolean, ctx: RetryContext): string | undefined {
  if (ctx.shadow) return 'shadow route'
  if (ctx.transientRetries >= ctx.retries) return ctx.retries === 0 ? 'retries: 0 on this route' : `retried ${ctx.retries} times already (retries)`
  if (!neverSent && !IDEMPOTENT_METHODS.has(ctx.method) && !ctx.retryMethods.includes(ctx.method)) {
    return `${ctx.method} is not idempotent and not in this route's retryMethods`
  }
  return ctx.bodyBlocker
}

/** The wait before a transient retry, ms, for `random` in [0, 1) (full jitter). */
export function backoffMs (transientRetries: number, random: number): number {
  return random * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** transientRetries)
}

/**
 * Whether a retry that waits `waitMs` first still starts within the request's wait bound; a retry
 * that cannot is skipped with `OUT_OF_TIME[kind]`.
 */
export function inTime (waitMs: number, timeLeftMs: number): boolean {
  return waitMs < timeLeftMs
}

/** Why a retry allowed by retryDecision was not sent after all: the wait bound ran out first. */
export const OUT_OF_TIME: Readonly<Record<RetryKind, string>> = {
  pushback: 'the pause ends after the request\'s wait bound',
  transient: 'no time left within the request\'s wait bound'
}
