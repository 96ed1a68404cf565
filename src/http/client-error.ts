// What Node's HTTP parser refuses before fastify sees a request (malformed bytes, smuggling shapes,
// oversized headers, slow clients, CONNECT) still gets the envelope: a minimal JSON response
// written straight to the socket, which is then closed. Nothing of the request is echoed back.
import { STATUS_CODES, type Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { SluiceConfig } from '../config/schema'
import { envelope } from '../errors'
import { errorBody } from '../profiles/native'

/** Node and fastify timeouts of the listening server, in ms. */
export interface ServerTimeouts {
  /** Time to receive a request's headers (Node's headersTimeout; 408 REQUEST_TIMEOUT after it). */
  headersMs: number
  /** Time to receive the whole request, body included (Node's requestTimeout; 408 after it). */
  requestMs: number
  /** An idle keep-alive connection is closed after this. */
  keepAliveMs: number
  /** A connection with no traffic at all for this long is destroyed (Node's server.timeout). */
  idleMs: number
  /** How often Node checks the headers and request timeouts (they fire up to this much late). */
  checkIntervalMs: number
}

/**
 * Timeouts for a config. A request legitimately waits up to its route's maxWait before its body is
 * read, and then up to the route's timeout for the upstream's answer, so the whole-request and idle
 * bounds are counted from the longest of those, plus time to transfer the body.
 */
export function serverTimeouts (config: SluiceConfig): ServerTimeouts {
  const maxWaitMs = Math.max(0, ...config.routes.map((r) => r.maxWaitMs))
  const upstreamMs = Math.max(0, ...config.routes.map((r) => r.timeoutMs))
  return {
    // Long enough that a burst of thousands of connections on a busy machine is parsed in time,
    // short enough to end a slowloris.
    headersMs: 30_000,
    requestMs: maxWaitMs + 120_000,
    // Longer than common client pools keep idle sockets (undici 4 s, Node's agent 5 s), so the
    // client closes first and never writes into a socket Sluice is closing.
    keepAliveMs: 65_000,
    idleMs: maxWaitMs + upstreamMs + 120_000,
    checkIntervalMs: 1_000
  }
}

/** The status and code the client gets for a parser or socket error of Node's HTTP server. */
export function clientErrorResponse (err: NodeJS.ErrnoException): { status: number, code: string, message: string } {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, code: 'REQUEST_TIMEOUT', message: 'the request did not arrive in time (headers within the headers timeout, the whole request within the request timeout)' }
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, code: 'HEADERS_TOO_LARGE', message: 'the request line and headers are larger than Sluice accepts' }
    case 'HPE_INVALID_METHOD':
      return { status: 400, code: 'BAD_REQUEST', message: 'unknown HTTP method' }
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_INVALID_CONTENT_LENGTH':
      return { status: 400, code: 'BAD_REQUEST', message: 'ambiguous message framing (Content-Length and Transfer-Encoding, or conflicting Content-Length values)' }
    case 'HPE_INVALID_CHUNK_SIZE':
    case 'HPE_STRICT':
    case 'HPE_INVALID_EOF_STATE':
      return { status: 400, code: 'BAD_REQUEST', message: 'malformed chunked request body' }
    default:
      return { status: 400, code: 'BAD_REQUEST', message: 'the request is not valid HTTP/1.1' }
  }
}

/** No route is known this early: the generic profile's native fields (`message`) go with the envelope. */
function writeEnvelope (socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify(errorBody(undefined, envelope(code, message, { status }), { status }))
  socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}

/** fastify's clientErrorHandler: a minimal envelope when nothing has been written yet, then close. */
export function clientErrorHandler (logger: Logger) {
  return function onClientError (err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || socket.destroyed) {
      socket.destroy()
      return
    }
    const { status, code, message } = clientErrorResponse(err)
    // A request already dispatched on this socket may have started its response: then writing
    // would corrupt it, and the only honest thing left is to close.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage
    if (socket.writable && inFlight?.headersSent !== true) writeEnvelope(socket, status, code, message)
    logger.info({ code, status, parserError: err.code, remote: socket.remoteAddress }, 'refused a malformed request')
    // end() lets the response leave before the socket closes; destroy() after a moment in case the
    // client never reads it.
    socket.end()
    setTimeout(() => socket.destroy(), 1000).unref()
  }
}

/** Why CONNECT is refused, and what to do instead: the 405's message (README "CONNECT"). */
export const CONNECT_REFUSED = 'CONNECT is not supported: a CONNECT tunnel carries TLS that Sluice cannot read, and Sluice cannot shape ' +
  'requests it cannot read (count them, queue them, read their 429s). Do not set Sluice as the client\'s proxy; point the ' +
  'client\'s base URL at Sluice instead (https://127.0.0.1:PORT with --tls-cert and --tls-key for clients that require https)'

/**
 * CONNECT (a tunnel to any host) is never proxied. Without this listener Node would close such a
 * connection without a word; with it the client reads why. (Upgrade requests are left to Node, which
 * handles them as ordinary requests when no 'upgrade' listener exists: curl's h2c upgrade offer
 * must keep working.)
 */
export function refuseConnect (server: Server, logger: Logger): void {
  server.on('connect', (req, socket: Duplex) => {
    logger.info({ method: req.method, status: 405 }, 'refused CONNECT')
    writeEnvelope(socket, 405, 'METHOD_NOT_ALLOWED', CONNECT_REFUSED)
    socket.end()
    setTimeout(() => socket.destroy(), 1000).unref()
  })
}

/** Apply the timeouts to the listening server (fastify passes most of them through, not all). */
export function applyServerTimeouts (server: Server, timeouts: ServerTimeouts): void {
  server.headersTimeout = timeouts.headersMs
  server.requestTimeout = timeouts.requestMs
  server.keepAliveTimeout = timeouts.keepAliveMs
  server.setTimeout(timeouts.idleMs)
}
