// Graceful shutdown (SIGTERM, SIGINT): stop accepting, let what is in flight finish and what waits for
// its slot proceed, up to the drain timeout; then answer whatever still waits with 503 SHUTTING_DOWN
// (its reservation is given back by the limiter), wait for forwarded requests to end, close.
// Nothing is dropped without an answer.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { SluiceError } from '../errors'

declare module 'fastify' {
  interface FastifyInstance {
    /** The shutdown state of this instance (see shutdown.ts). */
    drain: Drain
  }
}

/** The abort reason of a wait cut short by shutdown (a client that leaves aborts with another). */
export const SHUTDOWN = Symbol('sluice shutdown')

/** What shutdown can cut short: a request's Cancel (or an AbortController). */
export interface Cancellable { abort: (reason?: unknown) => void }

export function shuttingDownError (details: Record<string, unknown> = {}): SluiceError {
  return new SluiceError('SHUTTING_DOWN', 503, 'this Sluice instance is shutting down and did not forward the request; send it again (to another instance, or after the restart)',
    details, 1)
}

export interface DrainResult {
  /** Requests still waiting for their slot when the drain timeout passed (answered 503 SHUTTING_DOWN). */
  cutShort: number
  /** Requests still open when the process gave up waiting for them (0 unless an upstream hangs). */
  abandoned: number
  drainMs: number
}

export class Drain {
  /** True from the moment shutdown starts: new requests are refused. */
  draining = false
  private waitersAborted = false
  private inFlight = 0
  private readonly waiters = new Set<Cancellable>()
  private readonly idleListeners = new Set<() => void>()

  /** Non-admin requests being handled right now (from their first byte to their response's end). */
  get active (): number {
    return this.inFlight
  }

  /** From the onRequest hook: count requests; during a drain, refuse new ones (throws). */
  readonly onRequest = (request: FastifyRequest, reply: FastifyReply): void => {
    const admin = (request.raw.url ?? '').startsWith('/_sluice/')
    if (this.draining) {
      reply.header('connection', 'close')
      // Load balancers watch readiness: say it is going away. Health (process alive) stays 200.
      if (admin && !request.url.startsWith('/_sluice/ready')) return
      throw shuttingDownError()
    }
    // Admin requests do not hold a shutdown back (an event stream never ends by itself).
    if (admin) return
    this.inFlight++
    reply.raw.once('close', () => {
      this.inFlight--
      if (this.inFlight === 0) for (const fn of this.idleListeners) fn()
    })
  }

  /**
   * Let shutdown abort a request's wait for its slot. Returns the function that stops tracking it.
   * After the drain timeout, a new wait is aborted at once.
   */
  track (controller: Cancellable): () => void {
    if (this.waitersAborted) {
      controller.abort(SHUTDOWN)
      return () => {}
    }
    this.waiters.add(controller)
    return () => { this.waiters.delete(controller) }
  }

  private abortWaiters (): number {
    this.waitersAborted = true
    const n = this.waiters.size
    // Newest first: a token bucket gives a reservation back only while it is the newest one, so
    // unwinding from the tail lets every waiter's slot go back (their release commands reach Redis in
    // this order); a sliding window takes them out wherever they are.
    for (const c of [...this.waiters].reverse()) c.abort(SHUTDOWN)
    this.waiters.clear()
    return n
  }

  /** Resolves true once no request is in flight, false when `ms` passed first. */
  private idle (ms: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer)
        this.idleListeners.delete(onIdle)
        resolve(ok)
      }
      const onIdle = (): void => done(true)
      const timer = setTimeout(() => done(false), ms)
      this.idleListeners.add(onIdle)
    })
  }

  /**
   * Run the drain: `stopAccepting` is called at once; waits for in-flight requests up to
   * `timeoutMs`, then cuts the waits short, then gives forwarded requests up to `graceMs` more (they
   * are bounded by their route's upstream timeout anyway). `hurry` resolving ends the drain early
   * (a second signal).
   */
  async run (opts: { timeoutMs: number, graceMs: number, stopAccepting: () => void, logger: Logger, hurry?: Promise<void> }): Promise<DrainResult> {
    const began = performance.now()
    this.draining = true
    opts.stopAccepting()
    opts.logger.info({ inFlight: this.inFlight, waiting: this.waiters.size, drainTimeoutMs: opts.timeoutMs }, 'draining: no new requests; waiting for in-flight ones')
    const drained = await Promise.race([this.idle(opts.timeoutMs), opts.hurry?.then(() => false) ?? new Promise<boolean>(() => {})])
    let cutShort = 0
    if (!drained) {
      cutShort = this.abortWaiters()
      opts.logger.warn({ cutShort, inFlight: this.inFlight }, 'drain timeout: requests still waiting for their slot are answered 503 SHUTTING_DOWN')
    }
    this.waitersAborted = true
    const finished = await this.idle(opts.graceMs)
    const result = { cutShort, abandoned: finished ? 0 : this.inFlight, drainMs: Math.round(performance.now() - began) }
    if (!finished) opts.logger.error(result, 'requests still open after the drain grace period; closing their connections')
    return result
  }
}
