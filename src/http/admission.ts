// A route's preHandler: what the request asks for (its bucket, client, priority, cost and wait
// bound), then its wait for a slot in the budget (fair queue and limiter). Only an admitted request
// reaches forward.ts; the others leave with an envelope, or, when the client left, without an answer.
import { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError, ClientGoneError } from '../errors'
import { bucketFor } from '../limiter/bucket-key'
import { Cancel } from '../limiter/cancel'
import { clientFor, priorityFor } from '../limiter/client-identity'
import { DEFAULT_COST, costOf, costsOf, pathBelow } from '../config/cost-rules'
import type { FairScheduler } from '../limiter/fair-scheduler'
import type { RouteLimiter } from '../limiter/route-limiter'
import type { UpstreamSignals } from '../limiter/upstream-signals'
import type { Unfinished } from './access-log'
import { limitBody } from './body-limit'
import { rateLimitHeaders, refusalView } from './rate-limit-headers'
import { redactUrl } from './redact'
import type { RequestState } from './request-state'
import { SHUTDOWN, shuttingDownError } from './shutdown'

const PREFER_WAIT = /(?:^|[,;\s])wait\s*=\s*"?(\d+(?:\.\d+)?)"?/i

export interface AdmissionOptions {
  route: RouteConfig
  limiter: RouteLimiter
  scheduler: FairScheduler
  hashSecret: string
  unfinished: Unfinished
  /** The route's pauses: a refusal during one says why the budget has no room (the upstream pushed back). */
  signals?: Pick<UpstreamSignals, 'pauseNote'>
}

interface Ask {
  bucket: string
  client: string
  priority: ReturnType<typeof priorityFor>
  cost: number
  /** A route with several limits: the cost in each (cost is then the most of them). */
  costs?: number[]
  maxWaitMs: number
}

/** The route's preHandler: admits the request or refuses it (throws a SluiceError). */
export function createAdmission (opts: AdmissionOptions): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  const { route, limiter, scheduler } = opts
  return async function admit (request, reply) {
    const state: RequestState = { route, bucket: undefined, waitedMs: 0, view: undefined, outcome: 'forwarded' }
    request.sluice = state
    const { bucket, client, priority, cost, costs, maxWaitMs } = ask(opts, request, reply, state)
    state.cost = cost
    if (costs !== undefined) state.costs = costs
    const controller = new Cancel()
    state.controller = controller
    // For the whole exchange, retries included (forward.ts): a client that leaves aborts its wait, and
    // shutdown may cut a wait short (shutdown.ts) until the response is over.
    const untrack = request.server.drain.track(controller)
    reply.raw.once('close', () => {
      if (!reply.raw.writableEnded) controller.abort()
      untrack()
    })
    try {
      // Shadow routes only measure, so they skip the fair queues (which would hold requests back).
      const admission = route.mode === 'shadow'
        ? await limiter.admit(bucket, maxWaitMs, controller.signal, cost, costs)
        : await scheduler.admit({ bucket, client, priority, cost, maxWaitMs, signal: controller.signal, ...(costs === undefined ? {} : { costs }) })
      // A body without Content-Length that was not kept (request-body.ts) is counted as it streams upstream (413 past bodyLimit).
      if (request.body instanceof Readable && request.sluiceBody === undefined && request.headers['content-length'] === undefined) request.body = limitBody(request.body, route)
      state.waitedMs = admission.waitedMs
      state.startAt = admission.startAt
      state.bookedUnder = admission.bookedUnder
      state.reservation = admission.reservation
      state.view = { remaining: admission.reservation.remaining, resetMs: Math.max(0, admission.reservation.resetMs - admission.waitedMs), ...bindingOf(admission.reservation) }
      // A concurrency slot (route `concurrency`) is held until the exchange with the client is over.
      if (admission.release !== undefined) reply.raw.once('close', admission.release)
      request.server.observer.admitted(state, admission, reply)
      reply.raw.once('close', () => opts.unfinished(request, reply))
    } catch (err) {
      refused(withPauseReason(err, opts.signals, bucket), limiter, request, reply, controller)
    }
  }
}

