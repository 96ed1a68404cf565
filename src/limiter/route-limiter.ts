// Admission for one route: reserve a start time in the store (one round trip), refuse at once what
// could not start within the wait bound, and otherwise sleep on one local timer until the start.
import type { RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds } from '../errors'
import type { BucketPolicy, BucketStore, Reservation } from '../store/bucket-store'

export interface Admission {
  bucket: string
  reservation: Reservation
  /** ms actually spent waiting locally */
  waitedMs: number
}

/** Resolves true when the delay passed, false when `signal` fired first (the client left). */
function sleep (ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false)
    const onAbort = (): void => {
      clearTimeout(timer)
      resolve(false)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve(true)
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

export class ClientGoneError extends Error {
  override readonly name = 'ClientGoneError'
}

export class RouteLimiter {
  readonly route: RouteConfig
  readonly policy: BucketPolicy
  private readonly store: BucketStore
  /** Requests of this instance waiting per bucket (the maxQueue bound is per instance). */
  private readonly waiting = new Map<string, number>()
  /** Newest local start per bucket, ms since epoch, to give QUEUE_FULL a useful Retry-After. */
  private readonly lastStart = new Map<string, number>()

  constructor (route: RouteConfig, store: BucketStore) {
    this.route = route
    this.store = store
    this.policy = {
      algorithm: route.algorithm,
      limit: route.limit.count,
      windowMs: route.limit.windowMs,
      burst: route.burst,
      marginMs: route.marginMs
    }
  }

  queueDepth (bucket: string): number {
    return this.waiting.get(bucket) ?? 0
  }

  totalWaiting (): number {
    let n = 0
    for (const v of this.waiting.values()) n += v
    return n
  }

  private details (bucket: string, extra: Record<string, unknown>): Record<string, unknown> {
    return { upstream: this.route.name, bucket, limit: this.route.limit.count, window_s: this.route.limit.windowMs / 1000, ...extra }
  }

  /**
   * Wait for a start time, or throw a SluiceError (RATE_LIMITED, QUEUE_FULL, STORE_UNAVAILABLE) at once,
   * or ClientGoneError when `signal` fires while waiting (the reservation is then given back if possible).
   */
  async admit (bucket: string, maxWaitMs: number, signal: AbortSignal, cost = 1): Promise<Admission> {
    const depth = this.queueDepth(bucket)
    if (depth >= this.route.maxQueue) {
      const aheadMs = Math.max(0, (this.lastStart.get(bucket) ?? Date.now()) - Date.now())
      throw new SluiceError('QUEUE_FULL', 429, `${depth} requests of bucket ${bucket} are already waiting in this instance (maxQueue ${this.route.maxQueue})`,
        this.details(bucket, { queue_depth: depth, max_queue: this.route.maxQueue, retry_after_ms: Math.round(aheadMs) }), retryAfterSeconds(aheadMs))
    }
    let reservation: Reservation
    try {
      reservation = await this.store.reserve(bucket, this.policy, cost, maxWaitMs)
    } catch (err) {
      throw new SluiceError('STORE_UNAVAILABLE', 503, 'the budget store is unreachable, so the request was not forwarded', this.details(bucket, { store: this.store.kind }), 1, { cause: err })
    }
    if (!reservation.admitted) {
      const ms = Math.ceil(reservation.waitMs)
      throw new SluiceError('RATE_LIMITED', 429, `the budget of ${this.route.name} has no room within the wait bound of ${Math.round(maxWaitMs)} ms; retry after ${retryAfterSeconds(ms)} s`,
        this.details(bucket, { retry_after_ms: ms, max_wait_ms: Math.round(maxWaitMs) }), retryAfterSeconds(ms))
    }
    if (reservation.waitMs <= 0) return { bucket, reservation, waitedMs: 0 }

    this.lastStart.set(bucket, Date.now() + reservation.waitMs)
    this.waiting.set(bucket, depth + 1)
    const began = performance.now()
    let started: boolean
    try {
      started = await sleep(reservation.waitMs, signal)
    } finally {
      const left = (this.waiting.get(bucket) ?? 1) - 1
      if (left <= 0) this.waiting.delete(bucket)
      else this.waiting.set(bucket, left)
    }
    if (!started) {
      await this.giveBack(bucket, reservation, cost)
      throw new ClientGoneError('client disconnected while waiting')
    }
    return { bucket, reservation, waitedMs: performance.now() - began }
  }

  /** Give a reservation back (best effort: only the newest one can be, and a store error is ignored). */
  async giveBack (bucket: string, reservation: Reservation, cost = 1): Promise<boolean> {
    if (reservation.ticket === undefined) return false
    try {
      return await this.store.release(bucket, this.policy, cost, reservation.ticket)
    } catch {
      return false
    }
  }
}
