// The request path: admin routes, then per route: admission (reserve, wait) → proxy → upstream
// response → client. Errors of every kind leave as one envelope.
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import proxy from '@fastify/http-proxy'
import pino, { type Logger } from 'pino'
import { Pool } from 'undici'
import type { RouteConfig, SluiceConfig } from '../config/schema'
import { SluiceError, envelope, type Envelope, ClientGoneError } from '../errors'
import { bucketFor } from '../limiter/bucket-key'
import { Cancel } from '../limiter/cancel'
import { clientFor, hashedWeights, priorityFor } from '../limiter/client-identity'
import { DEFAULT_COST, costOf, pathBelow } from '../limiter/cost-rules'
import { FairScheduler } from '../limiter/fair-scheduler'
import { RouteLimiter } from '../limiter/route-limiter'
import { registerObserveRoutes } from '../observe/admin-routes'
import { Observer } from '../observe/observer'
import type { BucketStore } from '../store/bucket-store'
import { createStore } from '../store/create-store'
import { isTransportError, sluiceErrorFromTransport } from '../upstream/normalize'
import { endBodilessResponses } from './bodiless-responses'
import { limitBody } from './body-limit'
import { applyServerTimeouts, clientErrorHandler, refuseConnect, serverTimeouts, type ServerTimeouts } from './client-error'
import { REDACT_PATHS, redactUrl } from './redact'
import { forwardedRequestHeaders, withoutHopByHop } from './hop-by-hop'
import { requestGuard } from './request-guard'
import { secretScrubber } from './secret-scrub'
import { Drain, SHUTDOWN, shuttingDownError, type DrainResult } from './shutdown'
import { rateLimitHeaders, type BudgetView } from './rate-limit-headers'
import { requestBodyParser } from './request-body'
import { createForwarder } from './forward'
import { sendEnvelope } from './upstream-response'

export interface RequestState {
  route: RouteConfig
  bucket: string | undefined
  /** Hashed client identity (fair share), once known. */
  client?: string
  waitedMs: number
  view: BudgetView | undefined
  outcome: 'forwarded' | 'rejected' | 'cancelled' | 'admin' | 'unrouted'
  code?: string
  upstreamStatus?: number
  /** The client's wait bound in ms: the route's maxWait, shortened by Prefer: wait (forward.ts retries within it). */
  maxWaitMs?: number
  /** Attempts sent upstream after the first (forward.ts). */
  retries?: number
  /** The admission's abort controller: retries are admitted under the same one (forward.ts). */
  controller?: Cancel
}

declare module 'fastify' {
  interface FastifyRequest {
    sluice?: RequestState
  }
}

export interface SluiceServer {
  app: FastifyInstance
  store: BucketStore
  limiters: Map<string, RouteLimiter>
  /** Fair share per route (fair-scheduler.ts): per-client queues in front of each limiter. */
  schedulers: Map<string, FairScheduler>
  config: SluiceConfig
  /** Metrics, team-wide status, dashboard events (src/observe). */
  observer: Observer
  /** Listen on config.host:config.port; resolves to the base URL. */
  listen: () => Promise<string>
  close: () => Promise<void>
  /**
   * Graceful shutdown (shutdown.ts): refuse new requests, drain for up to config.drainTimeoutMs,
   * answer what still waits with 503 SHUTTING_DOWN, then close(). `hurry` ends the drain early.
   */
  shutdown: (hurry?: Promise<void>) => Promise<DrainResult>
}

export interface CreateOptions {
  logger?: Logger
  store?: BucketStore
  /** Server timeouts in ms instead of those derived from the config (tests use short ones). */
  timeouts?: Partial<ServerTimeouts>
}

