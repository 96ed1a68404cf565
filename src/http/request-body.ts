// Request bodies on their way to the upstream. Most stream through untouched; two kinds are read
// into memory first, before admission:
// - JSON bodies (application/json, +json), up to the route's bodyLimit, so that a body that is not
//   JSON is refused with 400 MALFORMED_JSON without taking a token or reaching the upstream;
// - bodies with a Content-Length of at most retryBodyLimit, so a pushed-back request can be sent again;
// - bodies without one (Transfer-Encoding: chunked), up to retryBodyLimit: one that ends within it is
//   kept like the others; a longer one streams on, the part already read first, nothing lost.
// A read body is forwarded as a stream of the very same bytes, with the client's own headers.
import { Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { SluiceError } from '../errors'
import { concatRest } from './upstream-response'

declare module 'fastify' {
  interface FastifyRequest {
    /** The whole request body when Sluice read it into memory (JSON, or small enough to retry). */
    sluiceBody?: Buffer
  }
}

/** application/json, and the structured-syntax suffix +json (application/vnd.api+json, application/problem+json). */
const JSON_MEDIA_TYPE = /^\s*application\/(?:[a-z0-9!#$&^_.-]+\+)?json\s*(?:;|$)/i

export function isJsonContentType (value: string | undefined): boolean {
  return typeof value === 'string' && JSON_MEDIA_TYPE.test(value)
}

type Done = (err: Error | null, body?: unknown) => void

/**
 * The route's one content-type parser ('*': every type). Where a body stays unread, `payload`
 * (the raw request) is the body and reply-from pipes it upstream as it arrives.
 */
export function requestBodyParser (route: RouteConfig, retryBodyLimit: number) {
  return function parse (request: FastifyRequest, payload: Readable, done: Done): void {
    const json = isJsonContentType(request.headers['content-type'])
    const declared = contentLength(request.headers['content-length'])
    if (declared !== undefined && declared > route.bodyLimit) {
      done(tooLarge(route, declared))
      return
    }
    // Without Content-Length, a body read whole must also fit bodyLimit: past it, 413 as for JSON.
    const keep = json || (declared !== undefined && declared <= retryBodyLimit) || (declared === undefined && retryBodyLimit > 0 && route.bodyLimit <= retryBodyLimit)
    if (!keep && declared === undefined && retryBodyLimit > 0) {
      keepOrStreamOn(route, request, payload, retryBodyLimit, done)
      return
    }
    if (!keep) {
      done(null, payload)
      return
    }
    readAll(payload, json || declared === undefined ? route.bodyLimit : retryBodyLimit).then((body) => {
      if (body === 'too-large') return done(tooLarge(route, undefined))
      if (declared !== undefined && body.length !== declared) {
        return done(new SluiceError('BAD_REQUEST', 400, `the request body has ${body.length} bytes, but Content-Length said ${declared}`, { upstream: route.name }))
      }
      if (json && body.length > 0) {
        const problem = jsonProblem(body)
        if (problem !== undefined) {
          return done(new SluiceError('MALFORMED_JSON', 400,
            `the request body is declared as JSON but is not valid JSON (line ${problem.line}, column ${problem.column}); it was not forwarded`,
            { upstream: route.name, position: problem.position, line: problem.line, column: problem.column }))
        }
      }
      request.sluiceBody = body
      done(null, replayBody(body))
    }, (err: Error) => done(new SluiceError('BAD_REQUEST', 400, 'the request body could not be read', { upstream: route.name }, undefined, { cause: err })))
  }
}

/**
 * A body of unknown length: read up to `limit` bytes. One that ends within them is kept (it can be sent
 * again); a longer one streams on from where reading stopped.
 */
function keepOrStreamOn (route: RouteConfig, request: FastifyRequest, payload: Readable, limit: number, done: Done): void {
  readUpTo(payload, limit).then(({ bytes, ended }) => {
    if (ended) {
      request.sluiceBody = bytes
      done(null, replayBody(bytes))
      return
    }
    // Counted against bodyLimit once admitted (admission.ts), as a body streamed from the start is.
    done(null, Readable.from(concatRest(bytes, payload), { objectMode: false }))
  }, (err: Error) => done(new SluiceError('BAD_REQUEST', 400, 'the request body could not be read', { upstream: route.name }, undefined, { cause: err })))
}

/** The first bytes of a stream, past `limit` at most by one chunk: `ended` when that is all of it (the stream is then paused, listeners off). */
function readUpTo (stream: Readable, limit: number): Promise<{ bytes: Buffer, ended: boolean }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    const finish = (ended: boolean, err?: Error): void => {
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onError)
      stream.off('aborted', onAborted)
      if (err !== undefined) return reject(err)
      if (!ended) stream.pause()
      resolve({ bytes: Buffer.concat(chunks, bytes), ended })
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      bytes += chunk.length
      if (bytes > limit) finish(false)
    }
    const onEnd = (): void => finish(true)
    const onError = (err: Error): void => finish(false, err)
    const onAborted = (): void => finish(false, new Error('the client aborted the request body'))
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onError)
    stream.on('aborted', onAborted)
  })
}

