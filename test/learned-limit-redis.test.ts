// Issue 20 with a shared Redis: instances learn the upstream's real limit together, a restarted
// instance keeps it, and it is probed back up once the upstream allows more. Windows of 1 s or less.
import t from 'tap'
import { startEmulator } from '../src/emulator'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { post, spread, startLimitedUpstream } from './helpers/limited-upstream'

async function until (what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

t.test('two instances learn together; a restarted one starts from the learned limit', async (t) => {
  const redis = await startRedis()
  const emulator = await startEmulator({ profile: 'zulip', limit: 5, windowMs: 1000 })
  const keyPrefix = redis.prefix()
  const route = { name: 'zulip', upstream: emulator.url, limit: '10/s', profile: 'zulip', maxWait: '30s' }
  const a = await startSluice([route], { redis: redis.url, keyPrefix })
  const b = await startSluice([route], { redis: redis.url, keyPrefix })
  t.teardown(async () => { await a.close(); await b.close(); await emulator.close(); await redis.close() })

  const statuses = await spread([a, b], '/api/v1/messages', 24)
  t.same(statuses, Array(24).fill(200), 'every client request succeeds')
  const limited = emulator.stats().limited
  t.ok(limited <= 3, `the upstream answered ${limited} 429s for 24 requests through 2 instances`)
  await until('both instances to hold the learned limit', 2000, () => a.limiters.get('zulip')!.sources.view().learned !== undefined && b.limiters.get('zulip')!.sources.view().learned !== undefined)
  const learnedA = a.limiters.get('zulip')!.sources.view().learned!
  t.ok(learnedA >= 4 && learnedA <= 5, `learned ${learnedA} of the upstream's 5`)
  t.equal(b.limiters.get('zulip')!.policy.limit, learnedA, 'the other instance shapes to the same learned limit')

  await a.close()
  const c = await startSluice([route], { redis: redis.url, keyPrefix })
  t.teardown(async () => { await c.close() })
  await until('the restarted instance to read the learned limit', 2000, () => c.limiters.get('zulip')!.policy.limit === learnedA)
  t.pass(`a restarted instance starts from the learned ${learnedA}, not the configured 10`)
  const before = emulator.stats().limited
  t.same(await spread([c], '/api/v1/messages', 12), Array(12).fill(200))
  // Five quiet windows after the pushback a probe one above may meet one 429: that is its price.
  t.ok(emulator.stats().limited - before <= 1, `and sends at most one request (a probe) into a 429: ${emulator.stats().limited - before}`)
})

t.test('the learned limit is probed back up once the upstream allows more', async (t) => {
  const redis = await startRedis()
  const up = await startLimitedUpstream(3, 500)
  // Probes come after 10 quiet windows (5 s here): the least quiet time of a minute is shortened for the test.
  const s = await startSluice([{ name: 'z', upstream: up.url, limit: '6/0.5s', profile: 'zulip', maxWait: '30s', minPause: '500ms' }], { redis: redis.url, keyPrefix: redis.prefix() }, { probeMinQuietMs: 0 })
  t.teardown(async () => { await s.close(); await up.close(); await redis.close() })
  await spread([s], '/x', 12)
  const learned = s.limiters.get('z')!.sources.view().learned
  t.ok(learned !== undefined && learned <= 3, `learned ${learned} of the upstream's 3`)
  up.allowed = 6
  const limitedBefore = up.limited
  // Steady demand for a while: every quiet 5 s (10 windows) the learned limit goes one up.
  const until = Date.now() + 7000
  await Promise.all(Array.from({ length: 4 }, async () => { while (Date.now() < until) await post(`${s.url}/x`) }))
  const now = s.limiters.get('z')!.sources.view()
  t.ok(now.learned === undefined || now.learned >= (learned ?? 0) + 1, `probed up to ${now.learned ?? 'the configured 6'} (from ${learned})`)
  t.equal(up.limited - limitedBefore, 0, 'without a 429 while the upstream allows it')
})
