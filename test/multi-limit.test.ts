// Every limit a route has, in one reservation: two instances on one Redis honour both windows at the
// upstream and use the budget; headers and refusals name the limits; on a Redis Cluster every key of
// one reservation is in one slot (one per credential, or one per route when a limit is shared).
import t from 'tap'
import { request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { parseRoute } from '../src/config/route'
import { LimitSet } from '../src/limiter/limit-set'
import { StoreFailover } from '../src/limiter/store-failover'
import { defineSluiceCommands } from '../src/store/lua-scripts'
import { MemoryStore } from '../src/store/memory-store'
import { redisKeys } from '../src/store/redis-keys'
import { slidingWindowParams, type BucketPolicy } from '../src/store/bucket-store'
import { startRedis } from './helpers/redis'
import { startRedisCluster } from './helpers/redis-cluster'
import { missingRedisBinaries } from './helpers/redis-node'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess } from './helpers/upstream-process'

t.test('two instances, one Redis, limit [10/s, 25/5s]: 60 requests at once', async (t) => {
  const redis = await startRedis()
  const up = await startUpstreamProcess()
  const keyPrefix = redis.prefix()
  const route = { name: 'pair', upstream: up.url, limit: ['10/s', '25/5s'], algorithm: 'sliding-window', maxWait: '30s' }
  const instances: TestSluice[] = [await startSluice([route], { redis: redis.url, keyPrefix }), await startSluice([route], { redis: redis.url, keyPrefix })]
  t.teardown(async () => {
    for (const s of instances) await s.close()
    await up.close()
    await redis.close()
  })
  const began = performance.timeOrigin + performance.now()
  const results = await Promise.all(Array.from({ length: 60 }, async (_, i) => {
    const res = await request(`${instances[i % 2].url}/r/${i}`)
    await res.body.text()
    return { status: res.statusCode, headers: res.headers }
  }))
  const hits = (await up.hits()).filter((h) => h.t >= began).map((h) => h.t)
  t.equal(results.filter((r) => r.status === 200).length, 60, 'every request served')
  t.equal(hits.length, 60, 'each reached the upstream once')
  t.ok(maxInWindow(hits, 1000) <= 10, `at most ${maxInWindow(hits, 1000)} in any 1 s at the upstream (limit 10)`)
  t.ok(maxInWindow(hits, 5000) <= 25, `at most ${maxInWindow(hits, 5000)} in any 5 s at the upstream (limit 25)`)
  // The shortest both allow: 25 per 5.1 s (window + margin) puts the 51st..60th two windows on.
  const minimumMs = 2 * 5100
  const span = Math.max(...hits) - Math.min(...hits)
  t.ok(span >= minimumMs - 60, `the run took ${span.toFixed(0)} ms, the limits allow no less than ${minimumMs} ms`)
  // Tolerant on a loaded shared machine; bench/precision.ts measures it (README figures).
  t.ok(span <= minimumMs * 1.15 + 300, `and used the budget: ${(minimumMs / span).toFixed(3)} of the shortest`)
  const h = results[0].headers
  t.equal(h['ratelimit-policy'], '"pair:10/s";q=10;w=1, "pair:25/5s";q=25;w=5', 'RateLimit-Policy lists every limit')
  t.match(String(h.ratelimit), /^"pair:(10\/s|25\/5s)";r=\d+;t=\d+$/, 'RateLimit reports one of them')
  const last = results.map((r) => String(r.headers.ratelimit)).filter((v) => v.startsWith('"pair:25/5s"'))
  t.ok(last.length > 0, 'the 25/5s limit binds for some requests')
})

t.test('a refusal names the limit that could not be met; a cost above a limit is a 400', async (t) => {
  const up = await startUpstreamProcess()
  const s = await startSluice([{ name: 'gh', upstream: up.url, algorithm: 'sliding-window', limit: [{ rate: '100/min', name: 'all' }, { rate: '2/min', name: 'content', cost: [{ method: 'GET', cost: 0 }] }], maxWait: '0s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  for (let i = 0; i < 3; i++) {
    const res = await request(`${s.url}/get/${i}`)
    await res.body.text()
    t.equal(res.statusCode, 200, `GET ${i}`)
  }
  for (let i = 0; i < 2; i++) {
    const res = await request(`${s.url}/p/${i}`, { method: 'POST', body: 'x' })
    await res.body.text()
    t.equal(res.statusCode, 200, `POST ${i} within the content limit`)
  }
  const refused = await request(`${s.url}/p/3`, { method: 'POST', body: 'x' })
  const body = await refused.body.json() as { error: { code: string, details: Record<string, unknown> } }
  t.equal(refused.statusCode, 429)
  t.equal(body.error.code, 'RATE_LIMITED')
  t.equal(body.error.details.limit_name, 'content', 'details name the limit')
  t.equal(body.error.details.limit, 2)
  t.equal(refused.headers['x-ratelimit-limit'], '2', 'the legacy trio reports the binding limit')
  const get = await request(`${s.url}/get/9`)
  await get.body.text()
  t.equal(get.statusCode, 200, 'a GET still passes: it costs nothing in content')

  const limiter = s.limiters.get('gh')
  if (limiter?.limits === undefined) throw new Error('no limits')
  limiter.limits.policies[1].limit = 1
  const ctl = new AbortController()
  await t.rejects(limiter.admit('gh', 0, ctl.signal as never, 2, [1, 2]), { code: 'BAD_REQUEST', status: 400, details: { limit_name: 'content' } }, 'a cost above a limit (lowered at run time) is a 400 naming it')
})

t.test('Redis Cluster: one reservation\'s keys share one slot', { skip: missingRedisBinaries() }, async (t) => {
  const cluster = await startRedisCluster()
  t.teardown(cluster.close)
  const client = defineSluiceCommands(cluster.client())
  const keys = redisKeys('sluice:')
  const cases = [
    { name: 'per credential', raw: { name: 'gh', upstream: 'http://x', key: 'header:authorization', limit: ['5000/h', '900/min'] }, bucket: 'gh:abc' },
    { name: 'shared with a per-credential one', raw: { name: 'zu', upstream: 'http://x', limit: [{ rate: '200/min', key: 'header:authorization' }, { rate: '1000/min', key: 'instance' }] }, bucket: 'zu:abc' }
  ]
  for (const c of cases) {
    const route = parseRoute(c.raw, 'r')
    const store = new MemoryStore()
    const first: BucketPolicy = { algorithm: 'sliding-window', limit: 10, windowMs: 1000, burst: 1, marginMs: 10 }
    const set = new LimitSet(route, first, store, new StoreFailover(route, store, first, new Map(), () => {}))
    const all = [keys.limit(set.pauseRef(c.bucket), 'pause'), ...set.refs(c.bucket).flatMap((ref) => [keys.limit(ref, 'sw'), keys.limit(ref, 'sw-floor'), keys.limit(ref, 'sw-margin')])]
    const slots = new Set(await Promise.all(all.map(async (k) => await cluster.slotOf(k))))
    t.equal(slots.size, 1, `${c.name}: ${all.length} keys, one slot (CLUSTER KEYSLOT)`)
    const args: number[] = [2, 0]
    for (let i = 0; i < 2; i++) args.push(2, 10, slidingWindowParams(first).windowUs, 1, 42, 0, first.marginMs * 1000, 0)
    const reply = await client.sluiceReserveLimits(all.length, ...all, ...args)
    t.equal(reply[0], 1, `${c.name}: the script runs on the cluster (no CROSSSLOT)`)
    await store.close()
  }
  await client.quit()
})
