// The pieces forward.ts answers an upstream's error with: read a bounded head of the error body,
// decode it (gzip, deflate, br, bounded), and send the envelope in place of the upstream's answer.
import type { Readable, Transform } from 'node:stream'
import { constants as zlibConstants, createBrotliDecompress, createGunzip, createInflate, createInflateRaw } from 'node:zlib'
import type { FastifyReply } from 'fastify'
import { errorBody } from '../profiles/native'
import { MAX_ERROR_BODY_BYTES, type NormalizedError } from '../upstream/normalize'
import { routeProfile } from './error-reply'
import { hasOwnRateLimitFields, rateLimitHeaders, refusalView, type RouteBudget } from './rate-limit-headers'

/** Refusals whose rate-limit fields say remaining 0 until Retry-After. */
const REFUSALS: ReadonlySet<string> = new Set(['RATE_LIMITED', 'QUEUE_FULL', 'MAINTENANCE'])

export interface UpstreamResponse {
  statusCode: number
  headers: Record<string, string | string[] | undefined>
  stream: Readable
}

// Headers that describe the upstream's body (or its delay); an envelope replaces that body.
const BODY_HEADERS = ['content-length', 'content-encoding', 'content-type', 'content-range', 'content-md5', 'content-disposition',
  'content-language', 'content-location', 'digest', 'etag', 'last-modified', 'transfer-encoding', 'retry-after']

/**
 * Send an envelope in place of whatever the upstream answered: its body headers go, Sluice's
 * rate-limit headers stay (or are added, when no upstream response carried them), from the route's
 * current budget (its limiter). Beside the envelope, the route profile's native fields.
 */
export function sendEnvelope (reply: FastifyReply, budget: RouteBudget, normalized: Pick<NormalizedError, 'status' | 'envelope' | 'retryAfterS' | 'native'>): void {
  if (reply.sent || reply.raw.headersSent) return
  const state = reply.request.sluice
  const envelope = normalized.envelope
  envelope.error.details.request_id = reply.request.id
  const body = errorBody(routeProfile(reply.request), envelope, {
    status: normalized.status,
    ...(normalized.retryAfterS !== undefined ? { retryAfterS: normalized.retryAfterS } : {}),
    ...(normalized.native !== undefined ? { upstream: normalized.native } : {})
  })
  if (state !== undefined) state.code = envelope.error.code
  for (const name of BODY_HEADERS) reply.removeHeader(name)
  // The upstream's own X-RateLimit-* still on the reply (not cleared for a retry) pass untouched; a
  // refusal (rate limit, maintenance) tells remaining 0 until its Retry-After.
  const upstreamFields = state?.upstreamRateLimit === true && hasOwnRateLimitFields(reply.getHeaders())
  const refusal = REFUSALS.has(body.error.code) && normalized.retryAfterS !== undefined
  const view = refusal ? refusalView(normalized.retryAfterS as number) : state?.view
  if (view !== undefined) reply.headers(rateLimitHeaders(budget, view, state?.waitedMs ?? 0, {}, !upstreamFields))
  if (normalized.retryAfterS !== undefined) reply.header('retry-after', String(normalized.retryAfterS))
  reply.code(normalized.status).type('application/json').send(body)
}

export interface BodyHead {
  /** The first bytes of the body, as sent (still encoded). */
  bytes: Buffer
  /** True when that is the whole body; otherwise the stream is paused after `bytes`, for the caller to finish or destroy. */
  complete: boolean
}

/** Reads up to `limit` bytes (a chunk may carry it a little past) and stops; never rejects. */
export function readHead (stream: Readable, limit: number): Promise<BodyHead> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let bytes = 0
    let done = false
    const finish = (complete: boolean): void => {
      if (done) return
      done = true
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', onBreak)
      stream.off('close', onBreak)
      // A later reset must not become an uncaught 'error': whoever takes the rest listens again.
      stream.on('error', ignore)
      if (!complete) stream.pause()
      resolve({ bytes: Buffer.concat(chunks, bytes), complete })
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      bytes += chunk.length
      if (bytes >= limit) finish(false)
    }
    const onEnd = (): void => finish(true)
    // A body that breaks off (reset mid-body) is what it is: what arrived is all there will be.
    const onBreak = (): void => finish(true)
    stream.on('data', onData)
    stream.once('end', onEnd)
    stream.once('error', onBreak)
    stream.once('close', onBreak)
  })
}

function ignore (): void {}

/** Decodes a Content-Encoding with the output bounded to `limit` bytes; a body it cannot decode gives what decoded. */
export async function decodeBody (raw: Buffer, contentEncoding: string | string[] | undefined, limit = MAX_ERROR_BODY_BYTES): Promise<Buffer> {
  const encoding = (Array.isArray(contentEncoding) ? contentEncoding.join(',') : contentEncoding ?? '').trim().toLowerCase()
  const plain = encoding === '' || encoding === 'identity' ? raw : undefined
  if (plain !== undefined) return plain.length > limit ? plain.subarray(0, limit) : plain
  const decoder = decoderFor(encoding, raw)
  if (decoder === undefined) return Buffer.alloc(0) // an encoding Sluice cannot read: no text is better than binary noise
  return await decodeBounded(decoder, raw, limit)
}

function decoderFor (encoding: string, raw: Buffer): Transform | undefined {
  // A truncated body still yields what was decoded so far: flush, do not insist on the end.
  const options = { finishFlush: zlibConstants.Z_SYNC_FLUSH }
  switch (encoding) {
    case 'gzip':
    case 'x-gzip': return createGunzip(options)
    // "deflate" should be zlib-wrapped, but servers also send raw deflate; the first byte tells.
    case 'deflate': return raw.length > 0 && (raw[0]! & 0x0f) === 8 ? createInflate(options) : createInflateRaw(options)
    case 'br': return createBrotliDecompress({ finishFlush: zlibConstants.BROTLI_OPERATION_FLUSH })
    default: return undefined
  }
}

function decodeBounded (decoder: Transform, raw: Buffer, limit: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let bytes = 0
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      decoder.destroy()
      const all = Buffer.concat(chunks, bytes)
      resolve(all.length > limit ? all.subarray(0, limit) : all)
    }
    decoder.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      bytes += chunk.length
      if (bytes >= limit) finish()
    })
    decoder.on('end', finish)
    decoder.on('error', finish)
    decoder.end(raw)
  })
}

/** Removes the headers reply-from copied from an answer that is not passed on. */
export function clearUpstreamHeaders (reply: FastifyReply, headers: UpstreamResponse['headers']): void {
  for (const name of Object.keys(headers)) reply.removeHeader(name)
  reply.removeHeader('connection')
}

/** The bytes already read of a body, then the rest of it as it comes. */
export async function * concatRest (head: Buffer, rest: Readable): AsyncGenerator<Buffer> {
  yield head
  rest.resume()
  for await (const chunk of rest) yield chunk as Buffer
}
