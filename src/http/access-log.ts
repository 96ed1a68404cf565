// One log line per request, and its count in the metrics: when the response is done (onResponse),
// or, for an admitted request whose response never finished (the upstream's body broke off mid-way,
// the client left after the request went upstream), when its connection closes, with `complete:
// false` (admission.ts listens for that; a client that left while waiting is logged where it left).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Observer } from '../observe/observer'
import { redactUrl } from './redact'

/** Called when an admitted request's connection closes: logs it if its response did not finish. */
export type Unfinished = (request: FastifyRequest, reply: FastifyReply) => void

/** Logs every request that ends (admin routes aside) and returns the hook for unfinished ones. */
export function registerAccessLog (app: FastifyInstance, observer: Observer, logger: Logger): Unfinished {
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
  return (request, reply) => {
    if (reply.raw.writableFinished) return
    try {
      requestEnded(request, reply, false)
    } catch (err) {
      logger.error({ err, reqId: request.id }, 'failed to log a request that did not finish')
    }
  }
}