const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:[/?#]|%2f|%5c|\\|$)/i
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const PREFER_WAIT = /(?:^|[,;\s])wait\s*=\s*"?(\d+(?:\.\d+)?)"?/i

function requestId (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/** Log bytes held while stdout does not take them (a stalled log collector); more are dropped. */
const LOG_BUFFER_MAX_BYTES = 16 * 2 ** 20

export function createLogger (level: string): Logger {
  // Asynchronous: one write per request line cost a blocking syscall on the request path; lines that
  // come while a write is out go together in the next one, and pino flushes what is left on exit.
  // Bounded: a reader that stops taking stdout costs at most 16 MiB, then lines are dropped, and
  // stderr says so (once a minute), instead of memory growing without end.
  const destination = pino.destination({ dest: 1, sync: false, maxLength: LOG_BUFFER_MAX_BYTES })
  let dropped = 0
  let toldAt = 0
  destination.on('drop', () => {
    dropped++
    if (Date.now() - toldAt < 60_000) return
    toldAt = Date.now()
    process.stderr.write(`sluice: stdout is not taking log lines; ${dropped} dropped so far (${LOG_BUFFER_MAX_BYTES} bytes are held)\n`)
  })
  return pino({
    level,
    redact: { paths: REDACT_PATHS, remove: true },
    base: { name: 'sluice' }
  }, destination)
}

/** Send a Sluice error as the envelope, with Retry-After where it applies. */
export function sendError (reply: FastifyReply, err: SluiceError): FastifyReply {
  const state = reply.request.sluice
  if (state !== undefined) {
    state.code = err.code
    if (state.outcome !== 'admin') state.outcome = 'rejected'
  }
  const body: Envelope = err.toEnvelope()
  body.error.details.request_id = reply.request.id
  if (err.retryAfterS !== undefined) reply.header('retry-after', String(err.retryAfterS))
  return reply.code(err.status).type('application/json').send(body)
}

function frameworkError (err: FastifyError): SluiceError {
  const status = err.statusCode ?? 500
  if (status === 413) return new SluiceError('PAYLOAD_TOO_LARGE', 413, 'the request body is larger than this route accepts')
  if (status === 415) return new SluiceError('BAD_REQUEST', 415, 'unsupported content type')
  if (status === 404) return new SluiceError('ROUTE_NOT_FOUND', 404, 'no route matches this path')
  if (status === 405) return new SluiceError('METHOD_NOT_ALLOWED', 405, 'method not allowed')
  if (status >= 400 && status < 500) return new SluiceError('BAD_REQUEST', status, err.message.slice(0, 200))
  return new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id')
}

export async function createSluice (config: SluiceConfig, options: CreateOptions = {}): Promise<SluiceServer> {
  const logger = options.logger ?? createLogger(config.logLevel)
  const store = options.store ?? await createStore(config)
  const timeouts: ServerTimeouts = { ...serverTimeouts(config), ...options.timeouts }
  const app = Fastify({
    loggerInstance: logger,
    // One log line per request comes from our onResponse hook, not from fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    requestIdHeader: false,
    bodyLimit: Math.max(...config.routes.map((r) => r.bodyLimit)),
    // Slow clients are bounded (client-error.ts): headers, the whole request, idle keep-alive, silence.
    requestTimeout: timeouts.requestMs,
    keepAliveTimeout: timeouts.keepAliveMs,
    connectionTimeout: timeouts.idleMs,
    // requireHostHeader off: a missing Host gets the envelope from request-guard.ts, not Node's empty 400.
    http: { headersTimeout: timeouts.headersMs, requestTimeout: timeouts.requestMs, connectionsCheckingInterval: timeouts.checkIntervalMs, requireHostHeader: false },
    // A path that is not valid percent-encoding: the envelope, without echoing the path.
    frameworkErrors: (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
      sendError(reply, err.code === 'FST_ERR_BAD_URL' ? new SluiceError('BAD_REQUEST', 400, 'the path is not valid percent-encoding') : frameworkError(err))
    },
    // What Node's parser refuses (smuggling shapes, oversized headers, timeouts) still gets an envelope.
    clientErrorHandler: clientErrorHandler(logger),
    return503OnClosing: true
  }) as unknown as FastifyInstance
  applyServerTimeouts(app.server, timeouts)
  refuseConnect(app.server, logger)
  const drain = new Drain()
  app.decorate('drain', drain)
  const limiters = new Map<string, RouteLimiter>()
  const schedulers = new Map<string, FairScheduler>()
  const observer = new Observer(config, store, limiters, logger, { schedulers })

  const guard = requestGuard(config)
  const scrub = secretScrubber(config.routes)
  // Callback-style hooks: one onRequest instead of three, and no promise per hook and request.
  app.addHook('onRequest', (request, reply, done) => {
    try {
      reply.header('x-request-id', request.id)
      // Dot segments (also percent-encoded) could walk out of a route's mount or its upstream's base
      // path; no API needs them, so they are refused before routing.
      if (DOT_SEGMENT.test(request.raw.url ?? '')) {
        throw new SluiceError('BAD_REQUEST', 400, 'the path contains "." or ".." segments, which Sluice does not forward')
      }
      guard(request, reply)
      drain.onRequest(request, reply)
    } catch (err) {
      done(err as Error)
      return
    }
    done()
  })
  app.addHook('onSend', (request, reply, payload, done) => { done(null, scrub(request, reply, payload)) })

  // One log line per request, and its count in the metrics: when the response is done (onResponse),
  // or, for an admitted request whose response never finished (the upstream's body broke off mid-way,
  // the client left after the request went upstream), when its connection closes, with `complete:
  // false` (admit() listens for that; a client that left while waiting is logged where it left).
  const ended = new WeakSet<FastifyRequest>()
  const requestEnded = (request: FastifyRequest, reply: FastifyReply, complete: boolean): void => {
    if (ended.has(request)) return
    ended.add(request)
    const s = request.sluice
    if (s?.outcome === 'admin') return
    // request.log already binds reqId.
    const line = {
      method: request.method,
      url: redactUrl(request.url),
      status: reply.statusCode,
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
      route: s?.route.name,
      bucket: s?.bucket,
      client: s?.client,
      waitMs: s === undefined ? undefined : Math.round(s.waitedMs),
      upstreamStatus: s?.upstreamStatus,
      retries: s?.retries !== undefined && s.retries > 0 ? s.retries : undefined,
      outcome: s?.outcome ?? 'unrouted',
      code: s?.code,
      complete: complete ? undefined : false
    }
    observer.finished(s, reply.statusCode)
    request.log.info(line, 'request')
  }
  app.addHook('onResponse', (request, reply, done) => {
    requestEnded(request, reply, true)
    done()
  })
  const unfinished = (request: FastifyRequest, reply: FastifyReply): void => {
    if (reply.raw.writableFinished) return
    try {
      requestEnded(request, reply, false)
    } catch (err) {
      logger.error({ err, reqId: request.id }, 'failed to log a request that did not finish')
    }
  }

  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof SluiceError) return sendError(reply, err)
    const state = request.sluice
    if (state?.route !== undefined && state.outcome !== 'admin' && isTransportError(err)) {
      // The upstream's headers came, then its body broke off before any of it was sent on (reset,
      // shorter than its Content-Length): the upstream's failure, answered as one (502), not Sluice's.
      request.log.warn({ reqId: request.id, route: state.route.name, code: (err as { code?: string }).code }, 'the upstream response broke off before its body')
      sendEnvelope(reply, state.route, sluiceErrorFromTransport(err, state.route.name, request.id))
      return reply
    }
    const mapped = frameworkError(err)
    if (mapped.status >= 500) request.log.error({ err, reqId: request.id }, 'unexpected error')
    return sendError(reply, mapped)
  })

  app.setNotFoundHandler((request, reply) => {
    sendError(reply, new SluiceError('ROUTE_NOT_FOUND', 404, `no route is mounted at ${shownPath(request)}`,
      { routes: config.routes.map((r) => r.prefix) }))
  })
  // /_sluice/ is Sluice's own: a path there that names no admin route is answered here, never
  // forwarded (a route mounted at / would otherwise take it; the router prefers this longer match).
  app.all('/_sluice/*', async (request) => {
    throw new SluiceError('ROUTE_NOT_FOUND', 404, `no admin route at ${shownPath(request)}; paths under /_sluice/ are Sluice's own and never forwarded`)
  })

  app.get('/_sluice/health', async (request) => {
    markAdmin(request)
    return { status: 'ok' }
  })
  app.get('/_sluice/ready', async (request, reply) => {
    markAdmin(request)
    // Each route says where it shapes now: redis, memory, or its onStoreError mode during an outage.
    const routes = Object.fromEntries([...limiters].map(([name, l]) => [name, l.storeMode]))
    try {
      await store.ping()
      return { status: 'ready', store: store.kind, routes }
    } catch {
      return await reply.code(503).header('retry-after', '1').send(envelope('STORE_UNAVAILABLE', 'the budget store is unreachable', { store: store.kind, routes, request_id: request.id }))
    }
  })

  // adminRoutes: essential leaves the observer's routes unmounted; request-guard.ts answers their paths
  // with 404 (so a route mounted at / cannot proxy them either).
  registerObserveRoutes(app, observer, { routes: config.adminRoutes !== 'essential' })

  const limiterStore = observer.timed(store)
  for (const route of config.routes) {
    const limiter = new RouteLimiter(route, limiterStore, (level, fields, message) => logger[level](fields, message))
    limiters.set(route.name, limiter)
    const scheduler = new FairScheduler(route, limiter, hashedWeights(route, config.hashSecret), store)
    schedulers.set(route.name, scheduler)
    app.addHook('onClose', async () => { scheduler.close() })
    await app.register(async (scope) => registerRoute(scope, route, limiter, { store: limiterStore, checkStore: store }, scheduler, config, unfinished))
  }

  return {
    app,
    store,
    limiters,
    schedulers,
    config,
    observer,
    listen: async () => {
      // A CI burst opens hundreds of connections at once: a deeper accept queue than Node's 511
      // (capped by the kernel's somaxconn) keeps them from being dropped and retried a second later.
      const address = await app.listen({ host: config.host, port: config.port, backlog: 4096 })
      return address
    },
    close: async () => {
      await app.close()
      await store.close()
    },
    shutdown: async (hurry?: Promise<void>) => {
      const result = await drain.run({
        timeoutMs: config.drainTimeoutMs ?? 30_000,
        // Forwarded requests end by themselves within their route's upstream timeout.
        graceMs: Math.max(...config.routes.map((r) => r.timeoutMs)) + 1000,
        stopAccepting: () => { app.server.close() },
        logger,
        hurry
      })
      // What is left are idle or half-sent connections: nothing to answer on them.
      app.server.closeAllConnections()
      await app.close()
      await store.close()
      return result
    }
  }
}