/** What the request asks for, noted in its state as it is found; throws what refuses it at once. */
function ask (opts: AdmissionOptions, request: FastifyRequest, reply: FastifyReply, state: RequestState): Ask {
  const { route, hashSecret } = opts
  const length = Number(request.headers['content-length'] ?? 0)
  if (length > route.bodyLimit) {
    throw new SluiceError('PAYLOAD_TOO_LARGE', 413, `the request body of ${length} bytes is larger than the ${route.bodyLimit} bytes this route accepts`,
      { upstream: route.name, limit_bytes: route.bodyLimit, received_bytes: length })
  }
  const bucket = bucketFor(route, request.headers, hashSecret)
  if (bucket === undefined) {
    const header = route.key.kind === 'header' ? route.key.header : ''
    throw new SluiceError('BAD_REQUEST', 400, `route ${route.name} shares its budget per ${header} header, and the request has none`, { upstream: route.name, header })
  }
  state.bucket = bucket
  const client = clientFor(route, request.headers, request.ip, hashSecret).id
  state.client = client
  const priority = priorityFor(route, request.headers)
  // The path is decoded for cost rules only: a route without rules does not pay for it.
  const cost = route.cost.length === 0 ? DEFAULT_COST : costOf(route.cost, request.method, pathBelow(route.prefix, request.url))
  if (route.limits !== undefined) {
    const costs = costsOf(route.cost, route.limits.map((l) => l.name), request.method, pathBelow(route.prefix, request.url))
    return { ...withWait(route, request, reply, state), bucket, client, priority, cost: Math.max(1, ...costs), costs }
  }
  return { ...withWait(route, request, reply, state), bucket, client, priority, cost }
}

/** The request's wait bound: the route's, or less when it says `Prefer: wait=N`. */
function withWait (route: RouteConfig, request: FastifyRequest, reply: FastifyReply, state: RequestState): { maxWaitMs: number } {
  let maxWaitMs = route.maxWaitMs
  const prefer = request.headers.prefer
  const match = typeof prefer === 'string' ? PREFER_WAIT.exec(prefer) : null
  if (match !== null) {
    maxWaitMs = Math.min(maxWaitMs, Number(match[1]) * 1000)
    reply.header('preference-applied', `wait=${Math.round(maxWaitMs / 1000)}`)
  }
  state.maxWaitMs = maxWaitMs
  return { maxWaitMs }
}

/** Which of several limits bound the reservation, for the rate-limit headers. */
function bindingOf (reservation: object): { binding?: number } {
  const binding = (reservation as { binding?: number }).binding
  return binding === undefined ? {} : { binding }
}

/**
 * A refusal because the bucket is paused after upstream pushback names the pause and its cause, so a
 * client (and its user) reads why, not only that the budget had no room.
 */
function withPauseReason (err: unknown, signals: AdmissionOptions['signals'], bucket: string): unknown {
  if (!(err instanceof SluiceError) || (err.code !== 'RATE_LIMITED' && err.code !== 'QUEUE_TIMEOUT')) return err
  const pause = signals?.pauseNote(bucket)
  if (pause === undefined) return err
  const pausedS = Math.ceil(pause.remainingMs / 1000)
  return new SluiceError(err.code, err.status, `${err.message}: the bucket is paused for ${pausedS} s more after ${pause.why}`,
    { ...err.details, paused_for_s: pausedS, pause_reason: pause.why }, err.retryAfterS, { cause: err })
}

/** A wait that ended without a slot: rethrown as the answer, or, when the client left, no answer. */
function refused (err: unknown, limiter: RouteLimiter, request: FastifyRequest, reply: FastifyReply, controller: Cancel): void {
  const state = request.sluice as RequestState
  const { route, bucket } = state
  // Cut short by shutdown (shutdown.ts): the limiter gave the reservation back; the client is told.
  if (err instanceof ClientGoneError && controller.signal.reason === SHUTDOWN) throw shuttingDownError({ upstream: route.name, bucket })
  if (err instanceof ClientGoneError) {
    state.outcome = 'cancelled'
    request.server.observer.finished(state, 499)
    request.log.info({ route: route.name, bucket, outcome: 'cancelled', url: redactUrl(request.url) }, 'client left while waiting; not forwarded')
    reply.hijack()
    return
  }
  // Sluice's own refusal: nothing left until its Retry-After, in every rate-limit field (for several
  // limits, those of the one that could not be met).
  if (err instanceof SluiceError && (err.code === 'RATE_LIMITED' || err.code === 'QUEUE_FULL') && err.retryAfterS !== undefined) {
    const named = limiter.limits?.names.indexOf(String(err.details.limit_name)) ?? -1
    reply.headers(rateLimitHeaders(limiter, { ...refusalView(err.retryAfterS), ...(named >= 0 ? { binding: named } : {}) }, 0))
  }
  throw err
}
