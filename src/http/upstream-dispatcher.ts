// The connection pool a route's requests go upstream through: a Pool to its origin, or, with an egress
// proxy (config/egress.ts), undici's EnvHttpProxyAgent, which sends http:// upstreams' requests to the
// proxy in absolute form, tunnels https:// ones with CONNECT, and goes direct for NO_PROXY hosts.
// Either way the route's timeouts hold per request (an interceptor sets them, since the proxy
// agent's inner pools do not all take the agent's options) and bodiless responses end cleanly.
import { EnvHttpProxyAgent, Pool, type Dispatcher } from 'undici'
import type { EgressConfig } from '../config/egress'
import type { RouteConfig } from '../config/schema'
import { endBodilessResponses } from './bodiless-responses'
import { Preconnector } from './preconnect'

/** Connections per upstream origin (per proxy, with one). */
const CONNECTIONS = 128

/** The route's header and body timeouts on every request, whatever pool carries it. */
function routeTimeouts (route: RouteConfig): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (opts, handler) => dispatch({ ...opts, headersTimeout: opts.headersTimeout ?? route.timeoutMs, bodyTimeout: opts.bodyTimeout ?? route.bodyTimeoutMs }, handler)
}

/**
 * The route's dispatcher, how many connections it has open to the upstream (or its proxy) now, and
 * (direct only) what opens connections ahead of a backlog's starts.
 */
export interface UpstreamDispatcher {
  dispatcher: Dispatcher
  connected: () => number
  preconnector?: Preconnector
}

/** `startsSoon`: requests that may start within the next window (RouteLimiter.startsSoon). */
export function upstreamDispatcher (route: RouteConfig, egress: EgressConfig | undefined, startsSoon: () => number = () => 0): UpstreamDispatcher {
  const common = {
    connections: CONNECTIONS,
    pipelining: 1,
    headersTimeout: route.timeoutMs,
    // Idle time between body chunks: a trickling body is cut, and with it its concurrency lease.
    bodyTimeout: route.bodyTimeoutMs,
    connect: { timeout: route.connectTimeoutMs, rejectUnauthorized: true }
  }
  if (egress === undefined) {
    const origin = new URL(new URL(route.upstream).origin)
    const preconnector = new Preconnector(origin, common.connect, CONNECTIONS, startsSoon)
    const pool = new Pool(origin, { ...common, connect: preconnector.connector })
    return { dispatcher: pool.compose(endBodilessResponses), connected: () => pool.stats.connected, preconnector }
  }
  const agent = new EnvHttpProxyAgent({
    ...common,
    // Explicit values (also empty ones): the agent must not read process.env behind the config's back.
    httpProxy: egress.httpProxy ?? '',
    httpsProxy: egress.httpsProxy ?? '',
    noProxy: egress.noProxy ?? '',
    // Plain http:// upstreams as absolute-form requests to the proxy (what proxies allow by default;
    // many refuse CONNECT to other ports than 443); https:// ones always through a CONNECT tunnel.
    proxyTunnel: false,
    proxyTls: { timeout: route.connectTimeoutMs },
    requestTls: { timeout: route.connectTimeoutMs, rejectUnauthorized: true }
  } as EnvHttpProxyAgent.Options)
  // The proxy agent does not count its connections: taken as none open, the margin keeps what a
  // new connection needs (margin-probe.ts), the cautious side.
  return { dispatcher: agent.compose(routeTimeouts(route), endBodilessResponses), connected: () => 0 }
}
