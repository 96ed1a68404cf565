// Failures before or while receiving a response (refused, reset, timed out, TLS, DNS): the error Node,
// undici or @fastify/reply-from raised, turned into Sluice's envelope. Never throws.
import { envelope, type ErrorCode } from '../errors'
import { redactText } from '../secrets'
import { lastResort, type NormalizedError } from './normalized-error'

interface TransportRule {
  status: number
  code: ErrorCode
  retryable: boolean
  message: string
}

const TIMEOUT: TransportRule = { status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true, message: 'The upstream did not answer in time' }
// Connection refused is 503, not 502: nothing listens, the request provably never
// reached the upstream, so it is safe to retry for any method, like an upstream 503.
const REFUSED: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream refused the connection' }
const UNREACHABLE: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream host is unreachable' }
const DNS_FAILED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The upstream host name does not resolve' }
const DNS_TRY_AGAIN: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: true, message: 'The upstream host name could not be resolved right now' }
const TLS_FAILED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The TLS connection to the upstream failed' }
const RESET: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: true, message: 'The upstream closed the connection' }
const INVALID_RESPONSE: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The upstream sent an invalid HTTP response' }
const UNAVAILABLE: TransportRule = { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, message: 'The upstream is unavailable' }
const PROXY_REFUSED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The egress proxy refused the tunnel to the upstream' }
const PROXY_FAILED: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: true, message: 'The egress proxy could not open the tunnel to the upstream' }
/** undici's ProxyAgent, when the proxy answers CONNECT with anything but 200. */
const PROXY_STATUS = /^Proxy response \((\d{3})\) !== 200 when HTTP Tunneling/
const UNKNOWN: TransportRule = { status: 502, code: 'BAD_GATEWAY', retryable: false, message: 'The request to the upstream failed' }

const TRANSPORT_RULES: Readonly<Record<string, TransportRule>> = {
  UND_ERR_HEADERS_TIMEOUT: TIMEOUT,
  UND_ERR_BODY_TIMEOUT: TIMEOUT,
  UND_ERR_CONNECT_TIMEOUT: TIMEOUT,
  ETIMEDOUT: TIMEOUT,
  ESOCKETTIMEDOUT: TIMEOUT,
  FST_REPLY_FROM_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP2_REQUEST_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_HTTP2_SESSION_TIMEOUT: TIMEOUT,
  FST_REPLY_FROM_GATEWAY_TIMEOUT: TIMEOUT,
  ECONNREFUSED: REFUSED,
  EHOSTUNREACH: UNREACHABLE,
  ENETUNREACH: UNREACHABLE,
  EHOSTDOWN: UNREACHABLE,
  ENETDOWN: UNREACHABLE,
  ENOTFOUND: DNS_FAILED,
  EAI_AGAIN: DNS_TRY_AGAIN,
  EPROTO: TLS_FAILED,
  DEPTH_ZERO_SELF_SIGNED_CERT: TLS_FAILED,
  SELF_SIGNED_CERT_IN_CHAIN: TLS_FAILED,
  HOSTNAME_MISMATCH: TLS_FAILED,
  ECONNRESET: RESET,
  EPIPE: RESET,
  ECONNABORTED: RESET,
  UND_ERR_SOCKET: RESET,
  UND_ERR_CLOSED: RESET,
  ERR_STREAM_PREMATURE_CLOSE: RESET,
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: RESET,
  FST_REPLY_FROM_SERVICE_UNAVAILABLE: UNAVAILABLE,
  FST_REPLY_FROM_BAD_GATEWAY: INVALID_RESPONSE
}

function transportRule (code: string, name: string): TransportRule | undefined {
  const rule = TRANSPORT_RULES[code]
  if (rule !== undefined) return rule
  // Node's TLS and OpenSSL errors come in families; one rule per prefix.
  if (/^(?:ERR_TLS_|ERR_SSL_|ERR_OSSL_|CERT_|UNABLE_TO_(?:GET|VERIFY|DECRYPT))/.test(code)) return TLS_FAILED
  if (code.startsWith('HPE_')) return INVALID_RESPONSE // llhttp parser: the response was not HTTP
  if (name === 'TimeoutError') return TIMEOUT // AbortSignal.timeout()
  return undefined
}

