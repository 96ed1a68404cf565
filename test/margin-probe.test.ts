// The adaptive margin end to end (http/margin-probe.ts): a real Sluice, a strict emulated upstream,
// the figures taken from undici's diagnostics channels.
import diagnostics from 'node:diagnostics_channel'
import t, { type Test } from 'tap'
import { startEmulator, maxInWindow } from '../src/emulator'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'

async function fire (url: string, n: number): Promise<number[]> {
  return await Promise.all(Array.from({ length: n }, async () => {
    const res = await fetch(url)
    await res.arrayBuffer()
    return res.status
  }))
}

/**
 * One request through Sluice whose way to the emulator is held 300 ms after its start was checked (the
 * event loop blocked as undici creates it, as a cold process admitting hundreds of arrivals can),
 * then ten more once it is answered; the upstream's arrival times, sorted.
 */
async function firstHeldUp (t: Test, emulator: { url: string, arrivals: ReadonlyArray<{ t: number }> }, sluiceUrl: string): Promise<number[]> {
  let hold = true
  // Sluice's request to the upstream only (this test's own fetch is made by undici too).
  const block = ({ request }: { request: { origin?: unknown } }): void => {
    if (!hold || new URL(String(request.origin)).origin !== new URL(emulator.url).origin) return
    hold = false
    const until = performance.now() + 300
    while (performance.now() < until) { /* the event loop is held */ }
  }
  diagnostics.subscribe('undici:request:create', block as (message: unknown) => void)
  t.teardown(() => { diagnostics.unsubscribe('undici:request:create', block as (message: unknown) => void) })
  t.same(await fire(`${sluiceUrl}/first`, 1), [200], 'the held-up request is answered')
  t.same([...new Set(await fire(`${sluiceUrl}/next`, 10))], [200], 'the ten after it are answered')
  return emulator.arrivals.map((a) => a.t).sort((a, b) => a - b)
}

t.test('a quiet path narrows the margin below the configured one; the limit holds; fixed stays', async (t) => {
  const emulator = await startEmulator({ profile: 'generic', limit: 20, windowMs: 1000 })
  t.teardown(() => emulator.close())
  const sluice = await startSluice([
    { name: 'adaptive', prefix: '/a', upstream: emulator.url, limit: '20/s', algorithm: 'sliding-window', margin: '200ms', maxWait: '30s', maxQueue: 1000 },
    { name: 'fixed', prefix: '/f', upstream: emulator.url, limit: '20/s', algorithm: 'sliding-window', margin: '200ms fixed', maxWait: '30s', maxQueue: 1000 }
  ])
  t.teardown(() => sluice.close())
  const statuses = await fire(`${sluice.url}/a/x`, 80)
  t.same([...new Set(statuses)], [200], 'all forwarded')
  const adaptive = sluice.limiters.get('adaptive')?.policy.marginMs ?? NaN
  t.ok(adaptive < 200 && adaptive >= 5, `the margin in force narrowed to ${adaptive.toFixed(1)} ms (cap 200)`)
  const times = emulator.arrivals.map((a) => a.t).sort((a, b) => a - b)
  t.ok(maxInWindow(times, 1000) <= 20, `at most 20 in any 1 s at the upstream (${maxInWindow(times, 1000)})`)
  t.equal(emulator.stats().limited, 0, 'no upstream 429')
  await fire(`${sluice.url}/f/x`, 30)
  t.equal(sluice.limiters.get('fixed')?.policy.marginMs, 200, 'margin: 200ms fixed is never adapted')
})

/** A 20/s token-bucket route (margin cap 300 ms) in front of an upstream counting `limit` per `windowMs`; the pushbacks' causes. */
async function pushbacks (t: Test, limit: number, windowMs: number, requests: number): Promise<{ causes: unknown[], marginMs: number }> {
  const emulator = await startEmulator({ profile: 'generic', limit, windowMs })
  t.teardown(() => emulator.close())
  const sluice = await startSluice([{ name: 'tb', upstream: emulator.url, limit: '20/s', algorithm: 'token-bucket', margin: '300ms', maxWait: '60s', maxQueue: 1000, minPause: '0ms', maxPause: '200ms' }])
  t.teardown(() => sluice.close())
  await fire(`${sluice.url}/x`, requests)
  return { causes: sluice.logs.filter((l) => l.cause !== undefined).map((l) => l.cause), marginMs: sluice.limiters.get('tb')?.policy.marginMs ?? NaN }
}

