// The proxy end to end: a real Sluice in front of a real loopback origin, memory store.
import t from 'tap'
import { maxInWindow } from '../src/emulator'
import { request as httpRequest } from 'node:http'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

/** node:http sends the path as written (undici and fetch resolve dot segments first). */
async function get (url: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, json: any }> {
  const u = new URL(url)
  const path = url.slice(u.origin.length)
  return await new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path, headers, signal }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let json: unknown
        try { json = JSON.parse(text) } catch { json = text }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('forwards to the upstream and reports the budget', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'api', prefix: '/api', upstream: `${up.url}/base`, limit: '20/s', algorithm: 'sliding-window' }])
  t.teardown(async () => { await s.close(); await up.close() })

  const res = await get(`${s.url}/api/items/7?x=1`, { 'x-request-id': 'abc-123' })
  t.equal(res.status, 200)
  t.equal(res.json.url, '/base/items/7?x=1', 'the path is mounted under the upstream base path')
  t.equal(up.hits[0].headers['x-request-id'], 'abc-123', 'the request id travels upstream')
  t.equal(up.hits[0].headers.host, new URL(up.url).host, 'Host is the upstream host')
  t.equal(res.headers['x-request-id'], 'abc-123')
  t.equal(res.headers['ratelimit-policy'], '"api";q=20;w=1')
  t.match(res.headers.ratelimit, /^"api";r=19;t=\d+$/)
  t.equal(res.headers['x-ratelimit-limit'], '20')
  t.equal(res.headers['x-ratelimit-remaining'], '19')
  const reset = Number(res.headers['x-ratelimit-reset'])
  t.ok(reset >= Math.floor(Date.now() / 1000) && reset <= Math.ceil(Date.now() / 1000) + 2, `X-RateLimit-Reset is epoch seconds (${reset})`)
  t.match(res.headers['server-timing'], /^queue;dur=\d+(\.\d)?$/)

  const bad = await get(`${s.url}/api/items`, { 'x-request-id': 'has spaces and way too long'.repeat(10) })
  t.match(bad.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'an unusable request id is replaced by a UUID')
})

