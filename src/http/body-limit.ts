// A body without Content-Length (chunked) streams to the upstream as it arrives, so its size is only
// known while it streams: count the bytes and stop at the route's bodyLimit with 413. (A declared
// Content-Length above the limit is refused before admission; Node's parser enforces the rest.)
import { Transform, type Readable, type TransformCallback } from 'node:stream'
import type { RouteConfig } from '../config/schema'
import { SluiceError } from '../errors'

export function bodyTooLarge (route: RouteConfig): SluiceError {
  return new SluiceError('PAYLOAD_TOO_LARGE', 413, `the request body is larger than the ${route.bodyLimit} bytes this route accepts; the upstream received an incomplete request and no answer was forwarded`,
    { upstream: route.name, limit_bytes: route.bodyLimit })
}

/** `source` piped through a byte counter that fails with PAYLOAD_TOO_LARGE past the route's bodyLimit. */
export function limitBody (source: Readable, route: RouteConfig): Readable {
  let bytes = 0
  const counter = new Transform({
    transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      bytes += chunk.length
      if (bytes > route.bodyLimit) {
        // Stop reading the client: the connection closes after the 413.
        source.unpipe(counter)
        source.pause()
        callback(bodyTooLarge(route))
        return
      }
      callback(null, chunk)
    }
  })
  source.on('error', (err) => counter.destroy(err))
  source.on('aborted', () => counter.destroy(new Error('the client aborted the request body')))
  return source.pipe(counter)
}
