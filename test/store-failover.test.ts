// StoreFailover on its own, against a real Redis: which store takes a reservation in each mode, the
// log of each switch, the local share's size and its start a window after the last shared start,
// and the hand-over back (outage starts recorded in Redis, the transition window, give-backs).
import t from 'tap'
import { parseRoute } from '../src/config/route'
import { SluiceError } from '../src/errors'
import type { BucketPolicy } from '../src/store/bucket-store'
import { RedisStore } from '../src/store/redis-store'
import { StoreFailover } from '../src/limiter/store-failover'
import { startRedis } from './helpers/redis'

interface Logged { level: string, fields: Record<string, unknown>, message: string }

t.test('store failover', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const admin = redis.client()

  /** A failover on a fresh key prefix, whose store is reachable while `reachable.now` is true. */
  const setup = async (onStoreError: 'local' | 'open' | 'closed', instances = 1): Promise<{ failover: StoreFailover, store: RedisStore, policy: BucketPolicy, lastStart: Map<string, number>, logs: Logged[], reachable: { now: boolean }, keyPrefix: string }> => {
    const keyPrefix = redis.prefix()
    const store = new RedisStore({ url: redis.url, keyPrefix })
    t.teardown(async () => { await store.close() })
    await store.connect()
    const reachable = { now: true }
    const available = store.available.bind(store)
    store.available = () => reachable.now && available()
    store.instanceCount = () => instances
    const route = parseRoute({ name: 'fo', upstream: 'http://127.0.0.1:9', limit: '6/s', algorithm: 'sliding-window', maxWait: '5s', onStoreError, margin: '100ms' }, 'route')
    const policy: BucketPolicy = { algorithm: route.algorithm, limit: route.limit.count, windowMs: route.limit.windowMs, burst: route.burst, marginMs: route.marginMs }
    const lastStart = new Map<string, number>()
    const logs: Logged[] = []
    const failover = new StoreFailover(route, store, policy, lastStart, (level, fields, message) => logs.push({ level, fields, message }))
    return { failover, store, policy, lastStart, logs, reachable, keyPrefix }
  }

  t.test('local: out to the local share and back, each switch logged once', async (t) => {
    const { failover, logs, reachable, keyPrefix } = await setup('local', 2)
    t.equal(failover.storeMode, 'redis')
    const shared = await failover.book('b', 1, 0)
    t.ok(failover.fromSharedStore(shared), 'booked in Redis while it answers')

    reachable.now = false
    t.equal(failover.storeMode, 'local', 'Redis unreachable: the route is in its onStoreError mode before any request')
    t.notOk(failover.answers())
    const { policy: share } = failover.localShare()
    t.same([share.limit, share.burst], [3, 1], 'the local share is half the budget of two instances')
    const away = await failover.book('b', 1, 0)
    t.ok(away.admitted, 'booked in the local share')
    t.notOk(failover.fromSharedStore(away), 'not by Redis')
    failover.noteStart('b', away, 0, 1)
    await failover.book('b', 1, 0)
    t.same(logs.map((l) => [l.level, l.fields.storeMode, l.fields.from]), [['warn', 'local', 'redis']], 'the switch to local is logged once')
    t.match(logs[0].message, /with 1\/2 of the budget/)

    reachable.now = true
    t.notOk(failover.handingOver(), 'no hand-over before the switch back')
    failover.resumeIfBack()
    t.equal(failover.storeMode, 'redis', 'back on Redis before booking')
    t.same(logs.map((l) => [l.level, l.fields.storeMode, l.fields.from]), [['warn', 'local', 'redis'], ['info', 'redis', 'local']], 'and the switch back logged once')
    t.ok(failover.handingOver(), 'for a window, Redis bookings also take the local share')
    const key = `${keyPrefix}{b}:sw`
    for (let i = 0; i < 50 && await admin.llen(key) < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10))
    t.equal(await admin.llen(key), 2, 'Redis holds the start made before the outage and the one noted during it')
  })

  t.test('the local share starts a window after the last shared start', async (t) => {
    const { failover, policy, lastStart, reachable } = await setup('local')
    lastStart.set('b', Date.now())
    reachable.now = false
    const first = await failover.book('b', 1, 5000)
    t.ok(first.waitMs >= policy.windowMs + policy.marginMs - 50, `the first local start waits out the window (${first.waitMs.toFixed(0)} ms)`)
    const other = await failover.book('other', 1, 0)
    t.equal(other.waitMs, 0, 'a bucket without a recent start begins at once')
  })

  t.test('a local reservation is given back to the local store, a shared one to Redis', async (t) => {
    const { failover, reachable, keyPrefix } = await setup('local')
    const older = await failover.book('b', 1, 0)
    await failover.book('b', 1, 0)
    t.ok(await failover.giveBack('b', older, 1), 'a sliding window\'s start goes back to Redis, newest or not')
    t.equal(await admin.llen(`${keyPrefix}{b}:sw`), 1, 'Redis dropped it')
    t.notOk(await failover.giveBack('b', older, 1), 'once')
    reachable.now = false
    const away = await failover.book('c', 1, 0)
    t.ok(await failover.giveBack('c', away, 1), 'a local reservation goes back to the local store')
    t.equal(await admin.exists(`${keyPrefix}{c}:sw`), 0, 'which Redis never saw')
  })

  t.test('open: unshaped while Redis is unreachable', async (t) => {
    const { failover, reachable, logs } = await setup('open')
    reachable.now = false
    t.equal(failover.storeMode, 'open')
    const r = await failover.book('b', 1, 0)
    t.same([r.admitted, r.waitMs, r.ticket], [true, 0, undefined], 'admitted at once, with nothing to give back')
    t.equal(failover.enterOutage('b', new Error('gone')), 'open')
    t.equal(logs.length, 1, 'one switch, one log')
  })

  t.test('closed: refused while Redis is unreachable', async (t) => {
    const { failover, reachable } = await setup('closed')
    reachable.now = false
    const err = await failover.book('b', 1, 0).catch((e: unknown) => e)
    t.ok(err instanceof SluiceError, 'a SluiceError')
    t.match(err, { code: 'STORE_UNAVAILABLE', status: 503, details: { store: 'redis', store_mode: 'closed', limit: 6, window_s: 1 } })
    t.equal(failover.storeMode, 'closed')
  })
})
