// Redis goes away under load and comes back: every request gets an answer within its bound, the
// upstream stays within the budget (each instance shapes its share locally meanwhile), and shaping
// returns to Redis as soon as it answers again.
import t from 'tap'
import { maxInWindow } from '../src/emulator'
import { request } from 'undici'
import Redis from 'ioredis'
import { startRedis } from './helpers/redis'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess } from './helpers/upstream-process'
import { startUpstream } from './helpers/upstream'

const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function readyModes (s: TestSluice): Promise<string> {
  const res = await request(`${s.url}/_sluice/ready`)
  const body = await res.body.json() as { routes?: Record<string, string>, error?: { details: { routes: Record<string, string> } } }
  return (body.routes ?? body.error?.details.routes ?? {}).outage ?? 'unknown'
}

t.test('a Redis outage under steady load through two instances (onStoreError: local)', async (t) => {
  const redis = await startRedis()
  const up = await startUpstreamProcess()
  const keyPrefix = redis.prefix()
  // A wide margin: this test is about the hand-overs between Redis and the local share, not about
  // arrival jitter, which a machine shared with other test files adds.
  const route = { name: 'outage', upstream: up.url, limit: '20/s', algorithm: 'sliding-window', maxWait: '3s', onStoreError: 'local', margin: '250ms' }
  const a = await startSluice([route], { redis: redis.url, keyPrefix })
  const b = await startSluice([route], { redis: redis.url, keyPrefix })
  t.teardown(async () => { await a.close(); await b.close(); await up.close(); await redis.close() })
  // Warm each instance's connection to the upstream (cold starts are the multi-instance test's
  // subject), and let both heartbeat once: each then knows the team has 2 members.
  for (const s of [a, b]) await (await request(`${s.url}/warm`)).body.text()
  await sleep(1500)
  const loadStart = performance.timeOrigin + performance.now()
  t.equal(a.store.instanceCount(), 2, 'instance a knows the team size')
  t.equal(await readyModes(a), 'redis')

  const outcomes: Array<{ status: number, code?: string, ms: number }> = []
  let stop = false
  const began = Date.now()
  // Steady load above the limit: 6 concurrent loops, ~36 requests/s offered against 20/s.
  const loops = Array.from({ length: 6 }, async (_, k) => {
    // eslint-disable-next-line no-unmodified-loop-condition -- changed by another task (a closure), which the rule cannot see
    for (let i = 0; !stop; i++) {
      const start = Date.now()
      const target = (k + i) % 2 === 0 ? a : b
      try {
        const res = await request(`${target.url}/load/${k}/${i}`, { headersTimeout: 10_000, bodyTimeout: 10_000 })
        const body = await res.body.json() as { error?: { code: string } }
        outcomes.push({ status: res.statusCode, code: body.error?.code, ms: Date.now() - start })
      } catch (err) {
        outcomes.push({ status: 0, code: (err as Error).message, ms: Date.now() - start })
      }
      await sleep(150)
    }
  })

  await sleep(2500)
  await redis.stop()
  const killedAt = Date.now()
  await sleep(1000)
  const modesDuring = [await readyModes(a), await readyModes(b)]
  await sleep(2000)
  await redis.start()
  const restartedAt = Date.now()
  let backAfterMs = -1
  while (Date.now() - restartedAt < 5000) {
    const modes = [await readyModes(a), await readyModes(b)]
    if (modes.every((m) => m === 'redis')) {
      backAfterMs = Date.now() - restartedAt
      break
    }
    await sleep(50)
  }
  await sleep(2000)
  stop = true
  await Promise.all(loops)

  t.same(modesDuring, ['local', 'local'], 'during the outage both instances shape locally')
  t.ok(backAfterMs >= 0 && backAfterMs <= 2000, `shaping returned to Redis ${backAfterMs} ms after Redis came back`)
  t.ok(outcomes.length > 100, `${outcomes.length} requests were answered`)
  t.equal(outcomes.filter((o) => o.status === 0).length, 0, 'no request went unanswered')
  const slowest = Math.max(...outcomes.map((o) => o.ms))
  t.ok(slowest <= 3000 + 1000, `none waited past its 3 s bound by more than 1 s (slowest ${slowest} ms)`)
  const bad = outcomes.filter((o) => o.status !== 200 && o.code !== 'RATE_LIMITED')
  t.same(bad, [], 'every answer is a proxied success or a RATE_LIMITED envelope')
  const hits = (await up.hits()).filter((h) => h.t >= loadStart)
  const peak = maxInWindow(hits.map((h) => h.t), 1000)
  if (peak > 20) {
    const sorted = [...hits].sort((x, y) => x.t - y.t)
    t.comment(sorted.map((h) => { const [k, i] = h.url.split('/').slice(2).map(Number); return `${(h.t - restartedAt).toFixed(0)}${(k + i) % 2 === 0 ? 'a' : 'b'}` }).join(' '))
    t.comment(`killed at ${killedAt - restartedAt}; a back at ${a.logs.filter((l) => l.storeMode === 'redis').map((l) => Number(l.time) - restartedAt).join(',')}; b at ${b.logs.filter((l) => l.storeMode === 'redis').map((l) => Number(l.time) - restartedAt).join(',')}; a local at ${a.logs.filter((l) => l.storeMode === 'local').map((l) => Number(l.time) - restartedAt).join(',')}; b local at ${b.logs.filter((l) => l.storeMode === 'local').map((l) => Number(l.time) - restartedAt).join(',')}`)
  }
  t.ok(peak <= 20, `the upstream saw at most ${peak} requests in any 1 s window (limit 20) across the outage`)
  const warns = [...a.logs, ...b.logs].filter((l) => l.storeMode !== undefined)
  t.equal(warns.filter((l) => l.storeMode === 'local').length, 2, 'each instance logs the switch to local once, not per request')
  t.equal(warns.filter((l) => l.storeMode === 'redis').length, 2, 'and the switch back once')
  t.comment(`outage ${restartedAt - killedAt} ms; ${outcomes.filter((o) => o.status === 200).length} ok, ${outcomes.filter((o) => o.code === 'RATE_LIMITED').length} RATE_LIMITED; peak ${peak}/s; back in ${backAfterMs} ms; ${Date.now() - began} ms in all`)
})

