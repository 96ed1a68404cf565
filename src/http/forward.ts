// Listening to the upstream: one client request may take several attempts upstream. Each attempt is
// admitted by the limiter (a retry takes budget like any request). Pushback (429, maintenance)
// pauses the bucket in the shared store (upstream-signals.ts), so every instance holds back, and the
// request is sent again once the pause is over, if the client's wait bound allows. Transient failures
// are retried with backoff where retry-policy.ts allows. Success responses stream through; their
// rate-limit headers steer the bucket.
import { Readable } from 'node:stream'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds, ClientGoneError } from '../errors'
import { sleep, type Cancel } from '../limiter/cancel'
import type { RouteLimiter } from '../limiter/route-limiter'
import type { UpstreamSignals } from '../limiter/upstream-signals'
import { MAX_ERROR_BODY_BYTES, normalizeUpstreamError, sluiceErrorFromTransport, type NormalizedError } from '../upstream/normalize'
import { sendError } from './error-reply'
import { replayBody } from './request-body'
import type { RequestState } from './request-state'
import { OUT_OF_TIME, backoffMs, inTime, retryDecision, type Failure, type RetryDecision, type RetryKind } from './retry-policy'
import { SHUTDOWN, shuttingDownError } from './shutdown'
import { clearUpstreamHeaders, concatRest, decodeBody, readHead, sendEnvelope, type UpstreamResponse } from './upstream-response'

/** A waiting request re-queues behind a pause this often at most before it is sent anyway. */
const MAX_PAUSE_CHECKS = 5

export interface ForwarderOptions {
  route: RouteConfig
  limiter: RouteLimiter
  /** The route's pauses and announced limits: followed on every answer, checked before an attempt. */
  signals: UpstreamSignals
  logger: FastifyBaseLogger
}

type ReplyOptions = Record<string, unknown>
type Handler = (request: FastifyRequest, reply: FastifyReply, dest: string, options: ReplyOptions) => FastifyReply

/** The @fastify/http-proxy `handler`: sends the request upstream as often as it takes. */
export function createForwarder (opts: ForwarderOptions): Handler {
  return function forward (request, reply, dest, options) {
    const state = request.sluice
    // admit() (the route's preHandler) sets bucket and controller or refuses the request: forwarding
    // without them would bypass the budget, so it is Sluice's own error.
    if (state?.bucket === undefined || state.controller === undefined) throw new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id')
    new Exchange(opts, request, reply, dest, options, state as Admitted).begin()
    return reply
  }
}

type Admitted = RequestState & { bucket: string, controller: Cancel }

/** One client request and its attempts upstream. */
class Exchange {
  private retries = 0
  private pushbackRetries = 0
  private transientRetries = 0
  /** Whether the admission before the next attempt slept (a pause may have begun meanwhile). */
  private slept: boolean
  private readonly route: RouteConfig
  private readonly bucket: string
  private readonly logger: FastifyBaseLogger
  /** When the current attempt was sent (this process's clock, ms; learned-limit.ts). */
  private sentAt = 0

  constructor (private readonly opts: ForwarderOptions, private readonly request: FastifyRequest, private readonly reply: FastifyReply,
    private readonly dest: string, private readonly options: ReplyOptions, private readonly state: Admitted) {
    this.route = opts.route
    this.bucket = state.bucket
    this.logger = opts.logger
    this.slept = state.waitedMs > 0
  }

  /** Straight out unless the slot it slept for may have fallen into a pause. */
  begin (): void {
    if (this.mayHaveSleptIntoPause()) void this.start()
    else this.send()
  }

  /**
   * The admission's controller: the limiter keys a concurrency slot by its signal, so a retry keeps
   * the slot the request holds instead of waiting for a second one; admit() aborts it when the client
   * leaves, and lets shutdown cut a wait short (shutdown.ts), until the exchange is over, so a
   * retry's wait is covered like the first.
   */
  private get controller (): Cancel {
    return this.state.controller
  }

  private remainingWaitMs (): number {
    return (this.state.maxWaitMs ?? this.route.maxWaitMs) - this.reply.elapsedTime
  }

  /** What stops this request from being sent again; undefined when it can be. */
  private bodyBlocker (): string | undefined {
    if (this.request.body !== undefined && this.request.sluiceBody === undefined) {
      return `the request body was streamed (larger than retryBodyLimit ${this.route.retryBodyLimit} bytes) and cannot be sent again`
    }
    return undefined
  }

  private decide (failure: Failure): RetryDecision {
    const route = this.route
    return retryDecision(failure, {
      method: this.request.method.toUpperCase(),
      shadow: route.mode === 'shadow',
      retries: route.retries,
      retryMethods: route.retryMethods,
      pushbackRetries: this.pushbackRetries,
      transientRetries: this.transientRetries,
      bodyBlocker: this.bodyBlocker()
    })
  }

