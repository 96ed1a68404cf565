// Reload (SIGHUP, `sluice reload`): a new config swapped in without dropping a connection. Fastify
// cannot add or remove routes once it listens, so each reload builds a new fastify app (a
// "generation") that handles requests without a server of its own, and the one http.Server that
// listens is pointed at it: its 'request' listener is swapped in one synchronous step, so every
// request lands on exactly one generation and keep-alive connections stay open. What outlives a
// reload is shared: the store, the observer (metrics keep counting), and, for each route whose budget
// settings did not change, its RouteLimiter and FairScheduler (queues, pauses, learned limits, leases).
// The old generation keeps serving the requests it already has (waiting ones keep their reservations)
// and drains like a shutdown; then its own parts are closed. Process-wide settings that cannot change
// live (listen address, store, key prefix, hash secret) keep their running values until a restart.
import { Server, type IncomingMessage, type ServerResponse } from 'node:http'
import { Server as TlsServer } from 'node:tls'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { RouteConfig, SluiceConfig } from '../config/schema'
import { loadTls } from '../config/tls'
import type { FairScheduler } from '../limiter/fair-scheduler'
import { createServer, wireApp, type KeptRoute, type SluiceServer } from './app'
import { serverTimeouts, applyServerTimeouts } from './client-error'
import { Drain, type DrainResult } from './shutdown'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** Settings read once at start-up: a reload that changes them logs that a restart is needed. */
const RESTART_ONLY = ['host', 'port', 'redis', 'keyPrefix', 'hashSecret'] as const

/** Route fields that only shape forwarding: changing them keeps the route's budget state. */
const FORWARDING_FIELDS = new Set<keyof RouteConfig>(['prefix', 'upstream', 'profile', 'errors', 'timeoutMs', 'bodyLimit', 'retryBodyLimit', 'retries', 'retryMethods', 'connectTimeoutMs', 'bodyTimeoutMs'])

function budgetKey (route: RouteConfig): string {
  return JSON.stringify(Object.entries(route).filter(([k]) => !FORWARDING_FIELDS.has(k as keyof RouteConfig)))
}

export interface ReloadSummary {
  added: string[]
  removed: string[]
  /** Budget settings changed: new limiter and scheduler (the old ones finish what they hold). */
  rebudgeted: string[]
  /** Only forwarding settings changed: budget state kept. */
  reforwarded: string[]
  unchanged: string[]
  /** Settings whose change waits for a restart (their running values stay). */
  restartNeeded: string[]
}

interface Generation {
  app: FastifyInstance
  drain: Drain
  handler: Handler
  config: SluiceConfig
  schedulers: Map<string, FairScheduler>
}

export class Reloader {
  private current: Generation
  private readonly first: FastifyInstance
  private readonly retiring = new Set<Promise<void>>()
  private hurryRetiring: () => void = () => {}
  private readonly hurried = new Promise<void>((resolve) => { this.hurryRetiring = resolve })

  /** Takes over the server's shutdown and close: they end every generation. */
  constructor (private readonly sluice: SluiceServer, private readonly logger: Logger) {
    this.first = sluice.app
    const handler = sluice.app.server.listeners('request')[0] as Handler
    this.current = { app: sluice.app, drain: sluice.app.drain, handler, config: sluice.config, schedulers: new Map(sluice.schedulers) }
    sluice.shutdown = async (hurry) => await this.shutdown(hurry)
    sluice.close = async () => { await this.shutdown(Promise.resolve()) }
  }

  private get server (): Server {
    return this.first.server as Server
  }

  get config (): SluiceConfig {
    return this.current.config
  }

