// The egress proxy upstream connections go through: `egressProxy` (--egress-proxy, SLUICE_EGRESS_PROXY)
// when set, else the conventional variables (http_proxy/HTTP_PROXY, https_proxy/HTTPS_PROXY,
// no_proxy/NO_PROXY; the lower-case one wins, as in curl and undici). `egressProxy: none` turns the
// variables off. NO_PROXY applies either way.
import { ConfigError } from '../errors'

export interface EgressConfig {
  /** Proxy for http:// upstreams (absolute-form requests through it). */
  httpProxy?: string
  /** Proxy for https:// upstreams (a CONNECT tunnel through it). */
  httpsProxy?: string
  /** Hosts reached directly: comma- or space-separated names, `.suffix`, `*.suffix`, `host:port`, or `*`. */
  noProxy?: string
}

function variable (env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name.toLowerCase()] ?? env[name.toUpperCase()]
  return v === undefined || v.trim() === '' ? undefined : v.trim()
}

function proxyUrl (field: string, value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(field, 'expected an http:// or https:// proxy URL such as http://proxy.internal:3128')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(field, `expected an http:// or https:// proxy URL, got protocol ${url.protocol}`)
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') throw new ConfigError(field, `expected a proxy URL without a path or query, got ${maskUrl(value)}`)
  return url.href.replace(/\/$/, '')
}

/** The egress settings, or undefined when upstreams are reached directly. */
export function resolveEgress (explicit: unknown, env: NodeJS.ProcessEnv): EgressConfig | undefined {
  const noProxy = variable(env, 'no_proxy')
  const withNoProxy = (e: EgressConfig): EgressConfig => noProxy === undefined ? e : { ...e, noProxy }
  if (explicit !== undefined && explicit !== '') {
    if (typeof explicit !== 'string') throw new ConfigError('egressProxy', 'expected a proxy URL such as http://proxy.internal:3128, or none')
    if (explicit === 'none') return undefined
    const uri = proxyUrl('egressProxy', explicit)
    return withNoProxy({ httpProxy: uri, httpsProxy: uri })
  }
  const http = variable(env, 'http_proxy')
  const https = variable(env, 'https_proxy')
  if (http === undefined && https === undefined) return undefined
  // As in undici's EnvHttpProxyAgent: HTTP_PROXY alone serves https upstreams too; HTTPS_PROXY alone only them.
  return withNoProxy({
    ...(http === undefined ? {} : { httpProxy: proxyUrl('HTTP_PROXY', http) }),
    httpsProxy: proxyUrl('HTTPS_PROXY', https ?? http as string)
  })
}

/** A URL with its password (and a user name that may be a token) masked, for logs and check-config. */
export function maskUrl (value: string): string {
  try {
    const u = new URL(value)
    if (u.password !== '') u.password = '***'
    else if (u.username !== '') u.username = '***'
    return u.href.replace(/\/$/, '')
  } catch {
    return 'invalid URL'
  }
}

/** One line for check-config and the start-up log: where upstream connections go, credentials masked. */
export function describeEgress (egress: EgressConfig | undefined): string {
  if (egress === undefined) return 'direct (no egress proxy)'
  const parts = [`http ${egress.httpProxy === undefined ? 'direct' : maskUrl(egress.httpProxy)}`, `https ${egress.httpsProxy === undefined ? 'direct' : maskUrl(egress.httpsProxy)}`]
  if (egress.noProxy !== undefined) parts.push(`not for ${egress.noProxy}`)
  return `proxy: ${parts.join(', ')}`
}
