// Issue 4, one instance: maintenance windows, flaky gateways, bodies kept for a retry, and the
// upstream's own announced numbers. Windows of 1 s, penalties of 1-2 s.
import t from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { startEmulator } from '../src/emulator'
import { scrapeMetrics } from './helpers/prometheus'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, json: any, text: string }

async function call (url: string, options: { method?: string, headers?: Record<string, string>, body?: string | Buffer } = {}): Promise<Answer> {
  const res = await request(url, { method: (options.method ?? 'GET') as 'GET', headers: options.headers, body: options.body })
  const text = await res.body.text()
  let json: unknown
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.statusCode, headers: res.headers, json, text }
}

t.test('maintenance: a request waits it out when its wait bound allows, else fails fast with 503 MAINTENANCE', async (t) => {
  const emulator = await startEmulator({ profile: 'testrail', limit: 100, windowMs: 1000 })
  const s = await startSluice([{ name: 'tr', upstream: emulator.url, limit: '50/s', profile: 'testrail', maxWait: '10s' }])
  t.teardown(async () => { await s.close(); await emulator.close() })

  emulator.maintenance(1500)
  const began = Date.now()
  const patient = await call(`${s.url}/index.php?/api/v2/get_case/1`)
  const waitedMs = Date.now() - began
  t.equal(patient.status, 200, 'the request waited the maintenance out')
  t.ok(waitedMs >= 1400 && waitedMs < 4000, `and took about the maintenance (${waitedMs} ms)`)
  t.equal(emulator.earlyAfterPushback(), 0, 'it came back only when asked to')

  emulator.maintenance(3000)
  const first = Date.now()
  const hurried = await call(`${s.url}/index.php?/api/v2/get_case/2`, { headers: { prefer: 'wait=1' } })
  const tookMs = Date.now() - first
  t.equal(hurried.status, 503)
  t.equal(hurried.json.error.code, 'MAINTENANCE')
  t.equal(hurried.headers['retry-after'], '3', 'Retry-After is the pause the upstream asked for')
  t.equal(hurried.json.error.details.retry_after_s, 3)
  t.match(hurried.json.error.details.retry_skipped, /wait bound/)
  t.ok(tookMs < 800, `a request that cannot wait that long fails fast (${tookMs} ms)`)
  const next = await call(`${s.url}/index.php?/api/v2/get_case/3`, { headers: { prefer: 'wait=0' } })
  t.equal(next.status, 429, 'the bucket is paused: the next request is not sent into the maintenance')
  t.equal(next.json.error.code, 'RATE_LIMITED')
  t.equal(emulator.stats().maintenance, 2, 'the upstream saw one request per maintenance window')
})

t.test('flaky upstream: idempotent requests succeed within their retry bound; POST is never sent twice unless configured', async (t) => {
  const flaky = { p502: 0.1, p503: 0.1, pReset: 0.1, seed: 11 }
  const emulator = await startEmulator({ profile: 'generic', limit: 1000, windowMs: 1000, flaky })
  const s = await startSluice([
    { name: 'safe', prefix: '/safe', upstream: emulator.url, limit: '500/s', retries: 4 },
    { name: 'posts', prefix: '/posts', upstream: emulator.url, limit: '500/s', retries: 4, retryMethods: ['POST'] }
  ])
  t.teardown(async () => { await s.close(); await emulator.close() })

  const gets: number[] = []
  for (let i = 0; i < 40; i++) gets.push((await call(`${s.url}/safe/items/${i}`, { method: i % 2 === 0 ? 'GET' : 'PUT', body: i % 2 === 0 ? undefined : '{}', headers: { 'content-type': 'application/json' } })).status)
  const failed = emulator.stats()
  t.same(gets, Array(40).fill(200), `40 GET and PUT requests all succeeded (${failed['flaky-502']} 502, ${failed['flaky-503']} 503, ${failed.reset} resets on the way)`)
  t.ok(failed['flaky-502'] + failed['flaky-503'] + failed.reset > 0, 'the upstream did fail')
  t.equal((await scrapeMetrics(s.url)).value('sluice_retries_total', { route: 'safe', reason: 'transient' }), failed['flaky-502'] + failed['flaky-503'] + failed.reset, 'each failure was retried once')
  const retriedLines = s.logs.filter((l) => l.msg === 'request' && typeof l.retries === 'number')
  t.ok(retriedLines.length > 0, 'retries show in the request log lines')

  emulator.reset()
  const posts: Answer[] = []
  for (let i = 0; i < 40; i++) posts.push(await call(`${s.url}/safe/items`, { method: 'POST', body: JSON.stringify({ i }), headers: { 'content-type': 'application/json', 'x-request-id': `post-${i}` } }))
  const perId = new Map<string, number>()
  for (const a of emulator.arrivals) perId.set(a.headers['x-request-id'] ?? '', (perId.get(a.headers['x-request-id'] ?? '') ?? 0) + 1)
  t.equal(Math.max(...perId.values()), 1, 'no POST reached the upstream twice')
  const postFailures = posts.filter((p) => p.status !== 200)
  t.ok(postFailures.length > 0, `${postFailures.length} POSTs failed and were not retried`)
  for (const p of postFailures) {
    t.match(p.json.error.code, /^(BAD_GATEWAY|UPSTREAM_UNAVAILABLE)$/)
    t.match(p.json.error.details.retry_skipped, /POST is not idempotent/)
  }

  emulator.reset()
  const listed: number[] = []
  for (let i = 0; i < 30; i++) listed.push((await call(`${s.url}/posts/items`, { method: 'POST', body: JSON.stringify({ i }), headers: { 'content-type': 'application/json' } })).status)
  t.same(listed, Array(30).fill(200), 'a route that lists POST in retryMethods retries it')
})