  /** Swap `next` in; resolves once new requests see it (the old generation drains on its own). */
  async reload (wanted: SluiceConfig): Promise<ReloadSummary> {
    const before = this.current.config
    const restartNeeded: string[] = RESTART_ONLY.filter((k) => wanted[k] !== before[k])
    const next: SluiceConfig = { ...wanted, ...Object.fromEntries(RESTART_ONLY.map((k) => [k, before[k]])) }
    // HTTPS on or off needs another kind of server; new certificate files (or the same paths rotated
    // in place, as cert-manager does) go into the running one for new handshakes.
    if ((before.tls === undefined) !== (wanted.tls === undefined)) {
      restartNeeded.push('tls')
      next.tls = before.tls
    }
    const secure = next.tls === undefined ? undefined : loadTls(next.tls)
    const summary = diffRoutes(before.routes, next.routes, restartNeeded)
    const kept = new Map<string, KeptRoute>()
    for (const name of [...summary.unchanged, ...summary.reforwarded]) {
      kept.set(name, { limiter: this.sluice.limiters.get(name)!, scheduler: this.sluice.schedulers.get(name)! })
    }
    let handler: Handler | undefined
    const logger = this.logger
    const timeouts = serverTimeouts(next)
    const app = createServer(next, logger, timeouts, (h) => { handler = h; return new Server() })
    const drain = new Drain()
    const shared = { logger, store: this.sluice.store, observer: this.sluice.observer, limiters: this.sluice.limiters, schedulers: this.sluice.schedulers }
    const own = await wireApp(app, next, shared, drain, kept, false)
    await app.ready()
    // The swap: synchronous, so no request falls between two generations.
    const old = this.current
    this.server.removeListener('request', old.handler)
    this.server.on('request', handler!)
    this.current = { app, drain, handler: handler!, config: next, schedulers: own.schedulers }
    replace(this.sluice.limiters, own.limiters)
    replace(this.sluice.schedulers, own.schedulers)
    this.sluice.observer.reconfigure(next)
    this.sluice.config = next
    applyServerTimeouts(this.server, timeouts)
    if (secure !== undefined && this.server instanceof TlsServer) this.server.setSecureContext({ cert: secure.cert, key: secure.key })
    logger.level = next.logLevel
    this.retire(old, new Set(own.schedulers.values()))
    return summary
  }

  /** Let the old generation finish what it holds (like a shutdown's drain), then close its own parts. */
  private retire (old: Generation, stillUsed: Set<FairScheduler>): void {
    const bound = Math.max(old.config.drainTimeoutMs ?? 30_000, ...old.config.routes.map((r) => r.maxWaitMs))
    const done = old.drain.run({
      timeoutMs: bound,
      graceMs: Math.max(...old.config.routes.map((r) => r.timeoutMs)) + 1000,
      stopAccepting: () => {},
      logger: this.logger,
      hurry: this.hurried
    }).then(async () => {
      for (const s of old.schedulers.values()) if (!stillUsed.has(s)) s.close()
      // The first generation owns the listening server and the observer: it closes at shutdown only.
      if (old.app !== this.first) await old.app.close()
    }).catch((err: unknown) => { this.logger.error({ err }, 'closing the previous config\'s server failed') })
    this.retiring.add(done)
    void done.finally(() => this.retiring.delete(done))
  }

  /** Graceful shutdown of whatever generations there are (replaces SluiceServer.shutdown). */
  async shutdown (hurry?: Promise<void>): Promise<DrainResult> {
    void hurry?.then(() => this.hurryRetiring())
    const current = this.current
    const config = current.config
    const result = await current.drain.run({
      timeoutMs: config.drainTimeoutMs ?? 30_000,
      graceMs: Math.max(...config.routes.map((r) => r.timeoutMs)) + 1000,
      stopAccepting: () => { this.server.close() },
      logger: this.logger,
      hurry
    })
    this.hurryRetiring()
    await Promise.all(this.retiring)
    this.server.closeAllConnections()
    for (const s of current.schedulers.values()) s.close()
    if (current.app !== this.first) await current.app.close()
    await this.first.close()
    await this.sluice.store.close()
    return result
  }
}

function replace<K, V> (target: Map<K, V>, from: Map<K, V>): void {
  target.clear()
  for (const [k, v] of from) target.set(k, v)
}

function diffRoutes (before: RouteConfig[], after: RouteConfig[], restartNeeded: string[]): ReloadSummary {
  const old = new Map(before.map((r) => [r.name, r]))
  const summary: ReloadSummary = { added: [], removed: [], rebudgeted: [], reforwarded: [], unchanged: [], restartNeeded }
  for (const r of after) {
    const was = old.get(r.name)
    if (was === undefined) summary.added.push(r.name)
    else if (budgetKey(was) !== budgetKey(r)) summary.rebudgeted.push(r.name)
    else if (JSON.stringify(was) !== JSON.stringify(r)) summary.reforwarded.push(r.name)
    else summary.unchanged.push(r.name)
  }
  const names = new Set(after.map((r) => r.name))
  summary.removed = before.filter((r) => !names.has(r.name)).map((r) => r.name)
  return summary
}
