// Issue 20, item 4: a body without Content-Length (Transfer-Encoding: chunked) is read up to
// retryBodyLimit: one that ends within it is sent again after pushback; a longer one streams on with
// the part already read, nothing lost, and is still held to bodyLimit.
import t from 'tap'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

/** A body sent in pieces, so it goes out chunked (no Content-Length). */
function chunked (bytes: Buffer, pieces = 4): Readable {
  const size = Math.ceil(bytes.length / pieces)
  return Readable.from(Array.from({ length: pieces }, (_, i) => bytes.subarray(i * size, (i + 1) * size)))
}

t.test('a chunked POST pushed back is sent again when it fits retryBodyLimit; a longer one streams on whole', async (t) => {
  let calls = 0
  const up = await startUpstream((req, res) => {
    calls++
    // Every other attempt is pushed back, starting with the first.
    if (calls % 2 === 1) {
      res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"message":"slow down"}')
      return
    }
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ ok: true, te: req.headers['transfer-encoding'] ?? null }))
  })
  const s = await startSluice([{ name: 'c', upstream: up.url, limit: '50/s', retryBodyLimit: 1000, bodyLimit: 8000, maxWait: '5s' }])
  t.teardown(async () => { await s.close(); await up.close() })

  const small = Buffer.from(Array.from({ length: 900 }, (_, i) => i % 251))
  const ok = await request(`${s.url}/upload`, { method: 'POST', body: chunked(small), headers: { 'content-type': 'application/octet-stream' } })
  const answer = await ok.body.json() as { ok: boolean, te: string | null }
  t.equal(ok.statusCode, 200, 'the chunked POST pushed back with 429 was sent again')
  t.equal(up.hits.length, 2)
  t.ok(Buffer.from(up.hits[0].body, 'latin1').length > 0 && up.hits[0].body === up.hits[1].body, 'both attempts carried the same bytes')
  t.equal(up.hits[1].body, small.toString(), 'byte for byte')
  t.equal(answer.te, 'chunked', 'with the client\'s own framing')

  const large = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) % 253))
  const refused = await request(`${s.url}/upload`, { method: 'POST', body: chunked(large, 10), headers: { 'content-type': 'application/octet-stream' } })
  const envelope = await refused.body.json() as { error: { code: string, details: Record<string, unknown> } }
  t.equal(refused.statusCode, 429, 'a body longer than retryBodyLimit is not sent again')
  t.match(envelope.error.details.retry_skipped, /retryBodyLimit 1000/)
  t.equal(up.hits[2].body, large.toString(), 'it streamed on whole: the part read first, then the rest')

  calls = 1 // the next attempt is accepted
  const tooLarge = await request(`${s.url}/upload`, { method: 'POST', body: chunked(Buffer.alloc(9000, 1), 9), headers: { 'content-type': 'application/octet-stream' } })
  const body = await tooLarge.body.json() as { error: { code: string } }
  t.equal(tooLarge.statusCode, 413, 'a streamed-on body is still held to bodyLimit')
  t.equal(body.error.code, 'PAYLOAD_TOO_LARGE')
})
