// The emulated upstream against real HTTP on loopback: limits, formats, maintenance, flakiness, and the
// log that other tests judge Sluice by. Windows are small (hundreds of ms) and assertions tolerate timing.
import t from 'tap'
import { Agent, request } from 'node:http'
import { densestWindow, maxInWindow, startEmulator, type Emulator, type EmulatorOptions } from '../src/emulator'

interface Answer { status: number, headers: Record<string, string>, text: string, json: any }

async function get (url: string, init?: RequestInit): Promise<Answer> {
  const res = await fetch(url, init)
  const text = await res.text()
  let json: unknown
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.status, headers: Object.fromEntries(res.headers), text, json }
}

async function emulator (t: tap.Test, options: EmulatorOptions): Promise<Emulator> {
  const e = await startEmulator(options)
  t.teardown(() => e.close())
  return e
}

async function burst (e: Emulator, n: number, path = '/index.php?/api/v2/add_result/1'): Promise<Answer[]> {
  return Promise.all(Array.from({ length: n }, () => get(e.url + path, { method: 'POST', body: '{"status_id":1}', headers: { 'content-type': 'application/json' } })))
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

t.test('testrail: a burst over the limit gets exactly `limit` accepted, the rest 429 with integer Retry-After', async (t) => {
  const e = await emulator(t, { profile: 'testrail', limit: 5, windowMs: 2000 })
  const answers = await burst(e, 9)
  const ok = answers.filter((a) => a.status === 200)
  const limited = answers.filter((a) => a.status === 429)
  t.equal(ok.length, 5)
  t.equal(limited.length, 4)
  for (const a of limited) {
    t.match(a.headers['retry-after'], /^[12]$/, 'whole seconds, rounded up, at least 1')
    t.match(a.json.error, /^API Rate Limit Exceeded - 5 per minute maximum allowed\. Retry after [12] seconds\.$/)
    t.equal(a.headers['content-type'], 'application/json; charset=utf-8')
  }
  t.same(ok.map((a) => a.json.ok), [true, true, true, true, true])
  t.equal(ok[0]!.json.bodyBytes, 15, 'POST body read and measured')
  t.equal(ok[0]!.json.method, 'POST')
  t.equal(ok[0]!.json.path, '/index.php?/api/v2/add_result/1')
  t.equal(e.maxInWindow(), 5)
  t.match(e.stats(), { total: 9, ok: 5, limited: 4, maintenance: 0, reset: 0 })
  t.equal(e.pushbacks.length, 4)
  t.equal(e.okTimes().length, 5)
})

t.test('zulip: float retry-after in header and body, RATE_LIMIT_HIT, x-ratelimit-* announced', async (t) => {
  const e = await emulator(t, { profile: 'zulip', limit: 3, windowMs: 1000, announce: true })
  const first = await get(e.url + '/api/v1/messages')
  t.equal(first.status, 200)
  t.equal(first.headers['x-ratelimit-limit'], '3')
  t.equal(first.headers['x-ratelimit-remaining'], '2')
  const reset = Number(first.headers['x-ratelimit-reset'])
  t.ok(reset >= Date.now() / 1000 && reset <= Date.now() / 1000 + 2, 'reset in epoch seconds')
  await burst(e, 2)
  const a = await get(e.url + '/api/v1/messages')
  t.equal(a.status, 429)
  t.match(a.json, { result: 'error', msg: 'API usage exceeded rate limit', code: 'RATE_LIMIT_HIT' })
  t.type(a.json['retry-after'], 'number')
  t.ok(a.json['retry-after'] > 0 && a.json['retry-after'] <= 1, 'seconds, not ms')
  t.equal(Number(a.headers['retry-after']), a.json['retry-after'], 'header and body agree')
  t.equal(a.headers['x-ratelimit-remaining'], '0')
})

t.test('testmo: 429 "Too Many Attempts." without Retry-After; the penalty is what it asked for', async (t) => {
  const e = await emulator(t, { profile: 'testmo', limit: 2, windowMs: 1000, testmoPenaltyMs: 250 })
  const answers = await burst(e, 3, '/api/v1/automation/runs/1/append')
  const a = answers.find((x) => x.status === 429)!
  t.ok(a)
  t.same(a.json, { message: 'Too Many Attempts.' })
  t.notOk('retry-after' in a.headers)
  const p = e.pushbacks[0]!
  t.equal(p.retryAt - p.sentAt, 250)
})

t.test('github: 403 with x-ratelimit-remaining 0 and an epoch reset; announced headers on success', async (t) => {
  const e = await emulator(t, { profile: 'github', limit: 2, windowMs: 1000, announce: true })
  const ok = await get(e.url + '/repos/o/r/issues')
  t.equal(ok.status, 200)
  t.match(ok.headers, { 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '1', 'x-ratelimit-used': '1', 'x-ratelimit-resource': 'core' })
  await get(e.url + '/repos/o/r/issues')
  const a = await get(e.url + '/repos/o/r/issues')
  t.equal(a.status, 403)
  t.same(a.json, {
    message: 'API rate limit exceeded for user ID 1.',
    documentation_url: 'https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting'
  })
  t.match(a.headers, { 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '0', 'x-ratelimit-used': '2', 'x-ratelimit-resource': 'core' })
  const reset = Number(a.headers['x-ratelimit-reset'])
  t.ok(Number.isInteger(reset) && reset >= Math.floor(Date.now() / 1000) && reset <= Date.now() / 1000 + 2, 'epoch seconds')
  t.notOk('retry-after' in a.headers)
  t.equal(e.pushbacks[0]!.retryAt, reset * 1000, 'asked to wait until the reset')
})

t.test('generic: 429 with Retry-After and JSON; IETF RateLimit headers announce a lower limit', async (t) => {
  const e = await emulator(t, { profile: 'generic', limit: 4, windowMs: 2000, announce: true, announceLimit: 2 })
  const first = await get(e.url + '/v1/things')
  t.equal(first.headers['ratelimit-policy'], '2;w=2')
  t.match(first.headers.ratelimit, /^limit=2, remaining=1, reset=[12]$/)
  const answers = await burst(e, 4)
  t.equal(answers.filter((a) => a.status === 200).length, 3, 'enforces its real limit, not the announced one')
  const a = answers.find((x) => x.status === 429)!
  t.match(a.headers['retry-after'], /^[12]$/)
  t.match(a.json, { error: 'rate_limited', retry_after: Number(a.headers['retry-after']) })

  const e8 = await emulator(t, { profile: 'generic', limit: 3, windowMs: 500, announce: true, rateLimitHeaders: 'draft-8' })
  const b = await get(e8.url + '/v1/things')
  t.equal(b.headers['ratelimit-policy'], '"default";q=3;w=1')
  t.match(b.headers.ratelimit, /^"default";r=2;t=1$/)
})

t.test('announce is off by default and testrail never announces', async (t) => {
  const e = await emulator(t, { profile: 'github', limit: 2, windowMs: 1000 })
  const a = await get(e.url + '/x')
  t.notOk('x-ratelimit-limit' in a.headers)
  const tr = await emulator(t, { profile: 'testrail', limit: 2, windowMs: 1000, announce: true })
  const b = await get(tr.url + '/x')
  t.notOk(Object.keys(b.headers).some((h) => h.includes('ratelimit')))
})

t.test('the sliding window frees up after windowMs and never holds more than limit', async (t) => {
  const e = await emulator(t, { profile: 'testrail', limit: 10, windowMs: 500 })
  const first = await burst(e, 12)
  t.equal(first.filter((a) => a.status === 200).length, 10)
  await sleep(550)
  const second = await burst(e, 12)
  t.equal(second.filter((a) => a.status === 200).length, 10, 'a full window later, a full budget again')
  t.equal(e.maxInWindow(500), 10)
  t.equal(e.maxInWindow(5000), 20)
  t.equal(e.stats().limited, 4)
})

t.test('maintenance answers 409 in TestRail format, then recovers', async (t) => {
  const e = await emulator(t, { profile: 'zulip', limit: 10, windowMs: 500 })
  e.maintenance(300)
  const a = await get(e.url + '/x')
  t.equal(a.status, 409)
  t.match(a.json.error, /^TestRail is currently undergoing maintenance/)
  t.equal(a.headers['retry-after'], '1')
  await sleep(350)
  const b = await get(e.url + '/x')
  t.equal(b.status, 200)
  t.match(e.stats(), { maintenance: 1, ok: 1 })
  t.equal(e.pushbacks.length, 1)

  e.maintenance(200, { retryAfter: false })
  const c = await get(e.url + '/x')
  t.equal(c.status, 409)
  t.notOk('retry-after' in c.headers)
  t.equal(e.pushbacks.length, 1, 'a 409 naming no delay asks for none')
  e.maintenance(0)
  t.equal((await get(e.url + '/x')).status, 200, 'maintenance(0) ends it')
})

async function flakyRun (t: tap.Test, n: number): Promise<string[]> {
  const e = await emulator(t, { profile: 'testrail', limit: 1000, windowMs: 1000, flaky: { p502: 0.25, p503: 0.1, pReset: 0.25, seed: 42 } })
  const seen: string[] = []
  for (let i = 0; i < n; i++) {
    try {
      const a = await get(e.url + '/x')
      if (a.status === 502) t.match(a.text, /<title>502 Bad Gateway<\/title>/)
      if (a.status === 503) t.notOk('retry-after' in a.headers)
      seen.push(String(a.status))
    } catch (err) {
      seen.push('reset')
      t.match((err as Error & { cause?: { code?: string } }).cause?.code ?? '', /ECONNRESET|UND_ERR_SOCKET/)
    }
  }
  t.same(e.arrivals.map((a) => a.outcome === 'reset' ? 'reset' : String(a.status)), seen, 'the log says which')
  return seen
}

t.test('flaky with a seed produces 502s, 503s and resets, the same ones every run', async (t) => {
  const one = await flakyRun(t, 40)
  t.ok(one.includes('502'))
  t.ok(one.includes('503'))
  t.ok(one.includes('reset'))
  t.ok(one.includes('200'))
  const two = await flakyRun(t, 40)
  t.same(two, one, 'deterministic per seed')
})

t.test('earlyAfterPushback counts arrivals before the asked-for delay, judged by the latest pushback', async (t) => {
  const e = await emulator(t, { profile: 'zulip', limit: 2, windowMs: 400 })
  await burst(e, 2)
  const pushed = await get(e.url + '/x')
  t.equal(pushed.status, 429)
  t.equal(e.earlyAfterPushback(), 0, 'the pushback itself is not early')
  const tooSoon = await get(e.url + '/x')
  t.equal(tooSoon.status, 429)
  t.equal(e.earlyAfterPushback(), 1)
  t.equal(e.earlyAfterPushback({ graceMs: 10_000 }), 0, 'grace forgives requests already in flight')
  // Obey the latest pushback (the early request was pushed back too).
  const retryAfterS = Number(tooSoon.headers['retry-after'])
  await sleep(retryAfterS * 1000 + 30)
  const fine = await get(e.url + '/x')
  t.equal(fine.status, 200)
  t.equal(e.earlyAfterPushback(), 1, 'an arrival after the delay is not early')

  e.reset()
  t.equal(e.arrivals.length, 0)
  t.equal(e.pushbacks.length, 0)
  t.equal(e.earlyAfterPushback(), 0)
  t.equal((await burst(e, 2)).filter((a) => a.status === 200).length, 2, 'reset clears the window')
  t.equal(e.arrivals[1]!.n, 1, 'arrival indexes restart')
})

t.test('arrivals record method, path, status, outcome and the client headers', async (t) => {
  const e = await emulator(t, { profile: 'testrail', limit: 1, windowMs: 1000 })
  await get(e.url + '/a?b=1', { method: 'PUT', body: 'xyz', headers: { 'x-sluice-client': 'ci-7', 'x-request-id': 'r1', authorization: 'secret' } })
  await get(e.url + '/c')
  const [a, b] = e.arrivals
  t.match(a, { n: 0, method: 'PUT', path: '/a?b=1', status: 200, outcome: 'ok', bodyBytes: 3 })
  t.same(a!.headers, { 'x-sluice-client': 'ci-7', 'x-request-id': 'r1' })
  t.match(b, { n: 1, method: 'GET', path: '/c', status: 429, outcome: 'limited' })
  const now = performance.timeOrigin + performance.now()
  t.ok(a!.t <= b!.t && b!.t <= now && now - a!.t < 5000, 't is epoch ms')
})

t.test('latencyMs delays answers; onArrival sees each arrival', async (t) => {
  const seen: string[] = []
  const e = await emulator(t, { limit: 5, windowMs: 1000, latencyMs: 60, onArrival: (a) => seen.push(a.outcome) })
  const start = Date.now()
  t.equal((await get(e.url + '/x')).status, 200)
  t.ok(Date.now() - start >= 55)
  t.same(seen, ['ok'])
})

t.test('close() is prompt with keep-alive sockets open and frees the port', async (t) => {
  const e = await startEmulator({ limit: 5, windowMs: 1000 })
  await new Promise<void>((resolve, reject) => {
    const req = request(e.url + '/x', { agent: new Agent({ keepAlive: true }) }, (res) => { res.resume(); res.on('end', resolve) })
    req.on('error', reject)
    req.end()
  })
  const start = Date.now()
  await e.close()
  t.ok(Date.now() - start < 1000, `closed in ${Date.now() - start} ms`)
  await t.rejects(get(e.url + '/x'))
})

t.test('invalid options fail with the option named', async (t) => {
  await t.rejects(startEmulator({ limit: 0 }), /emulator option "limit": expected a positive integer, received 0 \(number\)/)
  await t.rejects(startEmulator({ profile: 'jira' as never }), /option "profile"/)
  await t.rejects(startEmulator({ host: '0.0.0.0' }), /option "host": expected a loopback address/)
  await t.rejects(startEmulator({ flaky: { p502: 0.7, pReset: 0.7 } }), /option "flaky"/)
  await t.rejects(startEmulator({ windowMs: 0 }), /option "windowMs"/)
})

t.test('maxInWindow helper on hand-made lists (half-open windows, any order)', async (t) => {
  t.equal(maxInWindow([], 10), 0)
  t.equal(maxInWindow([5], 10), 1)
  t.equal(maxInWindow([0, 1, 2], 10), 3)
  t.equal(maxInWindow([0, 10, 20], 10), 1, 'exactly windowMs apart never share a window')
  t.equal(maxInWindow([0, 9.999, 20], 10), 2)
  t.equal(maxInWindow([0, 5, 9, 10, 14, 19, 30], 10), 4)
  t.equal(maxInWindow([14, 0, 30, 9, 19, 5, 10], 10), 4, 'unsorted input')
  t.equal(maxInWindow([3, 3, 3, 3], 1), 4, 'simultaneous arrivals')
  t.throws(() => maxInWindow([1], 0), /windowMs/)
  t.same(densestWindow([14, 0, 30, 9, 19, 5, 10], 10), { from: 5, count: 4 }, 'densestWindow: the first window holding the most, and where it begins')
  t.same(densestWindow([], 10), { from: undefined, count: 0 })
})
