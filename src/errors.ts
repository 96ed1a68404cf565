// The one error vocabulary of Sluice. Clients branch on `code`, never on `message`.
// Every error that leaves Sluice, its own or an upstream's, is an Envelope.

export const ERROR_CODES = [
  'RATE_LIMITED',
  'QUEUE_FULL',
  'QUEUE_TIMEOUT',
  'MAINTENANCE',
  'AUTH_FAILED',
  'AUTH_EXPIRED',
  'INVALID_API_KEY',
  'FORBIDDEN',
  'NOT_FOUND',
  'ROUTE_NOT_FOUND',
  'METHOD_NOT_ALLOWED',
  'VALIDATION_ERROR',
  'MALFORMED_JSON',
  'CONFLICT',
  'PAYLOAD_TOO_LARGE',
  'UPSTREAM_ERROR',
  'BAD_GATEWAY',
  'UPSTREAM_UNAVAILABLE',
  'UPSTREAM_TIMEOUT',
  'STORE_UNAVAILABLE',
  'BAD_REQUEST',
  'INTERNAL_ERROR',
  'SHUTTING_DOWN',
  'REQUEST_TIMEOUT',
  'HEADERS_TOO_LARGE',
  'ADMIN_AUTH_REQUIRED'
] as const

export type ErrorCode = typeof ERROR_CODES[number]

export interface Envelope {
  success: false
  error: {
    code: string
    message: string
    details: Record<string, unknown>
  }
}

/** An error Sluice itself answers with; `status` is the HTTP status the client gets. */
export class SluiceError extends Error {
  override readonly name = 'SluiceError'
  readonly code: ErrorCode
  readonly status: number
  readonly details: Record<string, unknown>
  /** Seconds, rounded up, for the Retry-After header; undefined when retrying will not help. */
  readonly retryAfterS: number | undefined

  constructor (code: ErrorCode, status: number, message: string, details: Record<string, unknown> = {}, retryAfterS?: number, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.status = status
    this.details = details
    this.retryAfterS = retryAfterS
  }

  toEnvelope (): Envelope {
    return envelope(this.code, this.message, this.details)
  }
}

export function envelope (code: string, message: string, details: Record<string, unknown> = {}): Envelope {
  return { success: false, error: { code, message, details } }
}

/** Retry-After must be a non-negative integer of seconds (RFC 9110); never round a wait down to 0. */
export function retryAfterSeconds (ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000))
}

// Internal errors: thrown between Sluice's own modules and turned into a SluiceError, an exit status
// or a log line at the edge; never sent to a client as they are.

/**
 * A received value for an error message that says what was expected and what was received: JSON
 * (strings quoted, objects spelled out), numbers as JavaScript writes them (NaN, Infinity), and its type.
 */
export function describeValue (value: unknown): string {
  let shown: string | undefined
  try {
    shown = typeof value === 'number' ? String(value) : JSON.stringify(value)
  } catch {}
  return `${shown ?? String(value)} (${value === null ? 'null' : typeof value})`
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  readonly field: string
  constructor (field: string, problem: string) {
    super(`config error: ${field}: ${problem}`)
    this.field = field
  }
}

export class StatusUsageError extends Error {
  override readonly name = 'StatusUsageError'
}

export class UnreachableError extends Error {
  override readonly name = 'UnreachableError'
}

export class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError'
}

export class LeaseTimeoutError extends Error {
  override readonly name = 'LeaseTimeoutError'
  /** ms until the earliest lease would expire, for Retry-After */
  readonly retryInMs: number
  constructor (retryInMs: number) {
    super('no concurrency slot became free within the wait bound')
    this.retryInMs = retryInMs
  }
}

export class LeaseAbortedError extends Error {
  override readonly name = 'LeaseAbortedError'
}

export class StoreTimeoutError extends Error {
  override readonly name = 'StoreTimeoutError'
}
