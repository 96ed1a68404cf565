// Liveness and readiness probes: /_sluice/health (the process answers) and /_sluice/ready (200 only
// while every route shapes as configured: the budget store answers and takes writes, and no route is in
// its onStoreError mode; each route says where it shapes now, and why when not there). Both stay on
// with adminRoutes: essential.
import type { FastifyInstance } from 'fastify'
import { envelope } from '../errors'
import type { RouteLimiter } from '../limiter/route-limiter'
import { hasWriteProbe, type BucketStore } from '../store/bucket-store'
import { markAdmin } from './request-state'

export function registerHealthRoutes (app: FastifyInstance, store: BucketStore, limiters: Map<string, RouteLimiter>): void {
  app.get('/_sluice/health', async (request) => {
    markAdmin(request)
    return { status: 'ok' }
  })
  app.get('/_sluice/ready', async (request, reply) => {
    markAdmin(request)
    let storeError: unknown
    try {
      await store.ping()
      // A replica answers PING but refuses every reservation (READONLY): readiness writes too.
      if (hasWriteProbe(store)) await store.probeWrite()
      for (const l of limiters.values()) l.storeAnswers()
    } catch (err) {
      storeError = err
    }
    // Each route says where it shapes now: redis, memory, or its onStoreError mode, and why.
    const statuses = [...limiters].map(([name, l]) => ({ route: name, ...l.storeStatus() }))
    const routes = Object.fromEntries(statuses.map((s) => [s.route, s.mode]))
    const degraded = statuses.filter((s) => s.mode !== 'redis' && s.mode !== 'memory')
    if (storeError === undefined && degraded.length === 0) return { status: 'ready', store: store.kind, routes }
    const reason = storeError instanceof Error ? storeError.message.split('\n')[0] : undefined
    const message = storeError !== undefined
      ? `the budget store is unreachable or refuses writes${reason === undefined ? '' : ` (${reason})`}`
      : `${degraded.map((s) => `route ${s.route} shapes in mode ${s.mode}${s.reason === undefined ? '' : ` (${s.reason})`}`).join('; ')}, not in the shared store`
    return await reply.code(503).header('retry-after', '1').send(envelope('STORE_UNAVAILABLE', message,
      { store: store.kind, routes, degraded, ...(reason === undefined ? {} : { reason }), request_id: request.id }))
  })
}
