// The composition root: one fastify server with Sluice's hooks, error answers, admin routes, and per
// route: admission (reserve, wait) → proxy → upstream response → client. Each part lives in its own
// module; this one builds them and wires them together.
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Logger } from 'pino'
import type { SluiceConfig } from '../config/schema'
import { loadTls } from '../config/tls'
import { hashedWeights } from '../limiter/client-identity'
import { FairScheduler } from '../limiter/fair-scheduler'
import { RouteLimiter } from '../limiter/route-limiter'
import { AdminAuth } from './admin-auth'
import { registerObserveRoutes } from './admin-routes'
import { Observer } from '../observe/observer'
import type { BucketStore } from '../store/bucket-store'
import { createStore } from '../store/create-store'
import { watchEvictionPolicy } from '../store/eviction-policy'
import { RedisStore } from '../store/redis-store'
import { registerAccessLog } from './access-log'
import { applyServerTimeouts, clientErrorHandler, refuseConnect, serverTimeouts, type ServerTimeouts } from './client-error'
import { frameworkErrors, registerErrorHandlers } from './error-handler'
import { registerHealthRoutes } from './health-routes'
import { IDLE_MS, startIdleSweep } from './idle-sweep'
import { createLogger } from './logger'
import { registerRequestHooks, requestId } from './request-hooks'
import { registerRoute } from './route-proxy'
import { Drain, type DrainResult } from './shutdown'

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
  /** How long per-client and per-bucket figures stay once idle, ms (idle-sweep.ts; tests use a short one). */
  idleMs?: number
  /** The least time between probes of a learned limit, ms, instead of learned-limit.ts's (tests use short ones). */
  probeMinQuietMs?: number
}

export async function createSluice (config: SluiceConfig, options: CreateOptions = {}): Promise<SluiceServer> {
  const logger = options.logger ?? createLogger(config.logLevel)
  const store = options.store ?? await createStore(config, (fields, message) => logger.error(fields, message))
  const app = createServer(config, logger, { ...serverTimeouts(config), ...options.timeouts })
  const drain = new Drain()
  const limiters = new Map<string, RouteLimiter>()
  const schedulers = new Map<string, FairScheduler>()
  const idleMs = options.idleMs ?? IDLE_MS
  const observer = new Observer(config, store, limiters, logger, { schedulers, idleMs })
  const shared: Shared = { logger, store, observer, limiters, schedulers, probeMinQuietMs: options.probeMinQuietMs }
  const own = await wireApp(app, config, shared, drain)
  for (const [name, limiter] of own.limiters) limiters.set(name, limiter)
  for (const [name, scheduler] of own.schedulers) schedulers.set(name, scheduler)
  const stopSweep = startIdleSweep(shared, idleMs)
  app.addHook('onClose', async () => { stopSweep() })
  return { app, store, limiters, schedulers, config, observer, ...lifecycle(app, store, config, logger, drain) }
}

/** What outlives a reload (reload.ts): the store, the observer, and the maps of the routes served now. */
export interface Shared {
  logger: Logger
  store: BucketStore
  observer: Observer
  limiters: Map<string, RouteLimiter>
  schedulers: Map<string, FairScheduler>
  /** The least time between probes of a learned limit, ms (tests use short ones). */
  probeMinQuietMs?: number
}

/** A route's budget state a reload keeps: its limiter and fair scheduler (queues, pauses, learned limits). */
export interface KeptRoute { limiter: RouteLimiter, scheduler: FairScheduler }

/**
 * One generation of the server: hooks, admin routes and each route of `config`, with the limiter and
 * scheduler of `kept` where a route's budget did not change, new ones otherwise. `first`: the first
 * generation, which owns the observer's lifecycle and closes its schedulers with the app; a reload's
 * generation leaves both to reload.ts.
 */
