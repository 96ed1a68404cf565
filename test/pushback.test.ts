// Issue 4: three Sluice instances, one Redis, configured ABOVE what the emulated API really allows.
// Every client request must still succeed, and once the API has pushed back, no instance may send
// anything before the delay it asked for has passed (a small grace forgives requests in flight).
import t from 'tap'
import { request } from 'undici'
import { startEmulator, type EmulatorProfile } from '../src/emulator'
import { scrapeMetrics } from './helpers/prometheus'
import { startRedis } from './helpers/redis'
import { startSluice, type TestSluice } from './helpers/sluice'

// In flight when the pushback was sent: sent before the pause reached the shared store.
const GRACE_MS = 100
const REQUESTS = 100

const CASES: Array<{ profile: EmulatorProfile, route: Record<string, unknown>, emulator: Record<string, unknown>, note: string }> = [
  { profile: 'testrail', route: { profile: 'testrail' }, emulator: {}, note: '429 with integer Retry-After' },
  { profile: 'zulip', route: { profile: 'zulip' }, emulator: {}, note: '429 with float Retry-After and body retry-after' },
  // Testmo sends no Retry-After; the rule is 60 s, shortened here to 1.5 s on both sides.
  { profile: 'testmo', route: { profile: 'testmo', maxPause: '1600ms' }, emulator: { testmoPenaltyMs: 1500 }, note: '429 without Retry-After' },
  { profile: 'github', route: { profile: 'github' }, emulator: {}, note: '403 with x-ratelimit-remaining: 0 and an epoch reset' }
]

t.test('pushback pauses every instance and every request still succeeds', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  for (const c of CASES) {
    t.test(`${c.profile}: ${c.note}`, async (t) => {
      // The API allows 25 per second; Sluice is told 40 per second.
      const emulator = await startEmulator({ profile: c.profile, limit: 25, windowMs: 1000, ...c.emulator })
      const keyPrefix = redis.prefix()
      const route = { name: c.profile, upstream: emulator.url, limit: '40/s', maxWait: '30s', ...c.route }
      const instances: TestSluice[] = []
      for (let i = 0; i < 3; i++) instances.push(await startSluice([route], { redis: redis.url, keyPrefix }))
      t.teardown(async () => {
        for (const s of instances) await s.close()
        await emulator.close()
      })
      const began = Date.now()
      const statuses = await Promise.all(Array.from({ length: REQUESTS }, async (_, i) => {
        const method = i % 4 === 0 ? 'POST' : 'GET'
        const res = await request(`${instances[i % 3]!.url}/api/${i}`, { method, headers: { 'content-type': 'application/json' }, body: method === 'POST' ? JSON.stringify({ n: i }) : undefined })
        const text = await res.body.text()
        if (res.statusCode !== 200) t.comment(`${res.statusCode} ${text}`)
        return res.statusCode
      }))
      const elapsedMs = Date.now() - began
      const stats = emulator.stats()
      t.equal(statuses.filter((s) => s === 200).length, REQUESTS, `every one of ${REQUESTS} requests succeeded (${elapsedMs} ms)`)
      t.ok(emulator.pushbacks.length >= 1, `the API pushed back (${emulator.pushbacks.length} times): Sluice was set above its limit`)
      t.equal(stats.ok, REQUESTS, 'each request was accepted upstream exactly once')
      const early = emulator.earlyAfterPushback({ graceMs: GRACE_MS })
      t.comment(`arrivals before the asked-for time: ${emulator.earlyAfterPushback()} without grace, ${early} after the first ${GRACE_MS} ms`)
      t.equal(early, 0, `no instance sent a request before the delay the API asked for (grace ${GRACE_MS} ms; ${stats.limited} pushed back, ${stats.total} arrivals)`)
      const metrics = await Promise.all(instances.map(async (s) => await scrapeMetrics(s.url)))
      const retried = metrics.reduce((n, m) => n + m.value('sluice_retries_total', { route: c.profile, reason: 'pushback' }), 0)
      t.equal(retried, stats.limited, 'every pushed-back request was sent again, and only those')
      const paused = metrics.reduce((n, m) => n + m.value('sluice_upstream_pauses_total', { route: c.profile }), 0)
      t.ok(paused >= 1, `the bucket was paused (${paused} pauses set)`)
      const logged = instances.flatMap((s) => s.logs.filter((l) => l.msg === 'request' && typeof l.retries === 'number'))
      t.equal(logged.reduce((n, l) => n + (l.retries as number), 0), stats.limited, 'each retry shows in its request\'s log line')
    })
  }
})
