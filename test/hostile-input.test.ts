// Hostile or broken input: every request gets an envelope (or the closest the HTTP layer allows),
// nothing leaves its route or reaches another host, no secret is logged or echoed. Two routes to two
// loopback upstreams; what reached where is read from both upstreams' logs.
import t, { type Test } from 'tap'
import { raw, type RawResponse } from './helpers/raw-http'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstream, type TestUpstream } from './helpers/upstream'

interface Rig {
  s: TestSluice
  port: number
  testrail: TestUpstream
  zulip: TestUpstream
}

async function rig (t: Test, extra: Record<string, unknown> = {}, timeouts = {}): Promise<Rig> {
  const testrail = await startUpstream()
  const zulip = await startUpstream()
  const s = await startSluice([
    { name: 'testrail', prefix: '/testrail', upstream: `${testrail.url}/api/v2`, limit: '1000/s', bodyLimit: 1000, ...extra },
    { name: 'zulip', prefix: '/zulip', upstream: `${zulip.url}/api/v1`, limit: '1000/s' }
  ], {}, { timeouts })
  t.teardown(async () => { await s.close(); await testrail.close(); await zulip.close() })
  return { s, port: Number(new URL(s.url).port), testrail, zulip }
}

function isEnvelope (t: Test, r: RawResponse, status: number, code: string, name: string): void {
  t.equal(r.status, status, `${name}: status ${status}`)
  t.match(r.headers['content-type'], /^application\/json/, `${name}: JSON`)
  t.equal(r.json?.success, false, `${name}: an envelope`)
  t.equal(r.json?.error?.code, code, `${name}: code ${code}`)
}

/** Every path an upstream saw lies under its own base path. */
function onlyOwnPaths (t: Test, up: TestUpstream, base: string, name: string): void {
  const stray = up.hits.map((h) => h.url).filter((u) => !u.startsWith(`${base}/`) && u !== base)
  t.same(stray, [], `${name} saw only paths under ${base}`)
}

