// When Redis answers again after an outage, an instance that shaped its share locally meanwhile
// records the starts it made without Redis there, at their times, so the other instances (which may
// have been back on Redis already) leave room for them in their next reservations.
import t, { type Test } from 'tap'
import { parseRoute } from '../src/config/route'
import { Cancel } from '../src/limiter/cancel'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { RedisStore } from '../src/store/redis-store'
import { startRedis } from './helpers/redis'

/**
 * A connected store whose `available()` is false until `reachable.now` is set (as while ioredis
 * reconnects; Redis itself stays up for the test's other stores); closed in teardown.
 */
async function losingRedis (t: Test, url: string, keyPrefix: string): Promise<{ store: RedisStore, reachable: { now: boolean } }> {
  const store = new RedisStore({ url, keyPrefix })
  t.teardown(async () => { await store.close() })
  await store.connect()
  const available = store.available.bind(store)
  const reachable = { now: false }
  store.available = () => reachable.now && available()
  return { store, reachable }
}

t.test('starts made during an outage count in Redis once it is back', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const admin = redis.client()
  t.teardown(() => { admin.disconnect() })

  t.test('a start booked locally while another request switches back is recorded too', async (t) => {
    const keyPrefix = redis.prefix()
    const { store, reachable } = await losingRedis(t, redis.url, keyPrefix)
    const route = parseRoute({ name: 'race', upstream: 'http://127.0.0.1:9', limit: '6/s', algorithm: 'sliding-window', maxWait: '5s', onStoreError: 'local', margin: '100ms' }, 'route')
    const a = new RouteLimiter(route, store)
    // X finds Redis unreachable and books in the local share, whose answer comes a turn later...
    const x = a.admit('race', 5000, new Cancel().signal)
    // ...while Y, arriving once Redis answers again, switches back and records the outage's starts.
    reachable.now = true
    const y = a.admit('race', 5000, new Cancel().signal)
    await Promise.all([x, y])
    t.equal(a.storeMode, 'redis', 'a is back on Redis')
    t.equal(await admin.llen(`${keyPrefix}{race}:sw`), 2, 'Redis holds both starts: X\'s, made without it, and Y\'s')
  })

  t.test('a route with several limits: each limit\'s outage starts', async (t) => {
    const keyPrefix = redis.prefix()
    const { store, reachable } = await losingRedis(t, redis.url, keyPrefix)
    const route = parseRoute({ name: 'multi', upstream: 'http://127.0.0.1:9', limit: ['6/s', '20/10s'], algorithm: 'sliding-window', maxWait: '5s', onStoreError: 'local', margin: '100ms' }, 'route')
    const a = new RouteLimiter(route, store)
    for (let i = 0; i < 3; i++) await a.admit('multi', 0, new Cancel().signal)
    t.equal(a.storeMode, 'local', 'three starts made locally')
    reachable.now = true
    await a.admit('multi', 5000, new Cancel().signal)
    t.equal(a.storeMode, 'redis', 'back on Redis')
    const keys = (await admin.keys(`${keyPrefix}*:sw`)).sort()
    t.equal(keys.length, 2, `one list of starts per limit (${keys.join(', ')})`)
    for (const key of keys) t.equal(await admin.llen(key), 4, `${key}: the three outage starts and the new one`)
  })

  for (const algorithm of ['sliding-window', 'token-bucket'] as const) {
    t.test(algorithm, async (t) => {
      const keyPrefix = redis.prefix()
      const { store: storeA, reachable } = await losingRedis(t, redis.url, keyPrefix)
      const storeB = new RedisStore({ url: redis.url, keyPrefix })
      t.teardown(async () => { await storeB.close() })
      await storeB.connect()
      // 6 per second, all at once allowed (a token bucket's burst 6 books them one window apart).
      const route = parseRoute({ name: 'handover', upstream: 'http://127.0.0.1:9', limit: '6/s', algorithm, ...(algorithm === 'token-bucket' ? { burst: 6 } : {}), maxWait: '5s', onStoreError: 'local', margin: '100ms' }, 'route')
      const a = new RouteLimiter(route, storeA)

      // Instance a loses Redis (losingRedis; Redis itself stays up for instance b): a shapes its share locally.
      for (let i = 0; i < 3; i++) await a.admit('handover', 0, new Cancel().signal)
      t.equal(a.storeMode, 'local', 'a made three starts locally')
      const key = `${keyPrefix}{handover}:${algorithm === 'token-bucket' ? 'tb' : 'sw'}`
      t.equal(await admin.exists(key), 0, 'and Redis has not seen them')

      // Redis is back for a: its next request switches to Redis, which then hears of the three.
      reachable.now = true
      await a.admit('handover', 5000, new Cancel().signal)
      t.equal(a.storeMode, 'redis', 'a books in Redis again')
      if (algorithm === 'sliding-window') t.equal(await admin.llen(key), 4, 'Redis holds a\'s three outage starts and its new one')

      // Instance b only ever used Redis: the room it finds now is what a left of this window.
      let admitted = 0
      for (let i = 0; i < 6; i++) if ((await storeB.reserve('handover', a.policy, 1, 0)).admitted) admitted++
      t.equal(admitted, 2, `b may start ${admitted} now: 6 − 3 (a's during the outage) − 1 (a's since)`)
    })
  }
})