  /** Admit once more, with what is left of the client's wait bound, at the request's own cost (in each limit). */
  private async readmit (): Promise<void> {
    const admission = await this.opts.limiter.admit(this.bucket, Math.max(0, this.remainingWaitMs()), this.controller.signal, this.state.cost, this.state.costs)
    this.state.waitedMs += admission.waitedMs
    this.state.startAt = admission.startAt
    this.state.bookedUnder = admission.bookedUnder
    this.state.reservation = admission.reservation
    this.state.view = { remaining: admission.reservation.remaining, resetMs: Math.max(0, admission.reservation.resetMs - admission.waitedMs) }
    this.slept = admission.waitedMs > 0
  }

  /**
   * A request that slept for its slot may have slept into a pause set meanwhile (by any instance), or
   * past a lowering of the limit: it queues again. Known pauses only: no store round trip after the slot.
   */
  private mayHaveSleptIntoPause (): boolean {
    return this.slept && (this.opts.signals.pausedHere(this.bucket) || this.bookedAboveLimit())
  }

  /**
   * The start was booked under a higher limit than the one in force now (the upstream's limit was
   * learned or announced while it slept): spaced for the old limit, it could overrun the new one, so
   * it queues again (the old slot is left unused).
   */
  private bookedAboveLimit (): boolean {
    const under = this.state.bookedUnder
    return under !== undefined && this.opts.limiter.policy.limit < under
  }

  private async clearOfPauses (): Promise<void> {
    for (let i = 0; i < MAX_PAUSE_CHECKS && this.mayHaveSleptIntoPause(); i++) await this.readmit()
  }

  private clientGone (): void {
    const { reply, route, bucket, retries } = this
    if (this.controller.signal.reason === SHUTDOWN) {
      sendError(reply, shuttingDownError({ upstream: route.name, bucket, retries }))
      return
    }
    this.state.outcome = 'cancelled'
    this.logger.info({ reqId: this.request.id, route: route.name, bucket, retries }, 'client left while a retry waited; not sent again')
    if (!reply.sent) reply.hijack()
  }

  private send (): void {
    const { request, reply } = this
    this.state.retries = this.retries
    if (this.retries > 0 && request.sluiceBody !== undefined) request.body = replayBody(request.sluiceBody)
    this.sentAt = this.opts.signals.sentAt()
    try {
      reply.from(this.dest, { ...this.options, onResponse: this.onResponse, onError: this.onError } as never)
    } catch (err) {
      // reply-from throws synchronously on a URL it will not build ("..", bad percent-encoding).
      // request-guard.ts refuses those first; should one slip through, it must not become an
      // unhandled rejection of start() (which ends the process), but an envelope.
      this.logger.warn({ reqId: request.id, route: this.route.name, err }, 'the request URL could not be forwarded')
      if (!reply.sent) sendError(reply, new SluiceError('BAD_REQUEST', 400, 'the request URL cannot be forwarded', { upstream: this.route.name }))
    }
  }

  private async start (): Promise<void> {
    try {
      await this.clearOfPauses()
    } catch (err) {
      if (err instanceof ClientGoneError) return this.clientGone()
      if (err instanceof SluiceError) {
        sendError(this.reply, err)
        return
      }
      throw err
    }
    this.send()
  }

  /**
   * Wait (backoff), admit again and send; false when the wait bound or the client does not allow
   * it (then the caller answers with what it has).
   */
  private async resend (kind: RetryKind): Promise<boolean | 'gone'> {
    if (kind === 'transient') {
      const waitMs = backoffMs(this.transientRetries, Math.random())
      if (!inTime(waitMs, this.remainingWaitMs())) return false
      const stillThere = await sleep(waitMs, this.controller.signal)
      if (!stillThere) return 'gone'
    }
    try {
      await this.readmit()
      await this.clearOfPauses()
    } catch (err) {
      if (err instanceof ClientGoneError) return 'gone'
      if (err instanceof SluiceError) return false
      throw err
    }
    this.retries++
    if (kind === 'pushback') this.pushbackRetries++
    else this.transientRetries++
    this.request.server.observer?.retry(this.route.name, kind)
    this.send()
    return true
  }