/** The request's path for an error message: redacted, without the query, bounded. */
function shownPath (request: FastifyRequest): string {
  return redactUrl(request.url).split('?')[0].slice(0, 200)
}

function markAdmin (request: FastifyRequest): void {
  request.sluice = { route: undefined as unknown as RouteConfig, bucket: undefined, waitedMs: 0, view: undefined, outcome: 'admin' }
}

async function registerRoute (scope: FastifyInstance, route: RouteConfig, limiter: RouteLimiter, stores: { store: BucketStore, checkStore: BucketStore }, scheduler: FairScheduler, config: SluiceConfig,
  unfinished: (request: FastifyRequest, reply: FastifyReply) => void): Promise<void> {
  const origin = new URL(route.upstream).origin
  const pool = new Pool(origin, {
    connections: 128,
    pipelining: 1,
    headersTimeout: route.timeoutMs,
    bodyTimeout: route.timeoutMs,
    connect: { timeout: route.connectTimeoutMs, rejectUnauthorized: true }
  }).compose(endBodilessResponses)
  scope.addHook('onClose', async () => { await pool.close() })

  async function admit (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const state: RequestState = { route, bucket: undefined, waitedMs: 0, view: undefined, outcome: 'forwarded' }
    request.sluice = state
    const length = Number(request.headers['content-length'] ?? 0)
    if (length > route.bodyLimit) {
      throw new SluiceError('PAYLOAD_TOO_LARGE', 413, `the request body of ${length} bytes is larger than the ${route.bodyLimit} bytes this route accepts`,
        { upstream: route.name, limit_bytes: route.bodyLimit, received_bytes: length })
    }
    const bucket = bucketFor(route, request.headers, config.hashSecret)
    if (bucket === undefined) {
      const header = route.key.kind === 'header' ? route.key.header : ''
      throw new SluiceError('BAD_REQUEST', 400, `route ${route.name} shares its budget per ${header} header, and the request has none`, { upstream: route.name, header })
    }
    state.bucket = bucket
    const client = clientFor(route, request.headers, request.ip, config.hashSecret).id
    state.client = client
    const priority = priorityFor(route, request.headers)
    // The path is decoded for cost rules only: a route without rules does not pay for it.
    const cost = route.cost.length === 0 ? DEFAULT_COST : costOf(route.cost, request.method, pathBelow(route.prefix, request.url))
    let maxWaitMs = route.maxWaitMs
    const prefer = request.headers.prefer
    const match = typeof prefer === 'string' ? PREFER_WAIT.exec(prefer) : null
    if (match !== null) {
      maxWaitMs = Math.min(maxWaitMs, Number(match[1]) * 1000)
      reply.header('preference-applied', `wait=${Math.round(maxWaitMs / 1000)}`)
    }
    state.maxWaitMs = maxWaitMs
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
        ? await limiter.admit(bucket, maxWaitMs, controller.signal, cost)
        : await scheduler.admit({ bucket, client, priority, cost, maxWaitMs, signal: controller.signal })
      // A body without Content-Length is counted as it streams upstream (413 past bodyLimit).
      if (request.body === request.raw && request.headers['content-length'] === undefined) request.body = limitBody(request.raw, route)
      state.waitedMs = admission.waitedMs
      state.view = { remaining: admission.reservation.remaining, resetMs: Math.max(0, admission.reservation.resetMs - admission.waitedMs) }
      // A concurrency slot (route `concurrency`) is held until the exchange with the client is over.
      if (admission.release !== undefined) reply.raw.once('close', admission.release)
      request.server.observer.admitted(state, admission, reply)
      reply.raw.once('close', () => unfinished(request, reply))
    } catch (err) {
      // Cut short by shutdown (shutdown.ts): the limiter gave the reservation back; the client is told.
      if (err instanceof ClientGoneError && controller.signal.reason === SHUTDOWN) throw shuttingDownError({ upstream: route.name, bucket })
      if (err instanceof ClientGoneError) {
        state.outcome = 'cancelled'
        request.server.observer.finished(state, 499)
        request.log.info({ route: route.name, bucket, outcome: 'cancelled', url: redactUrl(request.url) }, 'client left while waiting; not forwarded')
        reply.hijack()
        return
      }
      if (err instanceof SluiceError && err.code === 'RATE_LIMITED') {
        reply.headers(rateLimitHeaders(route, { remaining: 0, resetMs: Number(err.details.retry_after_ms ?? 0) }, 0))
      }
      throw err
    }
  }

  // One parser for every content type: JSON bodies are read and checked before admission
  // (MALFORMED_JSON takes no token); the rest streams (request-body.ts).
  scope.removeAllContentTypeParsers()
  scope.addContentTypeParser('*', requestBodyParser(route, route.mode === 'shadow' ? 0 : route.retryBodyLimit))

  await scope.register(proxy, {
    upstream: route.upstream,
    proxyPayloads: false,
    // Every attempt upstream: pauses on pushback, retries, the upstream's own numbers (forward.ts).
    handler: createForwarder({ route, limiter, ...stores, logger: scope.log }),
    prefix: route.prefix === '/' ? '' : route.prefix,
    preHandler: admit,
    undici: pool as never,
    disableRequestLogging: true,
    replyOptions: {
      // Retries go through the limiter (they take budget like any request), so reply-from's own
      // retries (GET on 503, up to 10 times) are turned off. reply-from reads this per call, from
      // the reply options: as a plugin option it was ignored.
      retryDelay: () => null,
      rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, unknown>) => {
        const out = forwardedRequestHeaders(headers)
        out['x-request-id'] = request.id
        return out
      },
      rewriteHeaders: (headers: Record<string, unknown>, request: FastifyRequest | undefined) => {
        // A copy: forward.ts still reads the upstream's own rate-limit headers from the original.
        const out = withoutHopByHop(headers)
        const state = request?.sluice
        if (request === undefined || state?.view === undefined) return out
        rateLimitHeaders(route, state.view, state.waitedMs, out)
        out['x-request-id'] = request.id
        return out
      }
    }
  } as never)
}
