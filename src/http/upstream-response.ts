// What comes back from the upstream: success streams through untouched; errors become the envelope.
import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError } from '../errors'
import { sendError } from './app'

interface UpstreamResponse {
  statusCode: number
  headers: Record<string, string | string[] | undefined>
  stream: Readable
}

export function handleUpstreamResponse (request: FastifyRequest, reply: FastifyReply, res: UpstreamResponse, route: RouteConfig): void {
  if (request.sluice !== undefined) request.sluice.upstreamStatus = res.statusCode
  reply.send(res.stream)
}

export function handleTransportError (reply: FastifyReply, error: Error & { statusCode?: number }, route: RouteConfig): void {
  const details = { upstream: route.name, retryable: true }
  if (error.statusCode === 504) {
    sendError(reply, new SluiceError('UPSTREAM_TIMEOUT', 504, `${route.name} did not answer in time`, details))
  } else if (error.statusCode === 503) {
    sendError(reply, new SluiceError('UPSTREAM_UNAVAILABLE', 503, `${route.name} could not be reached`, details))
  } else {
    sendError(reply, new SluiceError('BAD_GATEWAY', 502, `the connection to ${route.name} failed`, details))
  }
}