/**
 * The envelope for a failure to get a response at all: a Node/undici error, or the error
 * @fastify/reply-from wraps around one (which hides the real code in `cause`, e.g. it
 * reports ECONNREFUSED as a 500 FST_REPLY_FROM_INTERNAL_SERVER_ERROR). The innermost
 * recognised cause decides. Status choices:
 * - timeouts → 504 UPSTREAM_TIMEOUT (retryable);
 * - ECONNREFUSED, host/network unreachable → 503 UPSTREAM_UNAVAILABLE (retryable: never reached the upstream);
 * - ENOTFOUND → 502 BAD_GATEWAY (not retryable: usually a wrong host); EAI_AGAIN → 502 (retryable);
 * - TLS failures → 502 BAD_GATEWAY (not retryable);
 * - ECONNRESET, EPIPE, UND_ERR_SOCKET → 502 BAD_GATEWAY (retryable; the upstream may have acted);
 * - the egress proxy answering CONNECT with other than 200 → 502 BAD_GATEWAY, `details.proxy_status`
 *   (retryable when that status is a 5xx);
 * - anything else → 502 BAD_GATEWAY (not retryable).
 * `details.upstream_status` is null: no response was received.
 */
export function sluiceErrorFromTransport (err: unknown, route: string, requestId: string): NormalizedError {
  try {
    const chain = causeChain(err)
    const proxyStatus = chain.map((link) => PROXY_STATUS.exec(link.message)?.[1]).find((s) => s !== undefined)
    const match = proxyStatus === undefined ? innermostTransport(chain) : undefined
    const transportCode = match?.code
    const chosen = proxyStatus === undefined ? match?.rule ?? UNKNOWN : Number(proxyStatus) >= 500 ? PROXY_FAILED : PROXY_REFUSED
    const details: Record<string, unknown> = {
      upstream: String(route),
      upstream_status: null,
      retryable: chosen.retryable,
      request_id: String(requestId)
    }
    if (proxyStatus !== undefined) details.proxy_status = Number(proxyStatus)
    const firstCode = chain.find(link => link.code !== '')?.code
    if (transportCode !== undefined || firstCode !== undefined) details.transport_code = transportCode ?? firstCode
    const innermost = chain[chain.length - 1]
    if (innermost !== undefined && innermost.message !== '') details.transport_message = redactText(innermost.message).slice(0, 200)
    return { status: chosen.status, envelope: envelope(chosen.code, chosen.message, details) }
  } catch (caught) {
    return lastResort({ route, requestId }, caught)
  }
}

/** True when the error, or one it wraps, is a failure to get (all of) a response, not a fault of Sluice's. */
export function isTransportError (err: unknown): boolean {
  try {
    return innermostTransport(causeChain(err)) !== undefined
  } catch {
    return false
  }
}

/** The innermost recognised cause decides: its rule, and its code (or name) for the details. */
function innermostTransport (chain: CauseLink[]): { rule: TransportRule, code: string } | undefined {
  for (let i = chain.length - 1; i >= 0; i--) {
    const link = chain[i]
    if (link === undefined) continue
    const rule = transportRule(link.code, link.name)
    if (rule !== undefined) return { rule, code: link.code !== '' ? link.code : link.name }
  }
  return undefined
}

interface CauseLink {
  code: string
  name: string
  message: string
}

/** The error and its causes, outermost first; AggregateError (Node's happy eyeballs) contributes its first error. */
function causeChain (err: unknown): CauseLink[] {
  const chain: CauseLink[] = []
  const seen = new Set<unknown>()
  let current: unknown = err
  while (isObjectLike(current) && !seen.has(current) && chain.length < 8) {
    seen.add(current)
    const code = current.code
    const name = current.name
    const message = current.message
    chain.push({
      code: typeof code === 'string' ? code : '',
      name: typeof name === 'string' ? name : '',
      message: typeof message === 'string' ? message : ''
    })
    const errors = current.errors
    current = current.cause ?? (Array.isArray(errors) ? errors[0] : undefined)
  }
  return chain
}

function isObjectLike (value: unknown): value is Record<string, unknown> {
  return (typeof value === 'object' && value !== null) || typeof value === 'function'
}
