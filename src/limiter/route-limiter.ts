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

/** Re-reservations a request may make after starting late, before it is forwarded late anyway. */
const MAX_LATE_RETRIES = 5

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
  /** Starts that came later than half the margin after their slot (see admit). */
  readonly stats = { lateRetries: 0, lateForwarded: 0 }

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
    const arrived = performance.now()
    const deadline = arrived + maxWaitMs
    // A request may leave at most half the margin after its slot; the other half absorbs the network.
    const toleranceMs = this.route.marginMs > 0 ? this.route.marginMs / 2 : Infinity
    for (let attempt = 0; ; attempt++) {
      const sentAt = performance.now()
      let reservation: Reservation
      try {
        reservation = await this.store.reserve(bucket, this.policy, cost, Math.max(0, deadline - sentAt))
      } catch (err) {
        throw new SluiceError('STORE_UNAVAILABLE', 503, 'the budget store is unreachable, so the request was not forwarded', this.details(bucket, { store: this.store.kind }), 1, { cause: err })
      }
      const receivedAt = performance.now()
      if (!reservation.admitted) {
        const ms = Math.ceil(reservation.waitMs)
        if (attempt === 0) {
          throw new SluiceError('RATE_LIMITED', 429, `the budget of ${this.route.name} has no room within the wait bound of ${Math.round(maxWaitMs)} ms; retry after ${retryAfterSeconds(ms)} s`,
            this.details(bucket, { retry_after_ms: ms, max_wait_ms: Math.round(maxWaitMs) }), retryAfterSeconds(ms))
        }
        throw new SluiceError('QUEUE_TIMEOUT', 503, `the request waited ${Math.round(receivedAt - arrived)} ms, but Sluice could not start it on time within its wait bound`,
          this.details(bucket, { retry_after_ms: ms, max_wait_ms: Math.round(maxWaitMs), late_starts: attempt }), retryAfterSeconds(ms))
      }
      // The slot in this process's clock: Redis ran the script somewhere between send and receipt.
      const slot = (sentAt + receivedAt) / 2 + reservation.waitMs
      if (slot > receivedAt) {
        this.lastStart.set(bucket, Date.now() + (slot - receivedAt))
        const started = await this.wait(bucket, slot - receivedAt, signal)
        if (!started) {
          await this.giveBack(bucket, reservation, cost)
          throw new ClientGoneError('client disconnected while waiting')
        }
      }
      const lateMs = performance.now() - slot
      // A start later than the tolerance (a busy event loop, a burst of arrivals being admitted) could
      // land in the next window at the upstream: give the slot up and reserve again, within the bound.
      if (lateMs <= toleranceMs || attempt >= MAX_LATE_RETRIES) {
        if (lateMs > toleranceMs) this.stats.lateForwarded++
        return { bucket, reservation, waitedMs: performance.now() - arrived }
      }
      this.stats.lateRetries++
      await this.giveBack(bucket, reservation, cost)
      if (signal.aborted) throw new ClientGoneError('client disconnected while waiting')
    }
  }

  private async wait (bucket: string, ms: number, signal: AbortSignal): Promise<boolean> {
    this.waiting.set(bucket, (this.waiting.get(bucket) ?? 0) + 1)
    try {
      return await sleep(ms, signal)
    } finally {
      const left = (this.waiting.get(bucket) ?? 1) - 1
      if (left <= 0) this.waiting.delete(bucket)
      else this.waiting.set(bucket, left)
    }
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
