// Checks on the request target before routing: only origin-form targets ("/path?query") are routed,
// so an absolute-form target ("GET http://other-host/ HTTP/1.1") or an authority ("example.com:443")
// can never name a host; and the optional admin routes can be turned off.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { SluiceConfig } from '../config/schema'
import { SluiceError } from '../errors'

/** The methods the proxy forwards (@fastify/http-proxy's list); others get 405, not 404. */
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/** Admin paths that stay on with adminRoutes: essential (liveness and readiness probes need them). */
const ESSENTIAL = new Set(['/_sluice/health', '/_sluice/ready'])

export function requestGuard (config: SluiceConfig) {
  const essentialOnly = config.adminRoutes === 'essential'
  return function guard (request: FastifyRequest, reply: FastifyReply): void {
    const target = request.raw.url ?? ''
    // HTTP/1.1 needs exactly one Host (RFC 9112 3.2); Node keeps the first of several silently.
    if (request.raw.httpVersion === '1.1') {
      let hosts = 0
      for (let i = 0; i < request.raw.rawHeaders.length; i += 2) if (request.raw.rawHeaders[i]!.toLowerCase() === 'host') hosts++
      if (hosts !== 1) throw new SluiceError('BAD_REQUEST', 400, `an HTTP/1.1 request needs exactly one Host header, this one has ${hosts}`)
    }
    // "*" (OPTIONS *) and every other form are refused: Sluice only forwards paths under a route.
    if (!target.startsWith('/') || target.startsWith('//')) {
      throw new SluiceError('BAD_REQUEST', 400, 'the request target must be a path starting with a single "/"; Sluice forwards only to its configured upstreams')
    }
    // What reply-from refuses to build an upstream URL from (a segment starting or ending in "..",
    // once decoded, e.g. "..;"), refused here first, with the envelope, before admission.
    let decoded: string
    try {
      decoded = decodeURIComponent(target)
    } catch {
      // reply-from decodes path and query alike, and would throw on them later.
      throw new SluiceError('BAD_REQUEST', 400, 'the request target (path or query) is not valid percent-encoding, e.g. a "%" not followed by two hex digits')
    }
    if (decoded.includes('/..') || decoded.includes('../')) {
      throw new SluiceError('BAD_REQUEST', 400, 'the path contains a segment starting or ending with "..", which Sluice does not forward')
    }
    if (!METHODS.has(request.method)) {
      reply.header('allow', [...METHODS].join(', '))
      throw new SluiceError('METHOD_NOT_ALLOWED', 405, `method ${request.method.slice(0, 20)} is not forwarded; Sluice forwards ${[...METHODS].join(', ')}`, { allow: [...METHODS] })
    }
    // fastify and @fastify/http-proxy drop the body of a GET or HEAD (RFC 9110 gives it no meaning), so
    // forwarding the rest would silently send another request (a search without its query): refused.
    if ((request.method === 'GET' || request.method === 'HEAD') && hasBody(request.headers)) {
      throw new SluiceError('BAD_REQUEST', 400, `a ${request.method} request with a body cannot be forwarded: Sluice would have to drop the body; send it with POST (search APIs such as Elasticsearch accept both)`,
        { method: request.method })
    }
    if (essentialOnly && (target === '/_sluice' || target.startsWith('/_sluice/') || target.startsWith('/_sluice?'))) {
      const path = target.split('?')[0]
      if (!ESSENTIAL.has(path)) throw new SluiceError('ROUTE_NOT_FOUND', 404, 'this admin route is turned off (adminRoutes: essential)')
    }
  }
}

/** A body follows the headers: a Content-Length other than 0, or any Transfer-Encoding. */
function hasBody (headers: FastifyRequest['headers']): boolean {
  const length = headers['content-length']
  return (length !== undefined && length.trim() !== '0') || headers['transfer-encoding'] !== undefined
}
