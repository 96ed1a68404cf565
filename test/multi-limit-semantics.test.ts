// Several limits, beyond one reservation: an announced limit adjusts the limit of its window; shadow
// mode measures every limit; a retry after pushback is charged its own costs; the outage's local share
// begins limit by limit and the hand-over back waits for it in every limit. And a single limit lowered
// at run time below a request's cost refuses it with a 400 naming the limit.
import t from 'tap'
import { request } from 'undici'
import { parseRoute } from '../src/config/route'
import { Cancel } from '../src/limiter/cancel'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { MemoryStore } from '../src/store/memory-store'
import { RedisStore } from '../src/store/redis-store'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

async function get (url: string, init: { method?: string, body?: string } = {}): Promise<{ status: number, body: string }> {
  const res = await request(url, { method: (init.method ?? 'GET') as 'GET', ...(init.body === undefined ? {} : { body: init.body }) })
  return { status: res.statusCode, body: await res.body.text() }
}

t.test('an announced limit adjusts the limit whose window it names, else the first', async (t) => {
  let policy = ''
  const up = await startUpstream((_req, res) => {
    if (policy !== '') res.setHeader('ratelimit-policy', policy)
    res.end('ok')
  })
  const s = await startSluice([{ name: 'api', upstream: up.url, limit: [{ rate: '10/s', name: 'short' }, { rate: '100/min', name: 'long' }] }])
  t.teardown(async () => { await s.close(); await up.close() })
  const limits = s.limiters.get('api')?.limits
  if (limits === undefined) throw new Error('no limits')
  policy = '"api";q=40;w=60'
  t.equal((await get(`${s.url}/a`)).status, 200)
  t.same(limits.policies.map((p) => p.limit), [10, 40], 'q=40;w=60 lowers the per-minute limit, not the per-second one')
  policy = '"api";q=4;w=1'
  await get(`${s.url}/b`)
  t.same(limits.policies.map((p) => p.limit), [4, 40], 'q=4;w=1 lowers the per-second one')
  policy = '"api";q=300;w=3600'
  await get(`${s.url}/c`)
  t.same(limits.policies.map((p) => p.limit), [4, 40], 'a window no limit has: the first, in its window (300/h is 0 per second: not adopted)')
  policy = '"api";q=18000;w=3600'
  await get(`${s.url}/d`)
  t.same(limits.policies.map((p) => p.limit), [5, 40], '18000/h is 5 per second: the first (primary) limit follows')
  policy = '"api";q=1000;w=60'
  await get(`${s.url}/e`)
  t.same(limits.policies.map((p) => p.limit), [5, 100], 'never above the configured limit')
  const status = await (await request(`${s.url}/_sluice/status`)).body.json() as { buckets: Array<{ bucket: string, limits: Array<{ name: string, limit: number }> }> }
  t.same(status.buckets.find((b) => b.bucket === 'api')?.limits.map((l) => [l.name, l.limit]), [['short', 5], ['long', 100]], 'status shows the limits in force')
})

t.test('shadow mode reserves in every limit', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'sh', upstream: up.url, mode: 'shadow', algorithm: 'sliding-window', maxWait: '0s', limit: [{ rate: '100/min', name: 'all' }, { rate: '2/min', name: 'writes', cost: [{ method: 'GET', cost: 0 }] }] }])
  t.teardown(async () => { await s.close(); await up.close() })
  for (let i = 0; i < 4; i++) t.equal((await get(`${s.url}/p/${i}`, { method: 'POST', body: 'x' })).status, 200, `POST ${i} forwarded (shadow)`)
  t.equal((await get(`${s.url}/g`)).status, 200)
  const metrics = await (await request(`${s.url}/_sluice/metrics`)).body.text()
  t.match(metrics, /sluice_shadow_verdicts_total\{route="sh",verdict="would_reject",code="RATE_LIMITED"\} 2\n/, 'the third and fourth POST would have been refused by the 2/min limit')
  const peeks = await s.limiters.get('sh')?.limits?.peek('sh')
  t.same(peeks?.map((p) => p.booked), [3, 2], 'both limits hold the bookings, the refused ones in neither (a GET costs nothing in writes)')
})

t.test('a retry after pushback is charged its own cost in each limit', async (t) => {
  let first = true
  const up = await startUpstream((_req, res) => {
    if (first) {
      first = false
      res.statusCode = 429
      res.setHeader('retry-after', '1')
      res.end('slow down')
      return
    }
    res.end('ok')
  })
  const s = await startSluice([{
    name: 'gh',
    upstream: up.url,
    algorithm: 'sliding-window',
    maxWait: '10s',
    minPause: '100ms',
    retryMethods: ['POST'],
    limit: [{ rate: '100/min', name: 'all' }, { rate: '50/min', name: 'points' }],
    cost: [{ method: 'POST', cost: 5, limits: ['points'] }]
  }])
  t.teardown(async () => { await s.close(); await up.close() })
  const res = await get(`${s.url}/x`, { method: 'POST', body: 'x' })
  t.equal(res.status, 200, `the retry went through: ${res.body}`)
  t.equal(up.hits.length, 2, 'sent twice')
  const peeks = await s.limiters.get('gh')?.limits?.peek('gh')
  // Two attempts; on a loaded machine a late start may also be booked again (the given-up start is
  // taken out of both lists): whatever the count, each booking cost 1 in all and 5 in points.
  const [all, points] = peeks?.map((p) => p.booked) ?? []
  t.ok(all >= 2 && points === 5 * all, `each booking cost 1 in all and 5 in points (${all} and ${points})`)
})

