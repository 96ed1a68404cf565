// Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, not the message: the upstream's
// "Connection: keep-alive" must not reach the client (it would override the client's own
// "Connection: close", and Node would keep a socket open that the client meant to end).
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']

export function withoutHopByHop<T extends Record<string, unknown>> (headers: T): T {
  const named = typeof headers.connection === 'string' ? headers.connection.toLowerCase().split(',').map((s) => s.trim()).filter((s) => s !== '') : []
  const out: Record<string, unknown> = { ...headers }
  for (const name of [...HOP_BY_HOP, ...named]) delete out[name]
  return out as T
}

/**
 * Request headers as they go upstream. `Expect: 100-continue` was already answered by Node (it sends
 * the interim 100 itself); undici refuses to send the header, which made every such request (curl
 * sends it for large uploads) a 502.
 */
export function forwardedRequestHeaders<T extends Record<string, unknown>> (headers: T): T {
  const out: Record<string, unknown> = { ...headers }
  delete out.expect
  return out as T
}
