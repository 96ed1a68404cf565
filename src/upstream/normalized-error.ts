// What normalizing an upstream's answer (or a failure to get one) produces, and the envelope of last
// resort when a bug in the normalizer throws: the response path must answer whatever happens.
import { envelope, type Envelope } from '../errors'
import { isRecord } from '../profiles/generic'
import type { Pushback, UpstreamNative } from '../profiles'

export interface NormalizedError {
  /** HTTP status for the client. */
  status: number
  /** Whole seconds for the client's Retry-After header; absent when unknown or retrying will not help. */
  retryAfterS?: number
  envelope: Envelope
  /**
   * Set when the upstream pushed back (rate limit, maintenance): the caller pauses the
   * route's bucket for `delayMs` (raw, unclamped; undefined when unknown) and may re-queue.
   */
  pushback?: Pushback
  /** What the upstream's own error body said that its clients read (profiles/native.ts adds it beside the envelope). */
  native?: UpstreamNative
}

// Reached only if a bug throws. Reads the input defensively: it may be anything.
export function lastResort (input: unknown, err: unknown): NormalizedError {
  const field = (name: string): unknown => {
    try {
      return isRecord(input) ? input[name] : undefined
    } catch {
      return undefined
    }
  }
  const status = field('status')
  const details: Record<string, unknown> = {
    upstream: safeString(field('route')),
    upstream_status: typeof status === 'number' && Number.isInteger(status) ? status : null,
    retryable: false,
    request_id: safeString(field('requestId')),
    normalizer_error: safeString(err instanceof Error ? err.message : err).slice(0, 200)
  }
  return { status: 502, envelope: envelope('UPSTREAM_ERROR', 'The upstream answered with an error Sluice could not read', details) }
}

function safeString (value: unknown): string {
  try {
    return String(value)
  } catch {
    return ''
  }
}