/** A fresh stream of a kept body, for one attempt upstream (a stream keeps the client's headers as sent). */
export function replayBody (body: Buffer): Readable {
  return Readable.from(body.length > 0 ? [body] : [], { objectMode: false })
}

function contentLength (value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return undefined
  return Number(value)
}

function tooLarge (route: RouteConfig, received: number | undefined): SluiceError {
  const size = received === undefined ? 'larger than' : `of ${received} bytes is larger than`
  return new SluiceError('PAYLOAD_TOO_LARGE', 413, `the request body ${size} the ${route.bodyLimit} bytes this route accepts`,
    { upstream: route.name, limit_bytes: route.bodyLimit, ...(received === undefined ? {} : { received_bytes: received }) })
}

/** The whole stream, or 'too-large' as soon as it passes `limit` bytes (the rest is not read). */
function readAll (stream: Readable, limit: number): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    const cleanup = (): void => {
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onError)
      stream.off('aborted', onAborted)
    }
    const onData = (chunk: Buffer): void => {
      bytes += chunk.length
      if (bytes > limit) {
        cleanup()
        // Like fastify's own reader: the rest is drained, unread, so the 413 can still be answered.
        stream.resume()
        resolve('too-large')
        return
      }
      chunks.push(chunk)
    }
    const onEnd = (): void => {
      cleanup()
      resolve(Buffer.concat(chunks, bytes))
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onAborted = (): void => onError(new Error('the client aborted the request body'))
    stream.on('data', onData)
    stream.on('end', onEnd)
    stream.on('error', onError)
    stream.on('aborted', onAborted)
  })
}

export interface JsonProblem {
  /** Character offset into the body (UTF-8 decoded) where the parser stopped. */
  position: number
  /** 1-based line and column of that offset. */
  line: number
  column: number
}

/** Where a body stops being JSON; undefined when it is JSON. The parser's own message is not kept: it quotes the body. */
export function jsonProblem (body: Buffer): JsonProblem | undefined {
  let text = body.toString('utf8')
  // A UTF-8 byte order mark is tolerated (and forwarded as sent).
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  try {
    JSON.parse(text)
    return undefined
  } catch {
    // V8 names a position for some faults only ("Unexpected token ']'" has none), so find it here.
    const found = jsonErrorOffset(text)
    const position = found < 0 ? text.length : found
    const before = text.slice(0, position)
    const lineStart = before.lastIndexOf('\n') + 1
    return { position, line: before.split('\n').length, column: position - lineStart + 1 }
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const HEX4 = /[0-9a-fA-F]{4}/y

/**
 * The offset of the first character that cannot continue a JSON text (RFC 8259), or -1 when the
 * text is JSON. Iterative, so deep nesting cannot overflow the stack.
 */
export function jsonErrorOffset (s: string): number {
  // Long: one state machine over the text; split up, its cursor and stack would be shared by closures anyway.
  let i = 0
  const stack: Array<'[' | '{'> = []
  const skipWs = (): void => {
    while (i < s.length) {
      const c = s.charCodeAt(i)
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break
      i++
    }
  }
  /** Reads a string at i (which is at its opening quote); false at the first bad character (i points there). */
  const readString = (): boolean => {
    i++
    while (i < s.length) {
      const c = s.charCodeAt(i)
      if (c === 0x22) { i++; return true }
      if (c < 0x20) return false
      if (c === 0x5c) {
        const e = s[i + 1]
        if (e === 'u') {
          HEX4.lastIndex = i + 2
          if (!HEX4.test(s)) { i += 2; return false }
          i += 6
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) {
          i += 2
        } else {
          i += 1
          return false
        }
      } else {
        i++
      }
    }
    return false
  }
  let expectValue = true
  for (;;) {
    skipWs()
    if (expectValue) {
      const c = s[i]
      if (c === '{' || c === '[') {
        stack.push(c)
        i++
        skipWs()
        if (s[i] === (c === '{' ? '}' : ']')) {
          stack.pop()
          i++
          expectValue = false
          continue
        }
        if (c === '{') {
          if (s[i] !== '"' || !readString()) return i
          skipWs()
          if (s[i] !== ':') return i
          i++
        }
        continue
      }
      if (c === '"') {
        if (!readString()) return i
        expectValue = false
        continue
      }
      NUMBER.lastIndex = i
      const number = NUMBER.exec(s)
      if (number !== null) {
        i += number[0].length
        expectValue = false
        continue
      }
      const literal = c === 't' ? 'true' : c === 'f' ? 'false' : c === 'n' ? 'null' : undefined
      if (literal === undefined) return i
      for (let k = 0; k < literal.length; k++, i++) if (s[i] !== literal[k]) return i
      expectValue = false
      continue
    }
    const top = stack[stack.length - 1]
    if (top === undefined) return i === s.length ? -1 : i
    const c = s[i]
    if (c === ',') {
      i++
      if (top === '{') {
        skipWs()
        if (s[i] !== '"' || !readString()) return i
        skipWs()
        if (s[i] !== ':') return i
        i++
      }
      expectValue = true
      continue
    }
    if (c === (top === '{' ? '}' : ']')) {
      stack.pop()
      i++
      continue
    }
    return i
  }
}
