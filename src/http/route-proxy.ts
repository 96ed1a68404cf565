// One route, mounted at its prefix: a connection pool to its upstream, the body parser, admission
// (admission.ts) as the preHandler, and the proxy, whose every attempt upstream goes through
// forward.ts, with the route's budget told in the response headers.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import proxy from '@fastify/http-proxy'
import type { RouteConfig } from '../config/schema'
import type { FairScheduler } from '../limiter/fair-scheduler'
import type { RouteLimiter } from '../limiter/route-limiter'
import { LearnedLimit } from '../limiter/learned-limit'
import { UpstreamSignals } from '../limiter/upstream-signals'
import type { BucketStore } from '../store/bucket-store'
import type { Unfinished } from './access-log'
import { createAdmission } from './admission'
import { createForwarder } from './forward'
import { forwardedRequestHeaders, withoutHopByHop } from './hop-by-hop'
import type { EgressConfig } from '../config/egress'
import { hasOwnRateLimitFields, rateLimitHeaders } from './rate-limit-headers'
import { marginProbe } from './margin-probe'
import { requestBodyParser } from './request-body'
import { upstreamDispatcher } from './upstream-dispatcher'

export interface RouteParts {
  route: RouteConfig
  limiter: RouteLimiter
  scheduler: FairScheduler
  /** The store the limiter reserves in (instrumented), where pauses are set. */
  store: BucketStore
  /** The same store without instrumentation, whose pause announcements are followed. */
  checkStore: BucketStore
  hashSecret: string
  unfinished: Unfinished
  /** The egress proxy upstream connections go through; undefined: direct. */
  egress?: EgressConfig
  /** The least time between probes of a learned limit, ms (learned-limit.ts's default when undefined). */
  probeMinQuietMs?: number
}

export async function registerRoute (scope: FastifyInstance, parts: RouteParts): Promise<void> {
  const { route, limiter } = parts
  const { dispatcher: pool, connected, preconnector } = upstreamDispatcher(route, parts.egress, () => limiter.startsSoon(parts.scheduler.heldAll()))
  scope.addHook('onClose', async () => {
    preconnector?.close()
    await pool.close()
  })
  // Connections for the next window's starts are opened while their requests wait (preconnect.ts).
  if (preconnector !== undefined) limiter.onWaiting = (inMs) => preconnector.waiting(inMs)
  const probe = marginProbe(scope, parts, connected)

  // One parser for every content type: JSON bodies are read and checked before admission
  // (MALFORMED_JSON takes no token); the rest streams (request-body.ts).
  scope.removeAllContentTypeParsers()
  scope.addContentTypeParser('*', requestBodyParser(route, route.mode === 'shadow' ? 0 : route.retryBodyLimit))

  const log = scope.log
  const limiterLog = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string): void => log[level](fields, message)
  const learned = LearnedLimit.for({ route, sources: limiter.sources, store: parts.checkStore, log: limiterLog, minQuietMs: parts.probeMinQuietMs })
  if (learned !== undefined) scope.addHook('onClose', async () => { learned.close() })
  const signals = new UpstreamSignals({ route, limiter, store: parts.store, checkStore: parts.checkStore, log: limiterLog, learned })
  await scope.register(proxy, {
    upstream: route.upstream,
    proxyPayloads: false,
    // Every attempt upstream: pauses on pushback, retries, the upstream's own numbers (forward.ts).
    handler: createForwarder({ route, limiter, signals, logger: log }),
    prefix: route.prefix === '/' ? '' : route.prefix,
    preHandler: createAdmission({ ...parts, signals }),
    undici: pool as never,
    disableRequestLogging: true,
    replyOptions: {
      // Retries go through the limiter (they take budget like any request), so reply-from's own
      // retries (GET on 503, up to 10 times) are turned off. reply-from reads this per call, from
      // the reply options: as a plugin option it was ignored.
      retryDelay: () => null,
      rewriteRequestHeaders: (request: FastifyRequest, headers: Record<string, unknown>) => {
        const out = forwardedRequestHeaders(headers)
        out['x-request-id'] = request.id
        const state = request.sluice
        if (probe !== undefined && state?.startAt !== undefined && state.bucket !== undefined) probe.expect(request.id, state.bucket, state.startAt, state)
        return out
      },
      rewriteHeaders: (headers: Record<string, unknown>, request: FastifyRequest | undefined) => {
        // A copy: forward.ts still reads the upstream's own rate-limit headers from the original.
        const out = withoutHopByHop(headers)
        const state = request?.sluice
        if (request === undefined || state?.view === undefined) return out
        // The upstream's own X-RateLimit-* pass untouched; Sluice's trio only stands in where it sent none.
        state.upstreamRateLimit = hasOwnRateLimitFields(headers)
        rateLimitHeaders(limiter, state.view, state.waitedMs, out, !state.upstreamRateLimit)
        out['x-request-id'] = request.id
        return out
      }
    }
  } as never)
}