t.test('a pushed-back request keeps its body for the retry up to retryBodyLimit; larger bodies say why they were not retried', async (t) => {
  let calls = 0
  const bodies: Buffer[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      bodies.push(Buffer.concat(chunks))
      // Every odd call is pushed back for 1 s.
      if (calls++ % 2 === 0) {
        res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"message":"slow down"}')
        return
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.concat(chunks))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const s = await startSluice([{ name: 'b', upstream: url, limit: '50/s', retryBodyLimit: 1000, maxWait: '5s' }])
  t.teardown(async () => { await s.close(); server.closeAllConnections(); server.close() })

  const small = Buffer.from(Array.from({ length: 900 }, (_, i) => i % 256))
  const began = Date.now()
  const ok = await request(`${s.url}/upload`, { method: 'POST', body: small, headers: { 'content-type': 'application/octet-stream' } })
  const echoed = Buffer.from(await ok.body.arrayBuffer())
  t.equal(ok.statusCode, 200, 'a POST pushed back with 429 was sent again')
  t.ok(Date.now() - began >= 950, 'after the pause')
  t.ok(bodies[0]?.equals(small) && bodies[1]?.equals(small), 'both attempts carried the same bytes')
  t.ok(echoed.equals(small))

  const json = '{ "a": [1, 2, 3] }'
  const again = await call(`${s.url}/things`, { method: 'PUT', body: json, headers: { 'content-type': 'application/json' } })
  t.equal(again.status, 200)
  t.equal(bodies[3]?.toString(), json, 'a JSON body is sent again byte for byte')

  const large = Buffer.alloc(5000, 7)
  const refused = await call(`${s.url}/upload`, { method: 'POST', body: large, headers: { 'content-type': 'application/octet-stream' } })
  t.equal(refused.status, 429)
  t.equal(refused.json.error.code, 'RATE_LIMITED')
  t.match(refused.json.error.details.retry_skipped, /retryBodyLimit 1000/)
  t.equal(refused.headers['retry-after'], '1')
  t.ok(bodies[4]?.equals(large), 'the large body was streamed once')
})