  private readonly onResponse = (_request: FastifyRequest, _reply: FastifyReply, res: UpstreamResponse): void => {
    this.state.upstreamStatus = res.statusCode
    if (res.statusCode < 400) {
      this.opts.signals.follow(res.headers, this.bucket)
      this.watchBody(res)
      this.opts.signals.answered(this.bucket, this.sentAt, this.slept)
      this.reply.send(res.stream)
      return
    }
    void this.onErrorResponse(res).catch((err: unknown) => {
      this.logger.error({ reqId: this.request.id, err }, 'failed to answer an upstream error')
      if (!this.reply.sent) sendError(this.reply, new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id'))
    })
  }

  /**
   * A body that falls silent for bodyTimeout errors (undici's own timer): the response is cut, the
   * client's connection ends (its headers are out), and the close releases the concurrency lease.
   */
  private watchBody (res: UpstreamResponse): void {
    res.stream.once('error', (err: Error & { code?: string }) => {
      if (err.code !== 'UND_ERR_BODY_TIMEOUT') return
      this.request.server.observer?.metrics.bodyTimeouts.inc({ route: this.route.name })
      this.logger.warn({ reqId: this.request.id, route: this.route.name, bucket: this.bucket, bodyTimeoutMs: this.route.bodyTimeoutMs }, 'upstream body fell silent for bodyTimeout; response cut')
    })
  }

  private async onErrorResponse (res: UpstreamResponse): Promise<void> {
    const { route, reply } = this
    const head = await readHead(res.stream, MAX_ERROR_BODY_BYTES)
    const body = await decodeBody(head.bytes, res.headers['content-encoding'])
    const normalized = normalizeUpstreamError({
      status: res.statusCode,
      headers: res.headers,
      body,
      route: route.name,
      profile: route.profile,
      requestId: this.request.id,
      minDelayMs: route.minPauseMs,
      maxDelayMs: route.maxPauseMs
    })
    let pauseMs: number | undefined
    let decision: RetryDecision
    if (normalized.pushback !== undefined) {
      const why = `upstream ${normalized.pushback.kind === 'maintenance' ? 'maintenance' : 'rate limit'} (HTTP ${res.statusCode})`
      const limited = normalized.pushback.kind === 'rate_limited' ? { sentAtMs: this.sentAt } : undefined
      pauseMs = await this.opts.signals.pushback(this.bucket, normalized.pushback.delayMs, why, limited)
      decision = this.decide({ kind: 'pushback' })
    } else {
      this.opts.signals.follow(res.headers, this.bucket)
      this.opts.signals.answered(this.bucket, this.sentAt, this.slept)
      decision = this.decide({ kind: 'status', status: res.statusCode, retryable: normalized.envelope.error.details.retryable === true })
    }
    let skipped = decision.retry === false ? decision.skipped : undefined
    if (decision.retry !== false) {
      if (!head.complete) res.stream.destroy()
      clearUpstreamHeaders(reply, res.headers)
      const outcome = await this.resend(decision.retry)
      if (outcome === 'gone') return this.clientGone()
      if (outcome) return
      skipped = OUT_OF_TIME[decision.retry]
      if (reply.sent) return
      if (route.errors === 'upstream') {
        // The upstream body is gone (it was read, and its connection may be closed): answer ours.
        return this.answer(normalized, pauseMs, skipped)
      }
    }
    if (route.errors === 'upstream' && !reply.sent && !reply.raw.headersSent && reply.statusCode === res.statusCode) {
      // Untouched: the bytes already read, then the rest as it comes.
      reply.send(head.complete ? head.bytes : Readable.from(concatRest(head.bytes, res.stream)))
      return
    }
    if (!head.complete) res.stream.destroy()
    this.answer(normalized, pauseMs, skipped)
  }

  private answer (normalized: NormalizedError, pauseMs: number | undefined, skipped: string | undefined): void {
    const details = normalized.envelope.error.details
    if (this.retries > 0) details.retries = this.retries
    if (skipped !== undefined && (normalized.pushback !== undefined || details.retryable === true)) details.retry_skipped = skipped
    let retryAfterS = normalized.retryAfterS
    if (pauseMs !== undefined) {
      retryAfterS = retryAfterSeconds(pauseMs)
      details.retry_after_s = retryAfterS
    }
    sendEnvelope(this.reply, this.opts.limiter, { ...normalized, retryAfterS })
  }

  private readonly onError = (_reply: FastifyReply, { error }: { error: Error }): void => {
    const { reply, request } = this
    if (reply.sent) return
    // Sluice's own refusal raised while the body streamed upstream (a chunked body past bodyLimit):
    // answered as such, and the rest of that body is not read.
    const own = sluiceErrorIn(error)
    if (own !== undefined) {
      reply.header('connection', 'close')
      sendError(reply, own)
      return
    }
    const normalized = sluiceErrorFromTransport(error, this.route.name, request.id)
    const details = normalized.envelope.error.details
    const transportCode = typeof details.transport_code === 'string' ? details.transport_code : ''
    const decision = this.decide({ kind: 'transport', code: normalized.envelope.error.code, retryable: details.retryable === true, transportCode })
    if (decision.retry === false) return this.answer(normalized, undefined, decision.skipped)
    void this.resend(decision.retry).then((outcome) => {
      if (outcome === 'gone') return this.clientGone()
      if (!outcome) this.answer(normalized, undefined, OUT_OF_TIME.transient)
    }, (err: unknown) => {
      this.logger.error({ reqId: request.id, err }, 'failed to retry')
      this.answer(normalized, undefined, 'retry failed')
    })
  }
}

function sluiceErrorIn (err: unknown): SluiceError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof SluiceError) return e
  }
  return undefined
}
