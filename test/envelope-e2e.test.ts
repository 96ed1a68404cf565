// The envelope end to end: a running Sluice in front of loopback upstreams that answer with the
// fixture samples (test/fixtures/upstream), gateway pages, compressed and huge bodies, resets,
// refused connections and silence. Success bodies must arrive byte for byte.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { brotliCompressSync, deflateRawSync, gzipSync } from 'node:zlib'
import { freePort } from './helpers/redis'
import { startSluice } from './helpers/sluice'

interface Fixture {
  name: string
  profile: string
  status: number
  headers: Record<string, string>
  body?: string
  bodyBase64?: string
  bodyRepeat?: { prefix?: string, chunk: string, times: number, suffix?: string }
  expect: { status: number, code: string, retryable: boolean, retry_after_s?: number | null, upstream_code?: string }
}

const FIXTURE_DIR = join(__dirname, 'fixtures', 'upstream')
const fixtures = new Map<string, Fixture>(readdirSync(FIXTURE_DIR).filter((f) => f.endsWith('.json')).map((f) => {
  const fixture = JSON.parse(readFileSync(join(FIXTURE_DIR, f), 'utf8')) as Fixture
  return [fixture.name, fixture]
}))

function bodyOf (fixture: Fixture): Buffer {
  if (fixture.bodyBase64 !== undefined) return Buffer.from(fixture.bodyBase64, 'base64')
  if (fixture.bodyRepeat !== undefined) {
    const r = fixture.bodyRepeat
    return Buffer.from((r.prefix ?? '') + r.chunk.repeat(r.times) + (r.suffix ?? ''))
  }
  return Buffer.from(fixture.body ?? '')
}

interface Reply {
  status: number
  headers: IncomingMessage['headers']
  raw: Buffer
  json: any
}

async function call (url: string, options: { method?: string, headers?: Record<string, string>, body?: Buffer | string } = {}): Promise<Reply> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const raw = Buffer.concat(chunks)
        let json: unknown
        try { json = JSON.parse(raw.toString()) } catch { json = undefined }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, raw, json })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

interface Origin {
  url: string
  hits: Array<{ method: string, url: string, headers: IncomingMessage['headers'], body: Buffer }>
  close: () => Promise<void>
}

