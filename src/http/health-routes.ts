// Liveness and readiness probes: /_sluice/health (the process answers) and /_sluice/ready (the
// budget store answers; each route says where it shapes now). Both stay on with adminRoutes: essential.
import type { FastifyInstance } from 'fastify'
import { envelope } from '../errors'
import type { RouteLimiter } from '../limiter/route-limiter'
import type { BucketStore } from '../store/bucket-store'
import { markAdmin } from './request-state'

export function registerHealthRoutes (app: FastifyInstance, store: BucketStore, limiters: Map<string, RouteLimiter>): void {
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
}