t.test('a 429 in a full window (late arrivals the probe cannot see) widens the margin', async (t) => {
  // The upstream counts 20 in any 1.15 s: as if requests reached it up to 150 ms later than the path shows.
  const { causes, marginMs: margin } = await pushbacks(t, 20, 1150, 120)
  t.ok(causes.includes('jitter'), `a pushback was told apart as jitter (${causes.join(', ')})`)
  t.notOk(causes.includes('lower-limit'), 'and none as a lower limit')
  t.ok(margin >= 100, `the margin widened towards the 150 ms (${margin.toFixed(1)} ms; the path alone asks for less)`)
})

t.test('a 429 well below the limit is a lower limit, not a margin matter', async (t) => {
  const { causes } = await pushbacks(t, 12, 1000, 60)
  t.ok(causes.length > 0, `the upstream pushed back (${causes.length})`)
  t.same([...new Set(causes)], ['lower-limit'], 'every pushback told apart as a lower limit')
})

t.test('a request held up after its check, past the margin\'s cap, pushes the next starts back: the limit holds', async (t) => {
  // 10 per 1 s at the upstream; a token bucket of 10/s with a margin of at most 50 ms: one start per
  // 105 ms. The first request is held 300 ms after its start was checked (the event loop blocked as
  // undici creates it, as a cold process admitting hundreds of arrivals can), so it reaches the
  // upstream 300 ms late. The ten after it would start an interval apart from its slot, 10 within 1 s
  // of it, unless its lateness pushes them back.
  const emulator = await startEmulator({ profile: 'generic', limit: 10, windowMs: 1000 })
  t.teardown(() => emulator.close())
  const sluice = await startSluice([{ name: 'tb', upstream: emulator.url, limit: '10/s', algorithm: 'token-bucket', margin: '50ms', maxWait: '30s', maxQueue: 100 }])
  t.teardown(() => sluice.close())
  const times = await firstHeldUp(t, emulator, sluice.url)
  t.equal(sluice.limiters.get('tb')?.stats.pushedBack, 1, 'one push back')
  t.ok(maxInWindow(times, 1000) <= 10, `at most 10 in any 1 s at the upstream (${maxInWindow(times, 1000)})`)
  t.ok(times[1] - times[0] >= 95, `the next start came an interval after the late one left (${(times[1] - times[0]).toFixed(1)} ms)`)
  t.equal(emulator.stats().limited, 0, 'no upstream 429')
})

for (const store of ['memory', 'redis'] as const) {
  t.test(`${store}: a sliding-window request held up after its check, past what its margin covers, is recorded again once answered: the limit holds`, async (t) => {
    // 10 per 1 s at the upstream and in a sliding window with a margin of at most 50 ms. The first
    // request passes its check on time and is then held 300 ms (the event loop blocked as undici
    // creates it), so it reaches the upstream 300 ms after its start. Ten more follow once it is
    // answered: nine fit the window counted from its recorded start, and the tenth is booked a window
    // and a margin after that start, which at the upstream is 11 within 1 s of the late one unless its
    // start is recorded again once it is answered.
    const emulator = await startEmulator({ profile: 'generic', limit: 10, windowMs: 1000 })
    t.teardown(() => emulator.close())
    const redis = store === 'redis' ? await startRedis() : undefined
    t.teardown(async () => await redis?.stop())
    const global = redis === undefined ? {} : { redis: redis.url, keyPrefix: redis.prefix() }
    const sluice = await startSluice([{ name: 'sw', upstream: emulator.url, limit: '10/s', algorithm: 'sliding-window', margin: '50ms', maxWait: '30s', maxQueue: 100 }], global)
    t.teardown(() => sluice.close())
    const times = await firstHeldUp(t, emulator, sluice.url)
    t.ok(maxInWindow(times, 1000) <= 10, `at most 10 in any 1 s at the upstream (${maxInWindow(times, 1000)})`)
    t.equal(emulator.stats().limited, 0, 'no upstream 429')
    t.ok(times[10] - times[0] >= 1000, `the eleventh came a window after the late one reached the upstream (${(times[10] - times[0]).toFixed(1)} ms)`)
    t.equal(sluice.limiters.get('sw')?.stats.lateMoved, 1, 'its start was recorded again once')
  })
}
