// Errors of every kind leave as one envelope: Sluice's own refusals, fastify's (bad URL, body too
// large, no route), an upstream body that broke off before any of it was sent, and anything else.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { SluiceConfig } from '../config/schema'
import { SluiceError } from '../errors'
import type { RouteLimiter } from '../limiter/route-limiter'
import { isTransportError, sluiceErrorFromTransport } from '../upstream/normalize'
import { frameworkError, sendError } from './error-reply'
import { redactUrl } from './redact'
import { sendEnvelope } from './upstream-response'

/** fastify's `frameworkErrors`: a path that is not valid percent-encoding gets the envelope, without echoing the path. */
export function frameworkErrors (err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  sendError(reply, err.code === 'FST_ERR_BAD_URL' ? new SluiceError('BAD_REQUEST', 400, 'the path is not valid percent-encoding') : frameworkError(err))
}

export function registerErrorHandlers (app: FastifyInstance, config: SluiceConfig, limiters: Map<string, RouteLimiter>): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof SluiceError) return sendError(reply, err)
    const state = request.sluice
    const limiter = state?.route === undefined ? undefined : limiters.get(state.route.name)
    if (state?.route !== undefined && limiter !== undefined && state.outcome !== 'admin' && isTransportError(err)) {
      // The upstream's headers came, then its body broke off before any of it was sent on (reset,
      // shorter than its Content-Length): the upstream's failure, answered as one (502), not Sluice's.
      request.log.warn({ reqId: request.id, route: state.route.name, code: (err as { code?: string }).code }, 'the upstream response broke off before its body')
      sendEnvelope(reply, limiter, sluiceErrorFromTransport(err, state.route.name, request.id))
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
}

/** The request's path for an error message: redacted, without the query, bounded. */
function shownPath (request: FastifyRequest): string {
  return redactUrl(request.url).split('?')[0].slice(0, 200)
}
