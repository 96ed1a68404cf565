// Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, not the message: the upstream's
// "Connection: keep-alive" must not reach the client (it would override the client's own
// "Connection: close", and Node would keep a socket open that the client meant to end).
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade'])

/** A copy of `headers` without the hop-by-hop ones and those the Connection header names. One pass, on every response. */
export function withoutHopByHop<T extends Record<string, unknown>> (headers: T): T {
  const connection = headers.connection
  const named = typeof connection === 'string' ? connection.toLowerCase().split(',').map((s) => s.trim()) : undefined
  const out: Record<string, unknown> = {}
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || named?.includes(name) === true) continue
    out[name] = headers[name]
  }
  return out as T
}

/** Request headers that never go upstream (see forwardedRequestHeaders). */
const NOT_FORWARDED = ['expect', ...HOP_BY_HOP, 'proxy-authorization', 'x-sluice-client', 'x-sluice-priority']

/**
 * Request headers as they go upstream. `Expect: 100-continue` was already answered by Node (it sends
 * the interim 100 itself); undici refuses to send the header, which made every such request (curl
 * sends it for large uploads) a 502.
 */
export function forwardedRequestHeaders<T extends Record<string, unknown>> (headers: T): T {
  // reply-from hands over its own copy of the request's headers: changed in place, not copied again.
  // It drops Connection, Transfer-Encoding and what Connection names; the other hop-by-hop headers go
  // here, with Proxy-Authorization (a credential for a proxy on the way, which Sluice is; the API
  // must not see it) and Sluice's own request headers.
  for (const name of NOT_FORWARDED) delete headers[name]
  return headers
}
