// Child process: the baseline proxy, @fastify/http-proxy on fastify with nothing else, with the same
// connection pool size to the upstream as Sluice (128 connections, no pipelining).
//
// With `frameworkFeatures`, the same proxy also uses what Sluice uses of fastify, pino and reply-from
// on every request, doing none of Sluice's own work: a pino logger (asynchronous, to the discarded
// stdout) with a request id per request, one callback hook each for onRequest, onSend and onResponse
// (which logs one line of the same fields as Sluice's), an async preHandler, and both header rewrites
// (request headers plus x-request-id; response headers plus the three RateLimit headers). It measures
// how much of the gap between Sluice and the bare proxy the framework's own machinery takes.
import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import proxy from '@fastify/http-proxy'
import pino from 'pino'
import { serveCalls } from './processes'

interface Options { upstream: string, frameworkFeatures?: boolean }

async function main (): Promise<void> {
  const { upstream, frameworkFeatures = false } = JSON.parse(process.argv[2]) as Options
  const app = frameworkFeatures
    ? Fastify({
      loggerInstance: pino({ level: 'info', base: { name: 'bench' } }, pino.destination({ dest: 1, sync: false })),
      logController: new LogController({ disableRequestLogging: true }),
      genReqId: () => randomUUID(),
      requestIdHeader: false
    }) as unknown as FastifyInstance
    : Fastify({ logger: false }) as unknown as FastifyInstance
  let proxyOptions: Record<string, unknown> = { upstream, undici: { connections: 128, pipelining: 1 } }
  if (frameworkFeatures) {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header('x-request-id', request.id)
      done()
    })
    app.addHook('onSend', (_request, _reply, payload, done) => { done(null, payload) })
    app.addHook('onResponse', (request, reply, done) => {
      const state = (request as unknown as { state?: { route: string, waitedMs: number } }).state
      request.log.info({
        method: request.method,
        url: request.url,
        status: reply.statusCode,
        durationMs: Math.round(reply.elapsedTime * 10) / 10,
        route: state?.route,
        bucket: state?.route,
        waitMs: state?.waitedMs,
        outcome: 'forwarded'
      }, 'request')
      done()
    })
    proxyOptions = {
      ...proxyOptions,
      preHandler: async (request: FastifyRequest, _reply: FastifyReply) => {
        (request as unknown as { state: unknown }).state = { route: 'bench', waitedMs: 0 }
      },
      replyOptions: {
        retryDelay: () => null,
        rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, unknown>) => ({ ...headers, 'x-request-id': request.id }),
        rewriteHeaders: (headers: Record<string, unknown>, request: FastifyRequest | undefined) => ({
          ...headers,
          'ratelimit-limit': '1000000',
          'ratelimit-remaining': '99999',
          'ratelimit-reset': '1',
          'x-request-id': request?.id
        })
      }
    }
  }
  await app.register(proxy, proxyOptions as never)
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  serveCalls(url, { cpu: () => process.cpuUsage() })
}

void main()