t.test('header adoption: an upstream announcing a lower limit than configured slows Sluice down to it', async (t) => {
  const emulator = await startEmulator({ profile: 'github', limit: 100, windowMs: 1000, announce: true, announceLimit: 8 })
  const s = await startSluice([{ name: 'gh', upstream: emulator.url, limit: '40/s', profile: 'github', maxWait: '20s' }])
  t.teardown(async () => { await s.close(); await emulator.close() })
  const first = await call(`${s.url}/repos/x`)
  t.equal(first.status, 200)
  t.equal(s.limiters.get('gh')!.policy.limit, 8, 'the announced 8 replaces the configured 40')
  t.equal(first.headers['ratelimit-policy'], '"gh";q=40;w=1', 'the first answer was admitted under the configured limit (Sluice\'s view is in RateLimit-Policy)')
  t.equal(first.headers['x-ratelimit-limit'], '8', 'the upstream\'s own X-RateLimit-* pass untouched')
  const began = Date.now()
  const statuses = await Promise.all(Array.from({ length: 24 }, (_, i) => call(`${s.url}/repos/${i}`).then((a) => a.status)))
  const tookMs = Date.now() - began
  t.same(statuses, Array(24).fill(200))
  const okTimes = emulator.okTimes().slice(1)
  const peak = emulator.maxInWindow(1000)
  t.ok(peak <= 9, `the upstream saw at most ${peak} requests in any second (announced 8)`)
  t.ok(tookMs >= 2000, `24 requests at 8/s took ${tookMs} ms`)
  t.equal(okTimes.length, 24)
  const warnings = s.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('announces a limit of 8'))
  t.equal(warnings.length, 1, 'the lower limit is warned about once')
  const again = await call(`${s.url}/repos/y`)
  t.equal(again.headers['ratelimit-policy'], '"gh";q=8;w=1', 'Sluice\'s own headers show the adopted limit')
  t.equal(again.headers['x-ratelimit-limit'], '8')
})

t.test('header adoption follows the announcement back up, and only for the route\'s one budget', async (t) => {
  // /lim/N announces a limit of N (no window: read in the route's); under /search/ it is tagged as
  // GitHub's search budget, another budget than the route's.
  const up = await startUpstream((req, res) => {
    const n = /\/lim\/(\d+)/.exec(req.url ?? '')?.[1] ?? '1000'
    res.setHeader('x-ratelimit-limit', n)
    res.setHeader('x-ratelimit-remaining', String(Number(n) - 1))
    if (req.url?.startsWith('/search/') === true) res.setHeader('x-ratelimit-resource', 'search')
    res.end('{}')
  })
  const s = await startSluice([
    { name: 'one', prefix: '/one', upstream: up.url, limit: '40/s', maxWait: '20s' },
    { name: 'keyed', prefix: '/keyed', upstream: up.url, limit: '40/s', maxWait: '20s', key: 'header:authorization' }
  ])
  t.teardown(async () => { await s.close(); await up.close() })
  const limitAfter = async (path: string, headers: Record<string, string> = {}): Promise<number> => {
    t.equal((await call(`${s.url}${path}`, { headers })).status, 200, path)
    return s.limiters.get(path.split('/')[1])!.policy.limit
  }
  t.equal(await limitAfter('/one/lim/8'), 8, 'lowered to the announced 8')
  t.equal(await limitAfter('/one/lim/20'), 20, 'raised with the next announcement')
  t.equal(await limitAfter('/one/lim/100'), 40, 'never above the configured 40')
  t.equal(await limitAfter('/one/search/lim/3'), 40, 'another budget of the upstream (search) is not the route\'s')
  t.equal(await limitAfter('/one/lim/8'), 8)
  t.equal(s.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('announces a limit of')).length, 1, 'the lower limit is warned about once')
  t.equal(s.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('back to the configured 40')).length, 1, 'the way back is logged')
  t.equal(await limitAfter('/keyed/lim/2', { authorization: 'token A' }), 40, 'a route keyed per credential keeps its limit: one key\'s answer is not every key\'s')
})

t.test('limit: auto starts conservative and adopts the announced limit and window', async (t) => {
  const emulator = await startEmulator({ profile: 'generic', limit: 10, windowMs: 1000, announce: true, rateLimitHeaders: 'draft-8' })
  const s = await startSluice([{ name: 'auto', upstream: emulator.url, limit: 'auto', maxWait: '20s' }])
  t.teardown(async () => { await s.close(); await emulator.close() })
  const policy = s.limiters.get('auto')!.policy
  t.same({ limit: policy.limit, windowMs: policy.windowMs }, { limit: 60, windowMs: 60_000 }, 'auto starts at 60/min')
  t.equal((await call(`${s.url}/x`)).status, 200)
  t.same({ limit: policy.limit, windowMs: policy.windowMs }, { limit: 10, windowMs: 1000 }, 'and adopts the announced 10 per 1 s')
  const statuses = await Promise.all(Array.from({ length: 20 }, (_, i) => call(`${s.url}/x/${i}`).then((a) => a.status)))
  t.same(statuses, Array(20).fill(200))
  t.equal(emulator.stats().limited, 0, 'without provoking a 429')
})
