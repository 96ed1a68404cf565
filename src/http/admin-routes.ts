// The admin routes that show the budget: /_sluice/metrics (Prometheus text), /_sluice/status (JSON),
// /_sluice/events (Server-Sent Events) and /_sluice/ (the dashboard page, self-contained).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { envelope } from '../errors'
import type { AdminAuth } from './admin-auth'
import { markAdmin } from './request-state'
import type { Observer } from '../observe/observer'

declare module 'fastify' {
  interface FastifyInstance {
    /** Counters the request path may feed, e.g. `request.server.observer.retry(route.name, 'pushback')`. */
    observer: Observer
  }
}

// The page may load nothing from anywhere: inline style and script, and events from Sluice itself.
const DASHBOARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/**
 * Attach the observer (the request path reaches it as app.observer, its heartbeat starts with the
 * server and stops with it) and, unless `routes` is false (admin routes limited to health and
 * ready), mount its routes.
 */
export function registerObserveRoutes (app: FastifyInstance, observer: Observer, options: { routes?: boolean, auth?: AdminAuth, lifecycle?: boolean } = {}): void {
  app.decorate('observer', observer)
  // A reload's generation (lifecycle: false) shares the first one's observer and leaves it running.
  if (options.lifecycle !== false) {
    app.addHook('onReady', async () => { observer.start() })
    // Open event streams would keep fastify's close waiting: end them before the server closes.
    app.addHook('preClose', async () => { observer.events.closeAll() })
    app.addHook('onClose', async () => { await observer.close() })
  }
  if (options.routes === false) return
  const page = readFileSync(join(__dirname, '..', 'observe', 'dashboard.html'))
  // With an admin token, every route below needs it (admin-auth.ts); health and ready are elsewhere.
  const guarded = options.auth === undefined ? {} : { onRequest: options.auth.guard }

  app.get('/_sluice/metrics', guarded, async (request, reply) => {
    markAdmin(request)
    const text = await observer.metrics.registry.metrics()
    return await reply.type(observer.metrics.registry.contentType).header('cache-control', 'no-store').send(text)
  })

  app.get('/_sluice/status', guarded, async (request, reply) => {
    markAdmin(request)
    return await reply.header('cache-control', 'no-store').send(await observer.status())
  })

  app.get('/_sluice/events', guarded, async (request, reply) => {
    markAdmin(request)
    // A fresh status first (the ticks skip reading the store while nobody watches), then the history.
    await observer.status().catch(() => undefined)
    reply.hijack()
    if (!observer.events.open(reply.raw, observer.initialEvents())) {
      reply.raw.writeHead(429, { 'content-type': 'application/json', 'retry-after': '10' })
      reply.raw.end(JSON.stringify(envelope('QUEUE_FULL', 'too many dashboard event streams are open in this instance; close one', { request_id: request.id })))
    }
  })

  const dashboard = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    markAdmin(request)
    await reply.type('text/html; charset=utf-8').header('content-security-policy', DASHBOARD_CSP).header('cache-control', 'no-store').send(page)
  }
  app.get('/_sluice/', guarded, dashboard)
  app.get('/_sluice', guarded, dashboard)
}
