// Listening to the upstream: one client request may take several attempts upstream. Each attempt is
// admitted by the limiter (a retry takes budget like any request). Pushback (429, maintenance)
// pauses the bucket in the shared store, so every instance holds back, and the request is sent again
// once the pause is over, if the client's wait bound allows. Transient failures (refused, reset,
// 502, 503, 504) are retried with exponential backoff and full jitter where the method is safe to
// repeat. Success responses stream through; their rate-limit headers steer the bucket.
import { Readable } from 'node:stream'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError, retryAfterSeconds, ClientGoneError } from '../errors'
import { type RouteLimiter } from '../limiter/route-limiter'
import type { BucketStore } from '../store/bucket-store'
import { MAX_ERROR_BODY_BYTES, normalizeUpstreamError, sluiceErrorFromTransport, type NormalizedError } from '../upstream/normalize'
import { clampDelayMs, parseRateLimitHeaders, type HeaderBag } from '../upstream/retry-after'
import { sendError } from './app'
import { replayBody } from './request-body'
import { SHUTDOWN, shuttingDownError } from './shutdown'
import { decodeBody, readHead, sendEnvelope, type UpstreamResponse } from './upstream-response'
import { sleep } from '../limiter/cancel'

/** Methods that may be sent twice without doing twice what they do (RFC 9110 §9.2.2), TRACE aside. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'])
/** Full-jitter backoff of transient retries: a random wait in [0, min(cap, base × 2^n)) ms. */
export const BACKOFF_BASE_MS = 100
export const BACKOFF_CAP_MS = 5_000
/** A request is sent at most this often after pushback, whatever its wait bound (a runaway guard). */
export const MAX_PUSHBACK_RETRIES = 20
/** A waiting request re-queues behind a pause this often at most before it is sent anyway. */
const MAX_PAUSE_CHECKS = 5
const TRANSIENT_STATUSES: ReadonlySet<number> = new Set([502, 503, 504])
// Failures before the request reached the upstream: safe to send again whatever the method.
const NEVER_SENT: ReadonlySet<string> = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])

/** Counters of one route, for the log and for metrics (a metrics exporter reads them). */
export interface UpstreamStats {
  /** Attempts sent after the first, for any reason. */
  retries: number
  pushbackRetries: number
  transientRetries: number
  /** Pauses this instance set after pushback or an exhausted announced budget. */
  pauses: number
  /** The limit taken from the upstream's announcements, when one was adopted. */
  adoptedLimit: number | undefined
}

const statsByRoute = new WeakMap<RouteConfig, UpstreamStats>()

export function upstreamStats (route: RouteConfig): UpstreamStats {
  let stats = statsByRoute.get(route)
  if (stats === undefined) {
    stats = { retries: 0, pushbackRetries: 0, transientRetries: 0, pauses: 0, adoptedLimit: undefined }
    statsByRoute.set(route, stats)
  }
  return stats
}

export interface ForwarderOptions {
  route: RouteConfig
  limiter: RouteLimiter
  /** Where pauses are set (the store the limiter reserves in, so every reservation honours them). */
  store: BucketStore
  /** The same store without instrumentation: a pause check is not a pause. */
  checkStore: BucketStore
  logger: FastifyBaseLogger
}

type ReplyOptions = Record<string, unknown>
type Handler = (request: FastifyRequest, reply: FastifyReply, dest: string, options: ReplyOptions) => FastifyReply