t.test('bodies stream through untouched and hop-by-hop headers stop at Sluice', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const body = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251))
  // node:http, because undici will not send a Connection header naming other headers.
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(`${s.url}/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', connection: 'x-private', 'x-private': 'secret-hop' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body)
  })
  t.equal(status, 200)
  t.equal(up.hits[0].body, body.toString(), 'the body arrives byte for byte')
  t.equal(up.hits[0].headers['x-private'], undefined, 'a header named in Connection is not forwarded')
})

t.test('requests over the budget are delayed, not refused, and the upstream never sees more than the limit', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '5/s', algorithm: 'sliding-window' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const began = Date.now()
  const results = await Promise.all(Array.from({ length: 12 }, () => get(`${s.url}/x`)))
  t.same(results.map((r) => r.status), Array(12).fill(200), 'every request succeeds')
  const elapsed = Date.now() - began
  t.ok(elapsed >= 2000, `12 requests at 5/s take two more windows (${elapsed} ms)`)
  t.ok(elapsed < 3500, `and not much more (${elapsed} ms)`)
  t.ok(maxInWindow(up.hits.map((h) => h.t), 1000) <= 5, 'no 1 s window at the upstream holds more than 5')
  const waited = results.map((r) => Number(/dur=([\d.]+)/.exec(String(r.headers['server-timing']))?.[1]))
  t.equal(waited.filter((w) => w < 5).length, 5, 'five start at once (the whole window), the rest waited')
})

t.test('a request that cannot start within its wait bound is refused at once with Retry-After', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'tr', upstream: up.url, limit: '2/s', algorithm: 'sliding-window', maxWait: '100ms' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const began = Date.now()
  const results = await Promise.all(Array.from({ length: 5 }, () => get(`${s.url}/x`)))
  t.ok(Date.now() - began < 900, 'refusals come at once, not after waiting')
  const refused = results.filter((r) => r.status === 429)
  t.equal(results.filter((r) => r.status === 200).length, 2)
  t.equal(refused.length, 3)
  for (const r of refused) {
    t.equal(r.headers['content-type'], 'application/json; charset=utf-8')
    t.equal(r.json.success, false)
    t.equal(r.json.error.code, 'RATE_LIMITED')
    t.equal(r.json.error.details.limit, 2)
    t.equal(r.json.error.details.bucket, 'tr')
    // 1 s window + 100 ms margin, from the burst's starts, which are recorded one margin later.
    t.ok(r.json.error.details.retry_after_ms > 100 && r.json.error.details.retry_after_ms <= 1200, `retry after ${r.json.error.details.retry_after_ms} ms`)
    t.equal(r.headers['retry-after'], String(Math.ceil(r.json.error.details.retry_after_ms / 1000)), 'Retry-After is whole seconds, rounded up')
    t.equal(r.headers['x-ratelimit-remaining'], '0')
  }
  t.equal(up.hits.length, 2, 'refused requests never reach the upstream')
})

t.test('Prefer: wait shortens the wait bound but never lengthens it', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '1/s', algorithm: 'sliding-window', maxWait: '200ms' }])
  t.teardown(async () => { await s.close(); await up.close() })
  t.equal((await get(`${s.url}/a`)).status, 200)
  const short = await get(`${s.url}/b`, { prefer: 'wait=0' })
  t.equal(short.status, 429, 'wait=0: refused at once')
  t.equal(short.headers['preference-applied'], 'wait=0')
  const long = await get(`${s.url}/c`, { prefer: 'respond-async, wait=30' })
  t.equal(long.status, 429, 'wait=30 does not stretch the route\'s 200 ms bound')
})

t.test('more waiters than maxQueue are refused with QUEUE_FULL', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '1/s', algorithm: 'sliding-window', maxQueue: 2, maxWait: '10s', margin: '10ms' }])
  t.teardown(async () => { await s.close(); await up.close() })
  t.equal((await get(`${s.url}/first`)).status, 200)
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => get(`${s.url}/q${i}`)))
  const codes = results.map((r) => r.status === 200 ? 'ok' : r.json.error.code).sort()
  t.same(codes, ['QUEUE_FULL', 'QUEUE_FULL', 'ok', 'ok'])
  const full = results.find((r) => r.status === 429)
  t.equal(full?.json.error.details.max_queue, 2)
  t.ok(Number(full?.headers['retry-after']) >= 1)
})

t.test('a client that leaves while waiting is never forwarded', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '1/s', algorithm: 'sliding-window', margin: '10ms' }])
  t.teardown(async () => { await s.close(); await up.close() })
  t.equal((await get(`${s.url}/first`)).status, 200)
  const controller = new AbortController()
  const pending = get(`${s.url}/abandoned`, {}, controller.signal).catch((err: Error) => err)
  await new Promise((resolve) => setTimeout(resolve, 150))
  controller.abort()
  t.type(await pending, Error, 'the client gave up')
  await new Promise((resolve) => setTimeout(resolve, 1200))
  t.same(up.hits.map((h) => h.url), ['/first'], 'the abandoned request never reached the upstream')
  const line = s.logs.find((l) => l.outcome === 'cancelled')
  t.ok(line, 'the cancellation is logged')
  // Its slot was the newest, so it was given back: the next request starts at once.
  const next = await get(`${s.url}/next`)
  t.equal(next.status, 200)
  t.ok(Number(/dur=([\d.]+)/.exec(String(next.headers['server-timing']))?.[1]) < 5, 'the given-back slot is free again')
})

t.test('one budget per header value with key: header:<name>', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([
    { name: 'zulip', upstream: up.url, limit: '1/s', algorithm: 'sliding-window', key: 'header:authorization', maxWait: '0s' },
    { name: 'gh', prefix: '/gh', upstream: up.url, limit: '1/min', key: 'header:authorization', maxWait: '0s' }
  ])
  t.teardown(async () => { await s.close(); await up.close() })
  t.equal((await get(`${s.url}/a`, { authorization: 'Basic alice' })).status, 200)
  t.equal((await get(`${s.url}/a`, { authorization: 'Basic bob' })).status, 200, 'another credential has its own budget')
  const again = await get(`${s.url}/a`, { authorization: 'Basic alice' })
  t.equal(again.status, 429, 'the same credential shares one')
  t.match(again.json.error.details.bucket, /^zulip:[A-Za-z0-9_-]{22}$/, 'the bucket is named by an HMAC, not the credential')
  t.notMatch(JSON.stringify(again.json), /alice/)
  // The scheme is not part of the credential: GitHub takes `token X` and `Bearer X` alike.
  t.equal((await get(`${s.url}/gh/a`, { authorization: 'token ghp_SAME' })).status, 200)
  for (const spelling of ['Bearer ghp_SAME', 'bearer  ghp_SAME', 'TOKEN ghp_SAME']) {
    t.equal((await get(`${s.url}/gh/a`, { authorization: spelling })).status, 429, `${spelling}: the same token, the same budget`)
  }
  t.equal((await get(`${s.url}/gh/a`, { authorization: 'Bearer ghp_OTHER' })).status, 200, 'another token has its own')
  const none = await get(`${s.url}/a`)
  t.equal(none.status, 400)
  t.equal(none.json.error.code, 'BAD_REQUEST')
  t.notMatch(JSON.stringify(s.logs), /alice|bob|ghp_/, 'credentials never reach the log')
})

t.test('unknown routes, traversal and oversize bodies get envelopes and never reach the upstream', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'api', prefix: '/api', upstream: up.url, limit: '100/s', bodyLimit: 1000 }])
  t.teardown(async () => { await s.close(); await up.close() })
  const missing = await get(`${s.url}/other/x?token=hunter2`)
  t.equal(missing.status, 404)
  t.equal(missing.json.error.code, 'ROUTE_NOT_FOUND')
  t.notMatch(JSON.stringify(missing.json), /hunter2/)
  const traversal = await get(`${s.url}/api/../other/x`)
  t.equal(traversal.status, 400, 'dot segments are refused')
  t.equal(traversal.json.error.code, 'BAD_REQUEST')
  t.equal((await get(`${s.url}/api/a/%2E./b`)).status, 400, 'also half-encoded')
  t.equal((await get(`${s.url}/api/a/..%2fb`)).status, 400, 'also before an encoded slash')
  t.equal((await get(`${s.url}/api/a..b/c.d`)).status, 200, 'dots inside names are fine')
  const encoded = await get(`${s.url}/api/%2e%2e/%2e%2e/etc/passwd`)
  t.equal(encoded.status, 400)
  t.equal(encoded.json.success, false)
  const big = await request(`${s.url}/api/up`, { method: 'POST', body: 'x'.repeat(5000), headers: { 'content-type': 'text/plain' } })
  t.equal(big.statusCode, 413)
  t.equal((await big.body.json() as any).error.code, 'PAYLOAD_TOO_LARGE')
  t.same(up.hits.map((h) => h.url), ['/a..b/c.d'], 'only the harmless path reached the upstream')
  t.notMatch(JSON.stringify(s.logs), /hunter2/, 'secret query parameters are redacted in logs')
})

t.test('credential-named query parameters never reach the log or an error body', async (t) => {
  // The upstream fails and echoes the URL it was sent, as some do in their error text.
  const up = await startUpstream((req, res) => { res.statusCode = 500; res.setHeader('content-type', 'text/plain'); res.end(`boom ${req.url ?? ''}`) })
  const s = await startSluice([{ name: 'api', prefix: '/api', upstream: up.url, limit: '100/s', retries: 0 }])
  t.teardown(async () => { await s.close(); await up.close() })
  const secrets = { private_token: 'PT_SECRET_1', 'X-Amz-Signature': 'AMZSIG_SECRET_2', 'X-Amz-Credential': 'AMZCRED_SECRET_3', refreshToken: 'RT_SECRET_4', oauth_token: 'OA_SECRET_5', jwt: 'JWT_SECRET_6' }
  const query = Object.entries(secrets).map(([k, v]) => `${k}=${v}`).join('&')
  const r = await get(`${s.url}/api/x?page=2&${query}`)
  t.equal(r.status, 502)
  t.equal(r.json.error.code, 'UPSTREAM_ERROR')
  const logged = JSON.stringify(s.logs)
  for (const [name, value] of Object.entries(secrets)) {
    t.notMatch(JSON.stringify(r.json), value, `${name}: not in the error body`)
    t.notMatch(logged, value, `${name}: not in the log`)
  }
  t.match(logged, /page=2/, 'other parameters are logged as sent')
  t.equal(up.hits[0]?.url, `/x?page=2&${query}`, 'the upstream gets them unchanged')
})

t.test('hop-by-hop request headers, Proxy-Authorization and Sluice\'s own headers stay with Sluice', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const res = await request(`${s.url}/x`, {
    headers: {
      authorization: 'token for-the-api',
      'proxy-authorization': 'Basic cHJveHk6cHc=',
      'proxy-connection': 'keep-alive',
      te: 'trailers',
      trailer: 'x-t',
      'x-sluice-client': 'ci-job-7',
      'x-sluice-priority': 'high',
      'x-other': 'kept'
    }
  })
  t.equal(res.statusCode, 200)
  await res.body.dump()
  const sent = up.hits[0]?.headers ?? {}
  t.same(['proxy-authorization', 'proxy-connection', 'te', 'trailer', 'x-sluice-client', 'x-sluice-priority'].filter((h) => h in sent), [], 'none of them reaches the upstream')
  t.equal(sent.authorization, 'token for-the-api', 'the API\'s own credential does')
  t.equal(sent['x-other'], 'kept')
})

t.test('a GET with a body is refused, not forwarded without it', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const query = '{"query":{"match":{"title":"sluice"}}}'
  const withBody = await request(`${s.url}/index/_search`, { method: 'GET', body: query, headers: { 'content-type': 'application/json' } })
  t.equal(withBody.statusCode, 400)
  const json = await withBody.body.json() as { error: { code: string, message: string } }
  t.equal(json.error.code, 'BAD_REQUEST')
  t.match(json.error.message, /GET request with a body cannot be forwarded.*POST/)
  const chunked = await request(`${s.url}/index/_search`, { method: 'GET', body: Readable.from([Buffer.from(query)]) })
  t.equal(chunked.statusCode, 400, 'also chunked')
  await chunked.body.dump()
  t.equal(up.hits.length, 0, 'neither reached the upstream')
  const empty = await request(`${s.url}/plain`, { method: 'GET', headers: { 'content-length': '0' } })
  t.equal(empty.statusCode, 200, 'Content-Length: 0 is no body')
  await empty.body.dump()
  const del = await request(`${s.url}/doc/1`, { method: 'DELETE', body: query, headers: { 'content-type': 'application/json' } })
  t.equal(del.statusCode, 200)
  await del.body.dump()
  t.equal(up.hits[1]?.body.toString(), query, 'a DELETE body goes through')
})

t.test('admin routes', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  t.same((await get(`${s.url}/_sluice/health`)).json, { status: 'ok' })
  t.same((await get(`${s.url}/_sluice/ready`)).json, { status: 'ready', store: 'memory', routes: { default: 'memory' } })
  // Paths under /_sluice/ that name no admin route are Sluice's too: 404, not forwarded by the route at /.
  for (const path of ['/_sluice/nope', '/_sluice/status/x', '/_sluice//', '/_sluice/metrics/../x', '/_sluice/health/?token=hunter2']) {
    const res = await get(`${s.url}${path}`)
    t.equal(res.status, path.includes('..') ? 400 : 404, `${path}: ${res.status}`)
    t.equal(res.json.error.code, path.includes('..') ? 'BAD_REQUEST' : 'ROUTE_NOT_FOUND')
    t.notMatch(JSON.stringify(res.json), /hunter2/)
  }
  const post = await request(`${s.url}/_sluice/anything`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })
  t.equal(post.statusCode, 404, 'whatever the method')
  await post.body.dump()
  t.equal(up.hits.length, 0, 'admin routes are never proxied, even under prefix /')
  t.equal((await get(`${s.url}/_sluicex`)).status, 200, 'a path that only begins with the name is an ordinary one')
})