/** A loopback origin; `respond` decides per request, after the request body was read. */
async function startOrigin (respond: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void): Promise<Origin> {
  const hits: Origin['hits'] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      hits.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      respond(req, res, body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** Serves /fixture/<name> as that sample: status, headers, body. */
function serveFixture (req: IncomingMessage, res: ServerResponse): void {
  const name = decodeURIComponent((req.url ?? '').split('?')[0].replace(/^\/fixture\//, ''))
  const fixture = fixtures.get(name)
  if (fixture === undefined) {
    res.writeHead(599).end()
    return
  }
  const body = bodyOf(fixture)
  res.writeHead(fixture.status, { ...fixture.headers, 'content-length': String(body.length) })
  res.end(body)
}

function assertEnvelope (t: Test, r: Reply, route: string, label: string): void {
  t.equal(r.headers['content-type'], 'application/json; charset=utf-8', `${label}: JSON`)
  t.equal(r.json?.success, false, `${label}: success false`)
  t.type(r.json?.error?.code, 'string', `${label}: code`)
  t.ok(typeof r.json?.error?.message === 'string' && r.json.error.message.length > 0, `${label}: message`)
  t.equal(r.json?.error?.details?.upstream, route, `${label}: details.upstream`)
  t.equal(r.json?.error?.details?.request_id, r.headers['x-request-id'], `${label}: details.request_id is the X-Request-Id`)
  t.type(r.json?.error?.details?.retryable, 'boolean', `${label}: details.retryable`)
  t.equal(r.headers['content-encoding'], undefined, `${label}: no content-encoding`)
  t.equal(Number(r.headers['content-length']), r.raw.length, `${label}: content-length is the envelope's`)
}

// One route per profile; one bucket per request (key: header), so a pushback sample pauses only itself.
const PROFILES = ['generic', 'testrail', 'testmo', 'zulip', 'github']

t.test('every upstream error sample becomes the envelope through a running Sluice', async (t) => {
  const origin = await startOrigin((req, res) => serveFixture(req, res))
  // One bucket per sample (a pushback pauses its bucket). The key header counts as a credential, so
  // its value must not occur in the request id, or the envelope's secret scrubber would mask it.
  const s = await startSluice(PROFILES.map((p) => ({ name: p, prefix: `/${p}`, upstream: origin.url, limit: '1000/s', profile: p, key: 'header:x-sample', maxWait: '0ms' })))
  t.teardown(async () => { await s.close(); await origin.close() })

  const samples = [...fixtures.values()].filter((f) => f.status >= 400)
  t.ok(samples.length >= 80, `${samples.length} samples`)
  const seenProfiles = new Set<string>()
  for (const fixture of samples) {
    const r = await call(`${s.url}/${fixture.profile}/fixture/${encodeURIComponent(fixture.name)}`, { headers: { 'x-sample': `bucket-${fixture.name}`, 'x-request-id': `rq-${fixture.name}` } })
    seenProfiles.add(fixture.profile)
    assertEnvelope(t, r, fixture.profile, fixture.name)
    t.equal(r.status, fixture.expect.status, `${fixture.name}: status`)
    t.equal(r.json?.error?.code, fixture.expect.code, `${fixture.name}: code`)
    t.equal(r.json?.error?.details?.request_id, `rq-${fixture.name}`, `${fixture.name}: the client's request id`)
    t.equal(r.json?.error?.details?.upstream_status, fixture.status, `${fixture.name}: upstream_status`)
    t.equal(r.json?.error?.details?.retryable, fixture.expect.retryable, `${fixture.name}: retryable`)
    if (fixture.expect.upstream_code !== undefined) t.equal(r.json?.error?.details?.upstream_code, fixture.expect.upstream_code, `${fixture.name}: upstream_code`)
    const retryAfterS = r.json?.error?.details?.retry_after_s
    if (retryAfterS !== undefined) t.equal(r.headers['retry-after'], String(retryAfterS), `${fixture.name}: Retry-After is retry_after_s`)
    else t.equal(r.headers['retry-after'], undefined, `${fixture.name}: no Retry-After when the delay is unknown`)
    // The upstream's own X-RateLimit-* (GitHub sends them on every answer) pass untouched; else Sluice's
    // stand in. A refusal (Sluice's RATE_LIMITED, MAINTENANCE) says remaining 0 until its Retry-After.
    const own = Object.entries(fixture.headers ?? {}).filter(([h]) => h.toLowerCase().startsWith('x-ratelimit-'))
    const refusal = ['RATE_LIMITED', 'MAINTENANCE'].includes(String(r.json?.error?.code)) && r.headers['retry-after'] !== undefined
    if (refusal) {
      t.equal(r.headers['x-ratelimit-remaining'], '0', `${fixture.name}: a refusal says remaining 0`)
      t.ok(Math.abs(Number(r.headers['x-ratelimit-reset']) - Math.ceil(Date.now() / 1000) - Number(r.headers['retry-after'])) <= 1, `${fixture.name}: and a reset at its Retry-After`)
    }
    if (own.length > 0 && !refusal) {
      for (const [h, v] of own) t.equal(r.headers[h.toLowerCase()], v, `${fixture.name}: the upstream's ${h} passes untouched`)
    } else {
      t.equal(r.headers['x-ratelimit-limit'], '1000', `${fixture.name}: Sluice's rate-limit headers stay`)
    }
    t.equal(r.headers['ratelimit-policy'], `"${fixture.profile}";q=1000;w=1`, `${fixture.name}: RateLimit-Policy is Sluice's`)
  }
  t.same([...seenProfiles].sort(), [...PROFILES].sort(), 'every profile was exercised')
})

t.test('gateway shapes: nginx HTML, Cloudflare text, empty, truncated JSON, compressed and huge bodies', async (t) => {
  const hugeHtml = Buffer.from(`<html><body><h1>502 Bad Gateway</h1>${'<p>filler</p>'.repeat(400_000)}</body></html>`)
  const validation = Buffer.from(JSON.stringify({ message: 'The given data was invalid.', errors: { name: ['The name field is required.'] } }))
  const origin = await startOrigin((req, res) => {
    switch (req.url) {
      case '/nginx-502': res.writeHead(502, { 'content-type': 'text/html' }).end(bodyOf(fixtures.get('nginx-502-html')!)); return
      case '/cloudflare-502': res.writeHead(502, { 'content-type': 'text/plain' }).end('error code: 502'); return
      case '/empty-500': res.writeHead(500).end(); return
      case '/truncated': res.writeHead(400, { 'content-type': 'application/json' }).end('{"message": "The given data was inv'); return
      case '/gzip': res.writeHead(422, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(gzipSync(validation)); return
      case '/br': res.writeHead(422, { 'content-type': 'application/json', 'content-encoding': 'br' }).end(brotliCompressSync(validation)); return
      case '/deflate-raw': res.writeHead(422, { 'content-type': 'application/json', 'content-encoding': 'deflate' }).end(deflateRawSync(validation)); return
      // 10 MB of zeros compress to ~10 KB: the decoded size must be bounded, not the compressed one.
      case '/gzip-bomb': res.writeHead(500, { 'content-type': 'text/plain', 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(10_000_000, 0x41))); return
      case '/huge': res.writeHead(502, { 'content-type': 'text/html' }).end(hugeHtml); return
      default: res.writeHead(404).end()
    }
  })
  const s = await startSluice([{ name: 'gw', upstream: origin.url, limit: '1000/s', key: 'header:x-case', maxWait: '0ms', profile: 'testmo' }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const get = async (path: string): Promise<Reply> => await call(`${s.url}${path}`, { headers: { 'x-case': path } })

  const nginx = await get('/nginx-502')
  assertEnvelope(t, nginx, 'gw', 'nginx')
  t.equal(nginx.status, 502)
  t.equal(nginx.json.error.code, 'BAD_GATEWAY')
  t.equal(nginx.json.error.details.upstream_body, '502 Bad Gateway 502 Bad Gateway nginx', 'HTML is stripped to its text')

  const cf = await get('/cloudflare-502')
  assertEnvelope(t, cf, 'gw', 'cloudflare')
  t.equal(cf.json.error.code, 'BAD_GATEWAY')
  t.equal(cf.json.error.details.upstream_body, 'error code: 502')

  const empty = await get('/empty-500')
  assertEnvelope(t, empty, 'gw', 'empty')
  t.equal(empty.status, 502, 'an upstream 500 is 502 UPSTREAM_ERROR (Sluice did not fail)')
  t.equal(empty.json.error.code, 'UPSTREAM_ERROR')
  t.equal(empty.json.error.details.upstream_body, '')

  const truncated = await get('/truncated')
  assertEnvelope(t, truncated, 'gw', 'truncated')
  t.equal(truncated.status, 400)
  t.equal(truncated.json.error.details.upstream_body, '{"message": "The given data was inv', 'truncated JSON is kept as text')

  for (const path of ['/gzip', '/br', '/deflate-raw']) {
    const r = await get(path)
    assertEnvelope(t, r, 'gw', path)
    t.equal(r.status, 422, `${path}: status`)
    t.equal(r.json.error.code, 'VALIDATION_ERROR', `${path}: the decoded body was read`)
    t.same(r.json.error.details.field_errors, { name: ['The name field is required.'] }, `${path}: field errors from the decoded body`)
  }

  const bomb = await get('/gzip-bomb')
  assertEnvelope(t, bomb, 'gw', 'gzip bomb')
  t.equal(bomb.json.error.details.upstream_body_truncated, true, 'a body that decodes to 10 MB is cut')
  t.ok(bomb.raw.length < 4096, `the envelope stays small (${bomb.raw.length} bytes)`)

  const began = Date.now()
  const huge = await get('/huge')
  assertEnvelope(t, huge, 'gw', 'huge')
  t.equal(huge.json.error.code, 'BAD_GATEWAY')
  t.equal(huge.json.error.details.upstream_body_truncated, true)
  t.ok(huge.raw.length < 4096, `a ${hugeHtml.length}-byte body gives a ${huge.raw.length}-byte envelope`)
  t.ok(Date.now() - began < 2000, 'the rest of a huge body is not waited for')
})

t.test('errors: upstream passes error bodies through untouched; Sluice\'s own errors stay envelopes', async (t) => {
  const native = Buffer.from('{"message":"The given data was invalid.","errors":{"name":["required"]}}')
  const origin = await startOrigin((_req, res) => { res.writeHead(422, { 'content-type': 'application/json', 'x-upstream': 'yes' }).end(native) })
  const s = await startSluice([{ name: 'raw', upstream: origin.url, limit: '2/s', algorithm: 'sliding-window', errors: 'upstream', maxWait: '0ms' }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const r = await call(`${s.url}/x`)
  t.equal(r.status, 422)
  t.same(r.raw, native, 'the body is the upstream\'s, byte for byte')
  t.equal(r.headers['content-type'], 'application/json')
  t.equal(r.headers['x-upstream'], 'yes')
  t.equal(r.headers['x-ratelimit-limit'], '2')
  await call(`${s.url}/x`)
  const own = await call(`${s.url}/x`)
  t.equal(own.status, 429)
  t.equal(own.json.error.code, 'RATE_LIMITED', 'Sluice\'s own refusal is still the envelope')
  t.equal(own.json.error.details.request_id, own.headers['x-request-id'])
})

t.test('transport failures: reset before and during the response, refused connection, timeout', async (t) => {
  const origin = await startOrigin((req, res) => {
    if (req.url === '/reset-before') {
      req.socket.resetAndDestroy()
      return
    }
    if (req.url === '/reset-error-body') {
      res.writeHead(503, { 'content-type': 'text/html', 'content-length': '100000' })
      res.write('<html><body><h1>503 Service Temporarily Unavailable</h1>')
      setTimeout(() => req.socket.resetAndDestroy(), 50)
      return
    }
    if (req.url === '/reset-success-body') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100000' })
      res.write(Buffer.alloc(1000, 1))
      setTimeout(() => req.socket.resetAndDestroy(), 50)
      return
    }
    if (req.url === '/silent') return // never answers
    res.writeHead(200).end('ok')
  })
  const closedPort = await freePort()
  const s = await startSluice([
    { name: 'up', prefix: '/up', upstream: origin.url, limit: '1000/s', timeout: '300ms', maxWait: '0ms', key: 'header:x-case' },
    { name: 'down', prefix: '/down', upstream: `http://127.0.0.1:${closedPort}`, limit: '1000/s', maxWait: '0ms' }
  ])
  t.teardown(async () => { await s.close(); await origin.close() })
  const get = async (path: string): Promise<Reply> => await call(`${s.url}${path}`, { headers: { 'x-case': path } })

  const before = await get('/up/reset-before')
  assertEnvelope(t, before, 'up', 'reset before the response')
  t.equal(before.status, 502)
  t.equal(before.json.error.code, 'BAD_GATEWAY')
  t.equal(before.json.error.details.upstream_status, null, 'no response was received')
  t.match(before.json.error.details.transport_code, /ECONNRESET|UND_ERR_SOCKET/)
  t.equal(before.headers['x-ratelimit-limit'], '1000', 'rate-limit headers on a transport error too')

  const midError = await get('/up/reset-error-body')
  assertEnvelope(t, midError, 'up', 'reset in an error body')
  t.equal(midError.status, 503, 'the status the upstream sent decides')
  t.equal(midError.json.error.code, 'UPSTREAM_UNAVAILABLE')
  t.match(midError.json.error.details.upstream_body, /503 Service Temporarily Unavailable/, 'what arrived before the reset is kept')

  // A success response has already begun: its status went out, so the client must see the break.
  const broken = await new Promise<{ status: number, bytes: number, aborted: boolean }>((resolve) => {
    const req = httpRequest(`${s.url}/up/reset-success-body`, { headers: { 'x-case': 'success' } }, (res) => {
      let bytes = 0
      res.on('data', (c: Buffer) => { bytes += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: false }))
      res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: true }))
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes, aborted: true }))
    })
    req.on('error', () => resolve({ status: 0, bytes: 0, aborted: true }))
    req.end()
  })
  t.equal(broken.status, 200)
  t.ok(broken.aborted, `the client sees the broken body (${broken.bytes} of 100000 bytes), not a complete one`)

  const refused = await get('/down/x')
  assertEnvelope(t, refused, 'down', 'refused')
  t.equal(refused.status, 503)
  t.equal(refused.json.error.code, 'UPSTREAM_UNAVAILABLE')
  t.equal(refused.json.error.details.transport_code, 'ECONNREFUSED')

  const began = Date.now()
  const timeout = await get('/up/silent')
  const tookMs = Date.now() - began
  assertEnvelope(t, timeout, 'up', 'timeout')
  t.equal(timeout.status, 504)
  t.equal(timeout.json.error.code, 'UPSTREAM_TIMEOUT')
  t.ok(tookMs >= 280 && tookMs < 2000, `answered after the 300 ms route timeout (${tookMs} ms)`)

  const fine = await get('/up/ok')
  t.equal(fine.status, 200, 'the route still works')
})

t.test('a body declared as JSON that is not JSON is refused before admission: 400 MALFORMED_JSON, no token, no upstream', async (t) => {
  const origin = await startOrigin((_req, res, body) => { res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(body) })
  const s = await startSluice([{ name: 'js', upstream: origin.url, limit: '5/s', algorithm: 'sliding-window', bodyLimit: 4096 }])
  t.teardown(async () => { await s.close(); await origin.close() })

  const bad = await call(`${s.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name": "x",\n "tags": [1, 2,]}' })
  t.equal(bad.status, 400)
  t.equal(bad.json.error.code, 'MALFORMED_JSON')
  t.equal(bad.json.error.details.line, 2, 'the line of the fault')
  t.equal(bad.json.error.details.column, 16, 'and its column')
  t.equal(bad.json.error.details.position, 29, 'and its offset')
  t.equal(bad.json.error.details.upstream, 'js')
  t.equal(bad.json.error.details.request_id, bad.headers['x-request-id'])
  t.notMatch(bad.json.error.message, /tags/, 'the body is not echoed')

  const suffix = await call(`${s.url}/items`, { method: 'PUT', headers: { 'content-type': 'application/vnd.api+json; charset=utf-8' }, body: 'not json' })
  t.equal(suffix.json?.error?.code, 'MALFORMED_JSON', '+json types are JSON too')
  t.equal(suffix.json.error.details.position, 1)
  const chunked = await new Promise<Reply>((resolve, reject) => {
    const req = httpRequest(`${s.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, raw: Buffer.concat(chunks), json: JSON.parse(Buffer.concat(chunks).toString()) }))
    })
    req.on('error', reject)
    req.write('{"a": ')
    setTimeout(() => req.end('}'), 30)
  })
  t.equal(chunked.json.error.code, 'MALFORMED_JSON', 'a chunked body is checked too')
  t.equal(origin.hits.length, 0, 'none of them reached the upstream')

  const first = await call(`${s.url}/items`)
  t.equal(first.headers['x-ratelimit-remaining'], '4', 'no token was taken by the refused requests: 4 of 5 left after this one')

  // Valid JSON is forwarded byte for byte: odd spacing, escapes, a BOM, non-ASCII.
  const exact = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{ "a" :1.50,\t"b":"\\u00e9 é 😀" ,"c":[ ] }\n')])
  const ok = await call(`${s.url}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: exact })
  t.equal(ok.status, 200)
  t.same(origin.hits[1]?.body, exact, 'the JSON body reached the upstream byte for byte')
  t.equal(origin.hits[1]?.headers['content-length'], String(exact.length))
  t.same(ok.raw, exact, 'and came back byte for byte')

  const text = await call(`${s.url}/items`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{not json' })
  t.equal(text.status, 200, 'a body not declared as JSON is not checked')
  const empty = await call(`${s.url}/items`, { method: 'DELETE', headers: { 'content-type': 'application/json', 'content-length': '0' } })
  t.equal(empty.status, 200, 'an empty body with a JSON type is no body, not malformed JSON')
})

t.test('413: bodies over the route\'s bodyLimit never reach the upstream and take no token', async (t) => {
  const origin = await startOrigin((_req, res) => { res.writeHead(200).end('ok') })
  const s = await startSluice([{ name: 'small', upstream: origin.url, limit: '5/s', algorithm: 'sliding-window', bodyLimit: 1000 }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const declared = await call(`${s.url}/up`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(2000) })
  t.equal(declared.status, 413)
  t.equal(declared.json.error.code, 'PAYLOAD_TOO_LARGE')
  t.equal(declared.json.error.details.limit_bytes, 1000)
  t.equal(declared.json.error.details.request_id, declared.headers['x-request-id'])
  const json = await call(`${s.url}/up`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: 'x'.repeat(2000) }) })
  t.equal(json.status, 413)
  t.equal(json.json.error.code, 'PAYLOAD_TOO_LARGE')
  t.equal(origin.hits.length, 0)
  const next = await call(`${s.url}/up`)
  t.equal(next.headers['x-ratelimit-remaining'], '4', 'no token was taken')
})

t.test('a 304 or 204 that names a Content-Length (RFC 9110 allows it on a 304) comes through as itself', async (t) => {
  const origin = await startOrigin((req, res) => {
    if (req.url === '/no-content') {
      res.writeHead(204, { 'content-length': '5' }).end()
      return
    }
    if (req.headers['if-none-match'] === '"abc"') {
      res.writeHead(304, { etag: '"abc"', 'content-length': '1234' }).end()
      return
    }
    res.writeHead(200, { etag: '"abc"', 'content-type': 'text/plain' }).end('x'.repeat(1234))
  })
  const s = await startSluice([{ name: 'cache', upstream: origin.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const full = await call(`${s.url}/doc`)
  t.equal(full.status, 200)
  t.equal(full.raw.length, 1234)
  for (let i = 0; i < 2; i++) {
    const again = await call(`${s.url}/doc`, { headers: { 'if-none-match': '"abc"' } })
    t.equal(again.status, 304, `revalidation ${i + 1}: 304, not ${again.status} ${again.raw.toString().slice(0, 80)}`)
    t.equal(again.headers.etag, '"abc"')
    t.equal(again.raw.length, 0, 'and no body')
  }
  const empty = await call(`${s.url}/no-content`)
  t.equal(empty.status, 204)
  t.equal(empty.raw.length, 0)
  t.equal((await call(`${s.url}/doc`)).status, 200, 'the route goes on')
  t.equal(origin.hits.length, 5, 'each sent once')
})

t.test('an upstream answer whose body breaks off before its first byte is a 502, not Sluice\'s 500', async (t) => {
  const origin = await startOrigin((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100', etag: '"x"' })
    res.flushHeaders()
    setTimeout(() => res.socket?.destroy(), 20)
  })
  const s = await startSluice([{ name: 'cut', upstream: origin.url, limit: '100/s', retries: 0 }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const r = await call(`${s.url}/x`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
  t.equal(r.status, 502, `502, not ${r.status}`)
  t.equal(r.json?.error?.code, 'BAD_GATEWAY')
  t.equal(r.json?.error?.details?.upstream_status, null)
  t.equal(r.headers.etag, undefined, 'none of the broken answer\'s body headers')
  t.equal(s.logs.filter((l) => l.msg === 'unexpected error').length, 0, 'not logged as Sluice\'s own failure')
})

t.test('a response that never finishes still gets its log line and its count', async (t) => {
  const origin = await startOrigin((req, res) => {
    if (req.url === '/cut') {
      // 10 of the 100 bytes it announced, then the connection goes.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '100' })
      res.write(Buffer.alloc(10))
      setTimeout(() => res.socket?.destroy(), 50)
      return
    }
    setTimeout(() => res.writeHead(200).end('late'), 400) // /slow: the client leaves before this
  })
  const s = await startSluice([{ name: 'broken', upstream: origin.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const cut = await new Promise<string>((resolve) => {
    httpRequest(`${s.url}/cut`, (res) => {
      res.on('data', () => {})
      res.on('end', () => resolve('end'))
      res.on('error', () => resolve('error'))
      res.on('aborted', () => resolve('aborted'))
    }).on('error', () => resolve('error')).end()
  })
  t.not(cut, 'end', `the client sees the response broken off (${cut}), not a complete one`)
  await new Promise<void>((resolve) => {
    const req = httpRequest(`${s.url}/slow`, () => {})
    req.on('error', () => resolve())
    req.end()
    setTimeout(() => { req.destroy(); resolve() }, 100)
  })
  await new Promise((resolve) => setTimeout(resolve, 600))
  const lines = s.logs.filter((l) => l.msg === 'request')
  t.match(lines.find((l) => l.url === '/cut'), { status: 200, upstreamStatus: 200, outcome: 'forwarded', complete: false }, 'the broken response is logged')
  t.match(lines.find((l) => l.url === '/slow'), { outcome: 'forwarded', complete: false }, 'so is the one whose client left after it went upstream')
  t.equal(lines.length, 2, 'once each')
  const metrics = await call(`${s.url}/_sluice/metrics`)
  t.match(metrics.raw.toString(), /sluice_requests_total\{route="broken",outcome="forwarded",code=""\} 2\n/, 'and both are counted')
})

t.test('success bodies stream through byte for byte, compressed ones still compressed', async (t) => {
  const binary = randomBytes(300_000)
  const zipped = gzipSync(Buffer.from('{"ok":true}'))
  const origin = await startOrigin((req, res, body) => {
    if (req.url === '/binary') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(binary)
      return
    }
    if (req.url === '/gzip') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(zipped)
      return
    }
    if (req.url === '/redirect') {
      res.writeHead(302, { location: 'https://elsewhere.example/x' }).end('moved')
      return
    }
    res.writeHead(201, { 'content-type': 'application/octet-stream' }).end(body)
  })
  const s = await startSluice([{ name: 'ok', upstream: origin.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await origin.close() })
  const bin = await call(`${s.url}/binary`)
  t.equal(bin.status, 200)
  t.ok(bin.raw.equals(binary), '300 KB of random bytes arrive unchanged')
  const gz = await call(`${s.url}/gzip`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.ok(gz.raw.equals(zipped), 'a compressed success body is not decoded')
  const moved = await call(`${s.url}/redirect`)
  t.equal(moved.status, 302)
  t.equal(moved.raw.toString(), 'moved', '3xx streams through')
  const upload = randomBytes(200_000)
  const echoed = await call(`${s.url}/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: upload })
  t.equal(echoed.status, 201)
  t.ok(origin.hits[3]?.body.equals(upload), 'a streamed request body arrives byte for byte')
  t.ok(echoed.raw.equals(upload))
})
