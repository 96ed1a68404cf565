// A Redis far away (another region, a laptop on a VPN): its round trip is measured from the
// reservations themselves (and TIME on connection), so admission is not slowed to one start per
// round trip per client, and a slow answer is not taken for a dead Redis.
import t, { type Test } from 'tap'
import { parseRoute } from '../src/config/route'
import { Cancel } from '../src/limiter/cancel'
import { FairScheduler } from '../src/limiter/fair-scheduler'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { RedisStore } from '../src/store/redis-store'
import { startDelayRelay } from './helpers/delay-relay'
import { startRedis, type TestRedis } from './helpers/redis'

/** A store reaching the file's Redis through a relay that holds every chunk `oneWayMs` each way. */
async function distantStore (t: Test, redis: TestRedis, oneWayMs: number): Promise<RedisStore> {
  const relay = await startDelayRelay({ targetPort: redis.port, oneWayMs })
  const store = new RedisStore({ url: `redis://127.0.0.1:${relay.port}`, keyPrefix: redis.prefix() })
  t.teardown(async () => {
    await store.close()
    await relay.close()
  })
  await store.connect()
  // The TIME samples taken on connection: three round trips.
  for (let i = 0; i < 100 && store.clockOffset() === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  return store
}

function route (name: string): ReturnType<typeof parseRoute> {
  return parseRoute({ name, upstream: 'http://127.0.0.1:9', limit: '20/s', algorithm: 'sliding-window', maxWait: '10s' }, 'route')
}

t.test('a distant Redis', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())

  t.test('a Redis 600 ms away (round trip) answers reservations: it is not taken for a dead one', async (t) => {
    // The admission timeout is 500 ms on loopback; a Redis known to be far away gets three round trips.
    const store = await distantStore(t, redis, 300)
    t.ok((store.clockOffset()?.rttMs ?? 0) >= 600, `the round trip was measured on connection (${store.clockOffset()?.rttMs.toFixed(0)} ms)`)
    const r = await store.reserve('far', { algorithm: 'sliding-window', limit: 5, windowMs: 1000, burst: 1, marginMs: 50 }, 1, 1000)
    t.equal(r.admitted, true, 'the reservation was answered, not timed out')
    t.ok((store.reserveRoundTrips()?.medianMs ?? 0) >= 600, `and its round trip is known (${store.reserveRoundTrips()?.medianMs.toFixed(0)} ms)`)
  })

  t.test('the fair look-ahead covers the round trip: a client\'s burst is not paced at one start per round trip', async (t) => {
    const store = await distantStore(t, redis, 60)
    const limiter = new RouteLimiter(route('region'), store)
    const scheduler = new FairScheduler(limiter.route, limiter, new Map(), store)
    t.teardown(() => scheduler.close())
    // 20/s with a 50 ms margin: one slot is 52.5 ms; 40 ms and a 120 ms round trip take 3 or 4 of them.
    t.ok(scheduler.lookaheadUnits >= 3, `look-ahead ${scheduler.lookaheadUnits} units for a ${store.reserveRoundTrips()?.medianMs.toFixed(0)} ms round trip`)
    // The budget has room for 20 at once: one client's 20 requests all start within a few round trips
    // (one start per 120 ms round trip would take 2.4 s).
    const began = performance.now()
    const starts = await Promise.all(Array.from({ length: 20 }, async () => {
      await scheduler.admit({ bucket: 'region', client: 'c', priority: 'normal', cost: 1, maxWaitMs: 10_000, signal: new Cancel().signal })
      return performance.now() - began
    }))
    const last = Math.max(...starts)
    t.ok(last < 1500, `the 20th request started ${last.toFixed(0)} ms after they came (round trips of 120 ms)`)
  })

  t.test('on loopback the look-ahead is what it was: one unit at 20/s', async (t) => {
    const relayless = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
    t.teardown(async () => { await relayless.close() })
    await relayless.connect()
    const limiter = new RouteLimiter(route('near'), relayless)
    await limiter.admit('near', 1000, new Cancel().signal)
    const scheduler = new FairScheduler(limiter.route, limiter, new Map(), relayless)
    t.teardown(() => scheduler.close())
    t.equal(scheduler.lookaheadUnits, 1, `one unit (round trip ${relayless.reserveRoundTrips()?.medianMs.toFixed(2)} ms)`)
  })
})