export async function wireApp (app: FastifyInstance, config: SluiceConfig, shared: Shared, drain: Drain, kept = new Map<string, KeptRoute>(), first = true): Promise<{ limiters: Map<string, RouteLimiter>, schedulers: Map<string, FairScheduler> }> {
  const { logger, store, observer } = shared
  app.decorate('drain', drain)
  registerRequestHooks(app, config, drain)
  const unfinished = registerAccessLog(app, observer, logger)
  registerErrorHandlers(app, config, shared.limiters)
  registerHealthRoutes(app, store, shared.limiters)
  // A Redis that may evict Sluice's keys when full is said at start-up (eviction-policy.ts).
  if (first && store instanceof RedisStore) watchEvictionPolicy(store.client, (fields, message) => logger.warn(fields, message))
  // adminRoutes: essential leaves the observer's routes unmounted; request-guard.ts answers their paths
  // with 404 (so a route mounted at / cannot proxy them either).
  registerObserveRoutes(app, observer, { routes: config.adminRoutes !== 'essential', lifecycle: first, ...(config.adminToken === undefined ? {} : { auth: new AdminAuth(config.adminToken) }) })

  const limiters = new Map<string, RouteLimiter>()
  const schedulers = new Map<string, FairScheduler>()
  const limiterStore = observer.timed(store)
  for (const route of config.routes) {
    const reuse = kept.get(route.name)
    const limiter = reuse?.limiter ?? new RouteLimiter(route, limiterStore, (level, fields, message) => logger[level](fields, message))
    limiters.set(route.name, limiter)
    const scheduler = reuse?.scheduler ?? new FairScheduler(route, limiter, hashedWeights(route, config.hashSecret), store)
    schedulers.set(route.name, scheduler)
    if (first) app.addHook('onClose', async () => { scheduler.close() })
    await app.register(async (scope) => registerRoute(scope, { route, limiter, scheduler, store: limiterStore, checkStore: store, hashSecret: config.hashSecret, unfinished, egress: config.egress, probeMinQuietMs: shared.probeMinQuietMs }))
  }
  return { limiters, schedulers }
}

/** Listening, closing, and the graceful shutdown of the server and its store. */
function lifecycle (app: FastifyInstance, store: BucketStore, config: SluiceConfig, logger: Logger, drain: Drain): Pick<SluiceServer, 'listen' | 'close' | 'shutdown'> {
  return {
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

/**
 * The fastify server: request ids, timeouts for slow clients, and envelopes for what Node refuses.
 * `serverFactory` (a reload's generation): fastify routes requests handed to it, on no server of its own.
 */
export function createServer (config: SluiceConfig, logger: Logger, timeouts: ServerTimeouts, serverFactory?: FastifyServerOptions['serverFactory']): FastifyInstance {
  // requireHostHeader off: a missing Host gets the envelope from request-guard.ts, not Node's empty 400.
  const http = { headersTimeout: timeouts.headersMs, requestTimeout: timeouts.requestMs, connectionsCheckingInterval: timeouts.checkIntervalMs, requireHostHeader: false }
  // With `tls`, one HTTPS listener (HTTP/1.1 over TLS) serves the routes and the admin routes alike.
  // fastify hands only `https` to https.createServer (never `http`), so the same server options go there.
  const tls = config.tls === undefined ? undefined : loadTls(config.tls)
  const listener = tls === undefined ? { http } : { https: { ...http, cert: tls.cert, key: tls.key, ALPNProtocols: ['http/1.1'] } }
  const app = Fastify({
    ...(serverFactory === undefined ? {} : { serverFactory }),
    loggerInstance: logger,
    // One log line per request comes from our onResponse hook (access-log.ts), not from fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    requestIdHeader: false,
    bodyLimit: Math.max(...config.routes.map((r) => r.bodyLimit)),
    // Slow clients are bounded (client-error.ts): headers, the whole request, idle keep-alive, silence.
    requestTimeout: timeouts.requestMs,
    keepAliveTimeout: timeouts.keepAliveMs,
    connectionTimeout: timeouts.idleMs,
    ...listener,
    // A path that is not valid percent-encoding: the envelope, without echoing the path.
    frameworkErrors,
    // What Node's parser refuses (smuggling shapes, oversized headers, timeouts) still gets an envelope.
    clientErrorHandler: clientErrorHandler(logger),
    return503OnClosing: true
  }) as unknown as FastifyInstance
  if (serverFactory !== undefined) return app
  applyServerTimeouts(app.server, timeouts)
  refuseConnect(app.server, logger)
  return app
}