t.test('onStoreError: closed answers 503 STORE_UNAVAILABLE and open forwards unshaped', async (t) => {
  const redis = await startRedis()
  const up = await startUpstream()
  const s = await startSluice([
    { name: 'closed', prefix: '/closed', upstream: up.url, limit: '1/s', onStoreError: 'closed' },
    { name: 'open', prefix: '/open', upstream: up.url, limit: '1/s', onStoreError: 'open', maxWait: '0s' }
  ], { redis: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => { await s.close(); await up.close(); await redis.close() })
  t.equal((await request(`${s.url}/closed/x`)).statusCode, 200)
  await redis.stop()
  await sleep(100)
  // Before any request meets the outage, /_sluice/ready already says where each route's next one shapes.
  const ready = await request(`${s.url}/_sluice/ready`)
  t.equal(ready.statusCode, 503)
  t.same((await ready.body.json() as { error: { details: { routes: unknown } } }).error.details.routes, { closed: 'closed', open: 'open' }, 'ready lists each route\'s onStoreError mode')
  const closed = await request(`${s.url}/closed/x`)
  const body = await closed.body.json() as { error: { code: string, details: Record<string, unknown> } }
  t.equal(closed.statusCode, 503)
  t.equal(body.error.code, 'STORE_UNAVAILABLE')
  t.equal(closed.headers['retry-after'], '1')
  const open = await Promise.all([1, 2, 3].map(async () => (await request(`${s.url}/open/y`)).statusCode))
  t.same(open, [200, 200, 200], 'open: forwarded without shaping (limit 1/s, wait 0)')
  t.equal(up.hits.filter((h) => h.url === '/y').length, 3)
})

t.test('scripts come back after SCRIPT FLUSH; a password-protected Redis works', async (t) => {
  const redis = await startRedis(['--requirepass', 's3cret-pw'])
  const up = await startUpstream()
  const url = redis.url.replace('redis://', 'redis://:s3cret-pw@')
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }], { redis: url, keyPrefix: redis.prefix() })
  t.teardown(async () => { await s.close(); await up.close(); await redis.close() })
  t.equal((await request(`${s.url}/a`)).statusCode, 200)
  const admin = new Redis(url)
  await admin.script('FLUSH')
  const after = await Promise.all([1, 2, 3].map(async () => (await request(`${s.url}/b`)).statusCode))
  t.same(after, [200, 200, 200], 'NOSCRIPT never reaches a client')
  admin.disconnect()
  t.notMatch(JSON.stringify(s.logs), /s3cret-pw/, 'the Redis password never reaches the log')
})