/** The @fastify/http-proxy `handler`: sends the request upstream as often as it takes. */
export function createForwarder (opts: ForwarderOptions): Handler {
  const { route, limiter, logger } = opts
  const stats = upstreamStats(route)
  const shadow = route.mode === 'shadow'
  let warnedLimit = false
  // What the config says, before any announcement: an adopted limit never goes above it.
  const configuredLimit = route.limit.count
  // Announcements of the upstream's budget for the whole route. A route keyed per header has one bucket
  // per key, and keys differ (token tiers): one key's answer must not shrink every key's budget, so
  // such a route follows only the pauses (remaining 0) of each bucket. Numbers tagged with a budget
  // other than GitHub's primary one (X-RateLimit-Resource: search, graphql, …) are another budget.
  const adoptsLimits = route.limitAuto || route.key.kind === 'instance'

  async function pause (bucket: string, delayMs: number, why: string): Promise<void> {
    if (shadow || delayMs <= 0) return
    stats.pauses++
    notePause(bucket, Date.now() + delayMs)
    try {
      await opts.store.pause(bucket, delayMs)
    } catch (err) {
      logger.warn({ route: route.name, bucket, err: (err as Error).message }, 'could not store a pause; this instance still backs off through its retries')
    }
    logger.info({ route: route.name, bucket, pauseMs: Math.round(delayMs), why }, 'bucket paused')
  }

  /** Pauses known to this instance, epoch ms per bucket: its own, and others' announced by the store. */
  const knownPause = new Map<string, number>()
  // Every pause any instance sets is announced (one pub/sub message per pause, no polling), so a
  // request that slept for its slot knows, without a store round trip, whether it must queue again.
  if (!shadow) opts.checkStore.onPause((bucket, delayMs) => notePause(bucket, Date.now() + delayMs))

  function notePause (bucket: string, untilMs: number): void {
    if (untilMs > (knownPause.get(bucket) ?? 0)) knownPause.set(bucket, untilMs)
  }

  function pausedHere (bucket: string): boolean {
    const until = knownPause.get(bucket)
    if (until === undefined) return false
    if (until > Date.now()) return true
    knownPause.delete(bucket)
    return false
  }

  /** Steer by the upstream's own numbers: an exhausted budget pauses, a lower limit is adopted. */
  function follow (headers: HeaderBag, bucket: string): void {
    const info = parseRateLimitHeaders(headers, Date.now())
    if (info.limit !== undefined && info.limit >= 1 && !shadow && adoptsLimits && (info.resource === undefined || info.resource === 'core')) {
      adopt(info.limit, info.windowMs)
    }
    if (info.remaining === 0 && info.resetMs !== undefined && info.resetMs > 0) {
      void pause(bucket, clampDelayMs(info.resetMs, 0, route.maxPauseMs), 'upstream reports remaining 0 until reset')
    }
  }

  function adopt (announced: number, announcedWindowMs: number | undefined): void {
    const policy = limiter.policy
    if (route.limitAuto) {
      const windowMs = announcedWindowMs !== undefined && announcedWindowMs > 0 ? announcedWindowMs : policy.windowMs
      const limit = Math.floor(announced)
      if (limit === policy.limit && windowMs === policy.windowMs) return
      setLimit(limit, windowMs)
      logger.info({ route: route.name, limit, windowMs }, `route ${route.name}: limit auto adopts the upstream's announced ${limit} per ${windowMs} ms`)
      return
    }
    // The announcement in the route's own window, so 5000/h and 180/min compare.
    const inRouteWindow = announcedWindowMs !== undefined && announcedWindowMs > 0 && announcedWindowMs !== policy.windowMs
      ? Math.floor(announced * policy.windowMs / announcedWindowMs)
      : Math.floor(announced)
    // The limit follows the latest announcement, down and back up, never above the configured one.
    const limit = Math.min(inRouteWindow, configuredLimit)
    if (limit < 1 || limit === policy.limit) return
    setLimit(limit, policy.windowMs)
    if (limit < configuredLimit && !warnedLimit) {
      warnedLimit = true
      logger.warn({ route: route.name, configured: configuredLimit, announced: inRouteWindow, windowMs: policy.windowMs },
        `route ${route.name}: the upstream announces a limit of ${inRouteWindow} per ${policy.windowMs} ms, below the configured ${configuredLimit}; Sluice follows the upstream`)
    } else if (limit === configuredLimit) {
      logger.info({ route: route.name, limit, windowMs: policy.windowMs }, `route ${route.name}: the upstream announces ${inRouteWindow} per ${policy.windowMs} ms again; back to the configured ${limit}`)
    }
  }

  function setLimit (limit: number, windowMs: number): void {
    const policy = limiter.policy
    policy.limit = limit
    policy.burst = Math.min(route.burst, limit)
    if (route.limitAuto && windowMs !== policy.windowMs) {
      policy.windowMs = windowMs
      policy.marginMs = Math.max(50, Math.round(windowMs / 100))
    }
    route.limit = { count: limit, windowMs: policy.windowMs }
    stats.adoptedLimit = limit
  }

  return function forward (request, reply, dest, options) {
    const state = request.sluice
    const bucket = state?.bucket
    // The admission's controller: the limiter keys a concurrency slot by its signal, so a retry keeps
    // the slot the request holds instead of waiting for a second one; admit() aborts it when the client
    // leaves, and lets shutdown cut a wait short (shutdown.ts), until the exchange is over, so a
    // retry's wait is covered like the first.
    const controller = state?.controller
    // admit() (the route's preHandler) sets all three or refuses the request: forwarding without them
    // would bypass the budget, so it is Sluice's own error.
    if (state === undefined || bucket === undefined || controller === undefined) throw new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id')
    const method = request.method.toUpperCase()
    let retries = 0
    let pushbackRetries = 0
    let transientRetries = 0
    /** Whether the admission before the next attempt slept (a pause may have begun meanwhile). */
    let slept = state.waitedMs > 0

    const remainingWaitMs = (): number => (state.maxWaitMs ?? route.maxWaitMs) - reply.elapsedTime

    /** What stops this request from being sent again; undefined when it can be. */
    const resendBlocker = (): string | undefined => {
      if (request.body !== undefined && request.sluiceBody === undefined) {
        return `the request body was streamed (larger than retryBodyLimit ${route.retryBodyLimit} bytes, or without Content-Length) and cannot be sent again`
      }
      return undefined
    }

    /** Admit once more, with what is left of the client's wait bound. */
    const readmit = async (): Promise<void> => {
      const admission = await limiter.admit(bucket, Math.max(0, remainingWaitMs()), controller.signal)
      state.waitedMs += admission.waitedMs
      state.view = { remaining: admission.reservation.remaining, resetMs: Math.max(0, admission.reservation.resetMs - admission.waitedMs) }
      slept = admission.waitedMs > 0
    }

    /**
     * A request that slept for its slot may have slept into a pause set meanwhile (by any instance):
     * it queues again, behind the pause. Known pauses only: no store round trip after the slot.
     */
    const mayHaveSleptIntoPause = (): boolean => slept && !shadow && pausedHere(bucket)
    const clearOfPauses = async (): Promise<void> => {
      for (let i = 0; i < MAX_PAUSE_CHECKS && mayHaveSleptIntoPause(); i++) await readmit()
    }

    const clientGone = (): void => {
      if (controller.signal.reason === SHUTDOWN) {
        sendError(reply, shuttingDownError({ upstream: route.name, bucket, retries }))
        return
      }
      state.outcome = 'cancelled'
      logger.info({ reqId: request.id, route: route.name, bucket, retries }, 'client left while a retry waited; not sent again')
      if (!reply.sent) reply.hijack()
    }

    const send = (): void => {
      state.retries = retries
      if (retries > 0 && request.sluiceBody !== undefined) request.body = replayBody(request.sluiceBody)
      try {
        reply.from(dest, { ...options, onResponse, onError } as never)
      } catch (err) {
        // reply-from throws synchronously on a URL it will not build ("..", bad percent-encoding).
        // request-guard.ts refuses those first; should one slip through, it must not become an
        // unhandled rejection of start() (which ends the process), but an envelope.
        logger.warn({ reqId: request.id, route: route.name, err }, 'the request URL could not be forwarded')
        if (!reply.sent) sendError(reply, new SluiceError('BAD_REQUEST', 400, 'the request URL cannot be forwarded', { upstream: route.name }))
      }
    }

    const start = async (): Promise<void> => {
      try {
        await clearOfPauses()
      } catch (err) {
        if (err instanceof ClientGoneError) return clientGone()
        if (err instanceof SluiceError) {
          sendError(reply, err)
          return
        }
        throw err
      }
      send()
    }

    /**
     * Wait (backoff), admit again and send; false when the wait bound or the client does not allow
     * it (then the caller answers with what it has).
     */
    const resend = async (kind: 'pushback' | 'transient'): Promise<boolean | 'gone'> => {
      if (kind === 'transient') {
        const backoffMs = Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** transientRetries)
        if (backoffMs >= remainingWaitMs()) return false
        const stillThere = await sleep(backoffMs, controller.signal)
        if (!stillThere) return 'gone'
      }
      try {
        await readmit()
        await clearOfPauses()
      } catch (err) {
        if (err instanceof ClientGoneError) return 'gone'
        if (err instanceof SluiceError) return false
        throw err
      }
      retries++
      if (kind === 'pushback') { pushbackRetries++; stats.pushbackRetries++ } else { transientRetries++; stats.transientRetries++ }
      stats.retries++
      request.server.observer?.retry(route.name)
      send()
      return true
    }

    const onResponse = (_request: FastifyRequest, _reply: FastifyReply, res: UpstreamResponse): void => {
      state.upstreamStatus = res.statusCode
      if (res.statusCode < 400) {
        follow(res.headers, bucket)
        reply.send(res.stream)
        return
      }
      void onErrorResponse(res).catch((err: unknown) => {
        logger.error({ reqId: request.id, err }, 'failed to answer an upstream error')
        if (!reply.sent) sendError(reply, new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id'))
      })
    }

    const onErrorResponse = async (res: UpstreamResponse): Promise<void> => {
      const head = await readHead(res.stream, MAX_ERROR_BODY_BYTES)
      const body = await decodeBody(head.bytes, res.headers['content-encoding'])
      const normalized = normalizeUpstreamError({
        status: res.statusCode,
        headers: res.headers,
        body,
        route: route.name,
        profile: route.profile,
        requestId: request.id,
        minDelayMs: route.minPauseMs,
        maxDelayMs: route.maxPauseMs
      })
      let pauseMs: number | undefined
      let kind: 'pushback' | 'transient' | undefined
      let blocker: string | undefined
      if (normalized.pushback !== undefined) {
        // Without a stated delay: one window of the route's budget, within the pause bounds.
        pauseMs = clampDelayMs(normalized.pushback.delayMs ?? route.limit.windowMs, route.minPauseMs, route.maxPauseMs)
        await pause(bucket, pauseMs, `upstream ${normalized.pushback.kind === 'maintenance' ? 'maintenance' : 'rate limit'} (HTTP ${res.statusCode})`)
        // A 429 or maintenance answer means the upstream did not act: any method may be sent again.
        blocker = shadow ? 'shadow route' : pushbackRetries >= MAX_PUSHBACK_RETRIES ? `sent ${MAX_PUSHBACK_RETRIES} times after pushback already` : resendBlocker()
        kind = 'pushback'
      } else {
        follow(res.headers, bucket)
        if (TRANSIENT_STATUSES.has(res.statusCode) && normalized.envelope.error.details.retryable === true) {
          kind = 'transient'
          blocker = transientBlocker(false)
        }
      }
      if (kind !== undefined && blocker === undefined) {
        if (!head.complete) res.stream.destroy()
        clearUpstreamHeaders(reply, res.headers)
        const outcome = await resend(kind)
        if (outcome === 'gone') return clientGone()
        if (outcome) return
        blocker = kind === 'pushback' ? 'the pause ends after the request\'s wait bound' : 'no time left within the request\'s wait bound'
        if (reply.sent) return
        if (route.errors === 'upstream') {
          // The upstream body is gone (it was read, and its connection may be closed): answer ours.
          return answer(normalized, pauseMs, blocker)
        }
      }
      if (route.errors === 'upstream' && !reply.sent && !reply.raw.headersSent && reply.statusCode === res.statusCode) {
        // Untouched: the bytes already read, then the rest as it comes.
        reply.send(head.complete ? head.bytes : Readable.from(concatRest(head.bytes, res.stream)))
        return
      }
      if (!head.complete) res.stream.destroy()
      answer(normalized, pauseMs, blocker)
    }

    const answer = (normalized: NormalizedError, pauseMs: number | undefined, blocker: string | undefined): void => {
      const details = normalized.envelope.error.details
      if (retries > 0) details.retries = retries
      if (blocker !== undefined && (normalized.pushback !== undefined || details.retryable === true)) details.retry_skipped = blocker
      let retryAfterS = normalized.retryAfterS
      if (pauseMs !== undefined) {
        retryAfterS = retryAfterSeconds(pauseMs)
        details.retry_after_s = retryAfterS
      }
      sendEnvelope(reply, route, { status: normalized.status, envelope: normalized.envelope, ...(retryAfterS !== undefined ? { retryAfterS } : {}) })
    }

    /** Why a transient failure is not retried; undefined when it is. */
    const transientBlocker = (neverSent: boolean): string | undefined => {
      if (shadow) return 'shadow route'
      if (transientRetries >= route.retries) return route.retries === 0 ? 'retries: 0 on this route' : `retried ${route.retries} times already (retries)`
      if (!neverSent && !IDEMPOTENT_METHODS.has(method) && !route.retryMethods.includes(method)) {
        return `${method} is not idempotent and not in this route's retryMethods`
      }
      return resendBlocker()
    }

    const onError = (_reply: FastifyReply, { error }: { error: Error }): void => {
      if (reply.sent) return
      // Sluice's own refusal raised while the body streamed upstream (a chunked body past bodyLimit):
      // answered as such, and the rest of that body is not read.
      const own = sluiceErrorIn(error)
      if (own !== undefined) {
        reply.header('connection', 'close')
        sendError(reply, own)
        return
      }
      const normalized = sluiceErrorFromTransport(error, route.name, request.id)
      const details = normalized.envelope.error.details
      const code = typeof details.transport_code === 'string' ? details.transport_code : ''
      // A response timeout is not retried: the attempt already took the whole timeout.
      const transient = details.retryable === true && (normalized.envelope.error.code !== 'UPSTREAM_TIMEOUT' || NEVER_SENT.has(code))
      const blocker = transient ? transientBlocker(NEVER_SENT.has(code)) : undefined
      if (!transient || blocker !== undefined) return answer(normalized, undefined, blocker)
      void resend('transient').then((outcome) => {
        if (outcome === 'gone') return clientGone()
        if (!outcome) answer(normalized, undefined, 'no time left within the request\'s wait bound')
      }, (err: unknown) => {
        logger.error({ reqId: request.id, err }, 'failed to retry')
        answer(normalized, undefined, 'retry failed')
      })
    }

    // Straight out unless the slot it slept for may have fallen into a pause.
    if (mayHaveSleptIntoPause()) void start()
    else send()
    return reply
  }
}

function sluiceErrorIn (err: unknown): SluiceError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof SluiceError) return e
  }
  return undefined
}

/** Removes the headers reply-from copied from an answer that is not passed on. */
function clearUpstreamHeaders (reply: FastifyReply, headers: HeaderBag): void {
  for (const name of Object.keys(headers)) reply.removeHeader(name)
  reply.removeHeader('connection')
}

async function * concatRest (head: Buffer, rest: Readable): AsyncGenerator<Buffer> {
  yield head
  rest.resume()
  for await (const chunk of rest) yield chunk as Buffer
}