t.test('a single limit lowered below a request\'s cost: 400 naming the limit', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'one', upstream: up.url, limit: '10/s', algorithm: 'sliding-window', cost: [{ method: 'POST', cost: 5 }] }])
  t.teardown(async () => { await s.close(); await up.close() })
  s.limiters.get('one')?.setLimit(3, 1000)
  const res = await request(`${s.url}/x`, { method: 'POST', body: 'x' })
  const body = await res.body.json() as { error: { code: string, message: string, details: Record<string, unknown> } }
  t.equal(res.statusCode, 400)
  t.equal(body.error.code, 'BAD_REQUEST')
  t.match(body.error.details, { limit_name: '3/s', limit: 3, window_s: 1, cost: 5, max_cost: 3 }, 'details name the limit in force')
  t.match(body.error.message, /costs 5 in limit 3\/s of one, which can hold at most 3/)
  t.equal(up.hits.length, 0, 'nothing reached the upstream')
  t.equal((await get(`${s.url}/y`)).status, 200, 'a GET (cost 1) still passes')
})

t.test('outages: the local share begins limit by limit; the hand-over waits in every limit', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => { await store.close() })
  await store.connect()
  const available = store.available.bind(store)
  let reachable = true
  store.available = () => reachable && available()

  const held = new RouteLimiter(parseRoute({ name: 'held', upstream: 'http://127.0.0.1:9', algorithm: 'sliding-window', maxWait: '5s', onStoreError: 'local', margin: '100ms', limit: [{ rate: '5/s', name: 'short' }, { rate: '10/min', name: 'long' }] }, 'route'), store)
  await held.admit('held', 0, new Cancel().signal, 1, [1, 1])
  reachable = false
  const began = performance.now()
  const a = await held.admit('held', 5000, new Cancel().signal, 1, [1, 0])
  const waited = performance.now() - began
  t.equal(held.storeMode, 'local')
  t.ok(a.waitedMs > 700 && waited < 2500, `a request that costs nothing in the 1-minute limit waits out the 1 s one only (${Math.round(waited)} ms)`)
  const refused = await held.admit('held', 2000, new Cancel().signal, 1, [1, 1]).catch((err: unknown) => err)
  t.match(refused, { code: 'RATE_LIMITED', details: { limit_name: 'long' } }, 'one that costs 1 in it waits for the 1-minute window: beyond 2 s')

  reachable = true
  const route = parseRoute({ name: 'hand', upstream: 'http://127.0.0.1:9', algorithm: 'sliding-window', maxWait: '5s', onStoreError: 'local', margin: '100ms', limit: [{ rate: '6/s', name: 'short' }, { rate: '20/10s', name: 'long' }] }, 'route')
  const hand = new RouteLimiter(route, store)
  reachable = false
  for (let i = 0; i < 6; i++) await hand.admit('hand', 0, new Cancel().signal, 1, [1, 1])
  t.equal(hand.storeMode, 'local', 'six starts in the local share, which is full for a second')
  reachable = true
  const back = performance.now()
  const seventh = await hand.admit('hand', 5000, new Cancel().signal, 1, [1, 1])
  t.equal(hand.storeMode, 'redis', 'back on Redis')
  t.ok(seventh.waitedMs > 600, `the first request after the outage waited for a slot of the local share (${Math.round(seventh.waitedMs)} ms, ${Math.round(performance.now() - back)} ms in all)`)
})

t.test('an older reservation is given back in its sliding-window limits, not in a token bucket\'s', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const stores = { memory: new MemoryStore(), redis: new RedisStore({ url: redis.url, keyPrefix: redis.prefix() }) }
  t.teardown(async () => { await stores.redis.close(); await stores.memory.close() })
  await stores.redis.connect()
  for (const [name, store] of Object.entries(stores)) {
    const limiter = new RouteLimiter(parseRoute({ name: 'give', upstream: 'http://127.0.0.1:9', maxWait: '5s', limit: [{ rate: '10/s', name: 'sw', algorithm: 'sliding-window' }, { rate: '10/s', name: 'tb', algorithm: 'token-bucket', burst: 10 }] }, 'route'), store)
    const limits = limiter.limits as NonNullable<typeof limiter.limits>
    const older = await limits.book('give', [1, 1], 0)
    await limits.book('give', [1, 1], 0)
    t.same((await limits.peek('give')).map((p) => p.booked), [2, 2], `${name}: two booked in each limit`)
    t.ok(await limits.giveBack('give', older), `${name}: the older one is given back`)
    t.same((await limits.peek('give')).map((p) => p.booked), [1, 2], `${name}: out of the sliding window's list; the token bucket keeps it (a later one was computed from it)`)
  }
})
