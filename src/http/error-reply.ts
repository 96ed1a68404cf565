// Sluice's own errors leave as one envelope (errors.ts), with the request id and Retry-After where
// it applies; fastify's own refusals are mapped to the same codes first.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError } from '../errors'
import type { ProfileName } from '../profiles'
import { errorBody } from '../profiles/native'

/** The profile of the request's route; undefined for a request no route took (admin, unrouted). */
export function routeProfile (request: FastifyRequest): ProfileName | undefined {
  return (request.sluice?.route as RouteConfig | undefined)?.profile
}

/** Send a Sluice error as the envelope (with its route's native fields), with Retry-After where it applies. */
export function sendError (reply: FastifyReply, err: SluiceError): FastifyReply {
  const state = reply.request.sluice
  if (state !== undefined) {
    state.code = err.code
    if (state.outcome !== 'admin') state.outcome = 'rejected'
  }
  const envelope = err.toEnvelope()
  envelope.error.details.request_id = reply.request.id
  if (err.retryAfterS !== undefined) reply.header('retry-after', String(err.retryAfterS))
  const body = errorBody(routeProfile(reply.request), envelope, { status: err.status, ...(err.retryAfterS !== undefined ? { retryAfterS: err.retryAfterS } : {}) })
  return reply.code(err.status).type('application/json').send(body)
}

/** A refusal of fastify's own (body too large, unsupported type, no route, bad input) as a Sluice error. */
export function frameworkError (err: FastifyError): SluiceError {
  const status = err.statusCode ?? 500
  if (status === 413) return new SluiceError('PAYLOAD_TOO_LARGE', 413, 'the request body is larger than this route accepts')
  if (status === 415) return new SluiceError('BAD_REQUEST', 415, 'unsupported content type')
  if (status === 404) return new SluiceError('ROUTE_NOT_FOUND', 404, 'no route matches this path')
  if (status === 405) return new SluiceError('METHOD_NOT_ALLOWED', 405, 'method not allowed')
  if (status >= 400 && status < 500) return new SluiceError('BAD_REQUEST', status, err.message.slice(0, 200))
  return new SluiceError('INTERNAL_ERROR', 500, 'Sluice failed to handle this request; see its log for the request id')
}