t.test('request targets that name another host or leave the route never reach anything else', async (t) => {
  const { port, testrail, zulip, s } = await rig(t)
  const zulipHost = new URL(zulip.url).host
  const get = (target: string, host = 'sluice.test'): string => `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`

  for (const target of [`http://${zulipHost}/api/v1/x`, `http://${zulipHost}/testrail/x`, 'http://evil.example/', 'https://evil.example/testrail/x', '*', zulipHost, '//evil.example/testrail/x']) {
    isEnvelope(t, await raw(port, get(target)), 400, 'BAD_REQUEST', `absolute-form or authority target ${target}`)
  }
  const connect = await raw(port, `CONNECT ${zulipHost} HTTP/1.1\r\nHost: ${zulipHost}\r\n\r\n`)
  isEnvelope(t, connect, 405, 'METHOD_NOT_ALLOWED', 'CONNECT')
  // Why, and what to do instead, in the envelope and in the `message` a native client prints.
  t.match(connect.json?.error?.message, /cannot shape requests it cannot read.*point the client's base URL at Sluice/, 'CONNECT: the 405 says why and what to do')
  t.equal(connect.json?.message, connect.json?.error?.message, 'CONNECT: the generic native message')

  const traversals = [
    '/testrail/../zulip/x', '/testrail/%2e%2e/zulip/x', '/testrail/%2E%2E/zulip/x', '/testrail/.%2e/zulip/x', '/testrail/%2e./zulip/x',
    '/testrail/..%2fzulip%2fx', '/testrail/%2e%2e%2fzulip/x', '/testrail/..%5czulip/x', '/testrail/..\\zulip/x',
    '/testrail/./../zulip/x', '/testrail/x/../../zulip/x', '/testrail/..', '/testrail/.', '/testrail/..?a=b', '/testrail/..#frag',
    '/testrail/..;/zulip/x', '/testrail/%2e%2e;/zulip/x', '/testrail/..foo', '/testrail/foo../x'
  ]
  for (const target of traversals) {
    isEnvelope(t, await raw(port, get(target)), 400, 'BAD_REQUEST', `traversal ${target}`)
  }
  // An encoded slash: the guard decodes before it looks for "..".
  isEnvelope(t, await raw(port, get('/testrail%2f..%2fzulip/x')), 400, 'BAD_REQUEST', 'traversal /testrail%2f..%2fzulip/x')
  // Forwarded, but only inside its own route: to the upstream these are names, not steps.
  for (const target of ['/testrail/%252e%252e/zulip/x', '/testrail/a..b', `/testrail//${zulipHost}/x`, '/testrail/%2fzulip', '/testrail/%252e%252e%252fzulip', '/testrail/x?next=/zulip/y&u=http://evil.example/']) {
    const r = await raw(port, get(target))
    t.ok(r.status === 200 || r.json?.success === false, `${target}: forwarded or an envelope (${r.status})`)
  }
  // Host names no upstream: Sluice routes by path and sends the upstream's own Host.
  for (const host of [zulipHost, 'evil.example', 'localhost:1', '[::1]:80', 'a'.repeat(200)]) {
    const r = await raw(port, get('/testrail/by-host', host))
    t.equal(r.status, 200, `Host: ${host.slice(0, 20)} is not a destination`)
  }
  t.ok(testrail.hits.every((h) => h.headers.host === new URL(testrail.url).host), 'the upstream always sees its own Host')
  isEnvelope(t, await raw(port, 'GET /testrail/no-host HTTP/1.1\r\nConnection: close\r\n\r\n'), 400, 'BAD_REQUEST', 'HTTP/1.1 without Host')
  isEnvelope(t, await raw(port, 'GET /testrail/two-hosts HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n'), 400, 'BAD_REQUEST', 'two Host headers')

  t.same(zulip.hits, [], 'nothing reached the other upstream')
  onlyOwnPaths(t, testrail, '/api/v2', 'testrail')
  t.ok(testrail.hits.length >= 5, `testrail got the harmless requests (${testrail.hits.length})`)
  t.notOk(s.logs.some((l) => l.level as number >= 50), 'no error was logged')
})

t.test('smuggling shapes are refused before anything is forwarded', async (t) => {
  const { port, testrail, zulip } = await rig(t)
  const smuggled = 'GET /zulip/smuggled HTTP/1.1\r\nHost: a\r\n\r\n'
  const cases: Record<string, string> = {
    'Content-Length and Transfer-Encoding': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    'Transfer-Encoding and Content-Length': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n${smuggled}`,
    'two different Content-Length': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 48\r\n\r\nabcd${smuggled}`,
    'two equal Content-Length': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd${smuggled}`,
    'Content-Length list': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 48\r\n\r\nabcd${smuggled}`,
    'obfuscated Transfer-Encoding': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${smuggled}`,
    'chunked then identity': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n${smuggled}`,
    'space before the colon': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd${smuggled}`,
    'folded header': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    'bare LF line ends': `POST /testrail/s HTTP/1.1\nHost: a\nContent-Length: 0\n\n${smuggled}`,
    'bad chunk size': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n${smuggled}`,
    'chunk longer than its size': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n${smuggled}`,
    'negative Content-Length': `POST /testrail/s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n${smuggled}`,
    'NUL in the target': `GET /testrail/a\0b HTTP/1.1\r\nHost: a\r\n\r\n${smuggled}`,
    'unknown method': `FOO /testrail/x HTTP/1.1\r\nHost: a\r\n\r\n${smuggled}`,
    'not HTTP at all': `\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03${smuggled}`,
    'HTTP/2 preface': `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n${smuggled}`
  }
  for (const [name, bytes] of Object.entries(cases)) {
    const r = await raw(port, bytes)
    isEnvelope(t, r, 400, 'BAD_REQUEST', name)
    t.equal(r.headers.connection, 'close', `${name}: the connection is closed`)
    t.ok(r.closed, `${name}: and really closed`)
  }
  t.same(zulip.hits, [], 'no smuggled request reached the other upstream')
  t.same(testrail.hits.filter((h) => h.method === 'POST'), [], 'no ambiguous request was forwarded')
  onlyOwnPaths(t, testrail, '/api/v2', 'testrail')
})

t.test('oversized headers and URLs, known but unforwarded methods, protocol upgrades', async (t) => {
  const { port, testrail, zulip } = await rig(t)
  isEnvelope(t, await raw(port, `GET /testrail/s HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE', 'a 20 kB header')
  isEnvelope(t, await raw(port, `GET /testrail/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`), 431, 'HEADERS_TOO_LARGE', 'a 20 kB URL')
  const many = Array.from({ length: 3000 }, (_, i) => `X-${i}: 1\r\n`).join('')
  isEnvelope(t, await raw(port, `GET /testrail/s HTTP/1.1\r\nHost: a\r\n${many}\r\n`), 431, 'HEADERS_TOO_LARGE', '3000 headers')
  for (const method of ['PROPFIND', 'TRACE', 'LINK', 'MKCOL', 'SEARCH']) {
    const r = await raw(port, `${method} /testrail/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
    isEnvelope(t, r, 405, 'METHOD_NOT_ALLOWED', method)
    t.match(r.headers.allow, /GET/, `${method}: Allow lists the forwarded methods`)
  }
  // No 'upgrade' listener: an Upgrade offer is an ordinary request (curl offers h2c), forwarded like any.
  const up = await raw(port, 'GET /testrail/up HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n', { untilResponse: true })
  t.equal(up.status, 200, 'an Upgrade offer is answered as a plain request')
  // curl sends Expect: 100-continue with large uploads: Node answers the 100, the body is forwarded.
  const expect = await raw(port, ['POST /testrail/upload HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n', 'hello'], { gapMs: 100 })
  t.match(expect.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /, 'Expect: 100-continue: the interim 100, then the upstream\'s answer')
  t.same(zulip.hits, [])
  t.same(testrail.hits.map((h) => `${h.url} ${h.body}`), ['/api/v2/up ', '/api/v2/upload hello'])
  t.equal(testrail.hits[0]?.headers.upgrade, undefined, 'the Upgrade header is not forwarded (hop-by-hop)')
})

t.test('slow clients are bounded by timeouts; a request waiting for its slot is not', async (t) => {
  const { port, testrail, s } = await rig(t, { limit: '1/s', algorithm: 'sliding-window', maxWait: '3s', margin: '10ms' },
    { headersMs: 800, requestMs: 1500, checkIntervalMs: 100 })
  const trickle = ['GET /testrail/slow HTTP/1.1\r\n', ...Array.from({ length: 20 }, (_, i) => `X-${i}: 1\r\n`), '\r\n']
  const slowHeaders = await raw(port, trickle, { gapMs: 150 })
  isEnvelope(t, slowHeaders, 408, 'REQUEST_TIMEOUT', 'headers trickling in')
  t.ok(slowHeaders.ms < 2000, `cut after the 800 ms headers timeout (${Math.round(slowHeaders.ms)} ms)`)

  // The body trickles: the request is admitted and forwarded, then cut at the request timeout.
  const slowBody = await raw(port, ['POST /testrail/slow-body HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n', ...Array.from({ length: 40 }, () => 'x')], { gapMs: 100, timeoutMs: 5000 })
  isEnvelope(t, slowBody, 408, 'REQUEST_TIMEOUT', 'a body trickling in')
  t.ok(slowBody.ms < 2700, `cut near the 1500 ms request timeout (${Math.round(slowBody.ms)} ms)`)

  // Waiting for a slot is not slowness: these wait ~1 s and ~2 s, beyond the 1.5 s request
  // timeout, and are forwarded (a GET and a small body are wholly received before they wait).
  const waited = await Promise.all([
    raw(port, 'GET /testrail/w1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 }),
    raw(port, 'POST /testrail/w2 HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello', { timeoutMs: 5000 }),
    raw(port, 'GET /testrail/w3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', { timeoutMs: 5000 })
  ])
  t.same(waited.map((r) => r.status), [200, 200, 200], 'requests waiting longer than the request timeout are still forwarded')
  t.ok(Math.max(...waited.map((r) => r.ms)) > 1500, `the last one waited past the request timeout (${Math.round(Math.max(...waited.map((r) => r.ms)))} ms)`)
  t.same(testrail.hits.filter((h) => h.url !== '/api/v2/slow-body').map((h) => h.url).sort(), ['/api/v2/w1', '/api/v2/w2', '/api/v2/w3'])
  t.notOk(testrail.hits.some((h) => h.url === '/api/v2/slow-body'), 'the cut body never completed at the upstream')
  t.ok(s.logs.some((l) => l.code === 'REQUEST_TIMEOUT'), 'timeouts are logged')
})

t.test('bodies over the limit: 413, also chunked without Content-Length (counted while streaming)', async (t) => {
  const { port, testrail } = await rig(t)
  const declared = await raw(port, `POST /testrail/big HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n${'x'.repeat(5000)}`)
  isEnvelope(t, declared, 413, 'PAYLOAD_TOO_LARGE', 'Content-Length over the limit')
  for (const type of ['text/plain', 'application/octet-stream', 'application/json']) {
    const chunk = `200\r\n${'x'.repeat(512)}\r\n`
    const r = await raw(port, [`POST /testrail/chunked HTTP/1.1\r\nHost: a\r\nContent-Type: ${type}\r\nTransfer-Encoding: chunked\r\n\r\n`, chunk, chunk, chunk, '0\r\n\r\n'], { gapMs: 50 })
    isEnvelope(t, r, 413, 'PAYLOAD_TOO_LARGE', `chunked ${type} over the limit`)
    t.equal(r.json?.error?.details?.limit_bytes, 1000, `${type}: the limit is named`)
    t.equal(r.headers.connection, 'close', `${type}: the rest of the body is not read`)
  }
  const small = `POST /testrail/fits HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1f4\r\n${'y'.repeat(500)}\r\n1f4\r\n${'y'.repeat(500)}\r\n0\r\n\r\n`
  const fits = await raw(port, small)
  t.equal(fits.status, 200, 'a chunked body of exactly the limit is forwarded')
  t.same(testrail.hits.map((h) => `${h.url} ${h.body.length}`), ['/api/v2/fits 1000'], 'no body over the limit completed at the upstream')
})

t.test('secrets never reach a log line or an envelope, even when the upstream echoes them', async (t) => {
  const secrets = ['Bearer-s3cr3t-auth', 'sess=c00kie-s3cr3t', 'apikey-s3cr3t-hdr', 'qtoken-s3cr3t', 'qkey-s3cr3t', 'qapikey-s3cr3t', 'priv-s3cr3t-tok']
  const echoing = await startUpstream((req, res) => {
    // A badly behaved API that quotes the request's credentials back in its error.
    res.statusCode = req.url?.includes('/ok') === true ? 200 : 401
    res.setHeader('content-type', 'application/json')
    res.setHeader('set-cookie', 'sess=c00kie-s3cr3t; HttpOnly')
    res.end(JSON.stringify({ error: `invalid credentials ${String(req.headers.authorization)} ${String(req.headers.cookie)} ${String(req.headers['x-api-key'])} for ${String(req.url)}`, headers: req.headers }))
  })
  const s = await startSluice([
    { name: 'testrail', prefix: '/testrail', upstream: echoing.url, limit: '1000/s', profile: 'testrail' },
    { name: 'gh', prefix: '/gh', upstream: echoing.url, limit: '1000/s', profile: 'github', key: 'header:authorization' }
  ])
  t.teardown(async () => { await s.close(); await echoing.close() })
  const port = Number(new URL(s.url).port)
  const headers = 'Authorization: Bearer-s3cr3t-auth\r\nCookie: sess=c00kie-s3cr3t\r\nX-Api-Key: apikey-s3cr3t-hdr\r\nPrivate-Token: priv-s3cr3t-tok\r\n'
  const query = '?token=qtoken-s3cr3t&key=qkey-s3cr3t&api_key=qapikey-s3cr3t&page=2'
  const responses: RawResponse[] = []
  for (const path of [`/testrail/fail${query}`, `/gh/fail${query}`, `/gh/ok${query}`, `/nowhere${query}`, `/testrail/../x${query}`, `/testrail/%zz${query}`]) {
    responses.push(await raw(port, `GET ${path} HTTP/1.1\r\nHost: a\r\n${headers}Connection: close\r\n\r\n`))
  }
  responses.push(await raw(port, `GET /testrail/x${query} HTTP/1.1\r\nHost: a\r\n${headers}X-Big: ${'b'.repeat(20_000)}\r\n\r\n`))
  responses.push(await raw(port, `POST /testrail/x${query} HTTP/1.1\r\nHost: a\r\n${headers}Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n`))
  t.same(responses.map((r) => r.status), [401, 401, 200, 404, 400, 400, 431, 400])
  for (const [i, r] of responses.entries()) {
    if (r.status === 200) continue
    t.equal(r.json?.success, false, `response ${i} is an envelope`)
    // The upstream's own Set-Cookie is its answer to the client and passes, like any response header.
    const shown = r.text.split('\r\n').filter((l) => !/^set-cookie:/i.test(l)).join('\r\n')
    for (const secret of secrets) t.notOk(shown.includes(secret), `response ${i} (${r.status}) does not echo ${secret}`)
  }
  t.equal(echoing.hits.length, 3, 'the three routed requests were forwarded, credentials and all (they are the client\'s)')
  t.equal(echoing.hits[0]?.headers.authorization, 'Bearer-s3cr3t-auth')
  t.ok(s.logs.length >= 8, `one log line or more per request (${s.logs.length})`)
  for (const [i, line] of s.logs.entries()) {
    const text = JSON.stringify(line)
    for (const secret of secrets) t.notOk(text.includes(secret), `log line ${i} (${String(line.msg)}) does not hold ${secret}`)
  }
})

t.test('the non-essential admin routes can be turned off; health and ready stay', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '10/s' }], { adminRoutes: 'essential' })
  t.teardown(async () => { await s.close(); await up.close() })
  const port = Number(new URL(s.url).port)
  const get = async (path: string): Promise<RawResponse> => await raw(port, `GET ${path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`)
  t.equal((await get('/_sluice/health')).json?.status, 'ok')
  t.equal((await get('/_sluice/ready')).json?.status, 'ready')
  for (const path of ['/_sluice/metrics', '/_sluice/status', '/_sluice/', '/_sluice', '/_sluice/events', '/_sluice?x=1']) {
    isEnvelope(t, await get(path), 404, 'ROUTE_NOT_FOUND', `${path} is off`)
  }
  t.same(up.hits, [], 'and never proxied instead')

  const on = await startSluice([{ upstream: up.url, limit: '10/s' }])
  t.teardown(async () => { await on.close() })
  const metrics = await raw(Number(new URL(on.url).port), 'GET /_sluice/metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')
  t.equal(metrics.status, 200, 'by default (adminRoutes: all) they answer')
})
