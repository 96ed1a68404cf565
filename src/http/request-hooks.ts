// What every request goes through before routing (an id, the target checks, the drain) and every
// response before it leaves (secrets of the request scrubbed from the body).
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyInstance } from 'fastify'
import type { SluiceConfig } from '../config/schema'
import { SluiceError } from '../errors'
import { requestGuard } from './request-guard'
import { secretScrubber } from './secret-scrub'
import type { Drain } from './shutdown'

const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:[/?#]|%2f|%5c|\\|$)/i
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** fastify's `genReqId`: the client's X-Request-Id when it is a sane one, else a fresh UUID. */
export function requestId (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

export function registerRequestHooks (app: FastifyInstance, config: SluiceConfig, drain: Drain): void {
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
}
