// `concurrency: N`: at most N requests of a bucket in flight at the upstream across all instances,
// with leases that expire, so a dead instance cannot leak its slots.
import t from 'tap'
import { request } from 'undici'
import { RedisStore } from '../src/store/redis-store'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { startUpstream, type TestUpstream } from './helpers/upstream'

/** An origin that answers after `latencyMs` and records the most requests it ever held at once. */
async function slowUpstream (latencyMs: number): Promise<TestUpstream & { peak: () => number }> {
  let current = 0
  let peak = 0
  const up = await startUpstream((_req, res) => {
    current++
    peak = Math.max(peak, current)
    setTimeout(() => {
      current--
      res.setHeader('content-type', 'application/json')
      res.end('{"ok":true}')
    }, latencyMs)
  })
  return Object.assign(up, { peak: () => peak })
}

t.test('two instances sharing Redis never hold more than N requests at the upstream', async (t) => {
  const redis = await startRedis()
  const up = await slowUpstream(200)
  const keyPrefix = redis.prefix()
  const route = { name: 'gh', upstream: up.url, limit: '1000/s', concurrency: 3, maxWait: '10s' }
  const a = await startSluice([route], { redis: redis.url, keyPrefix })
  const b = await startSluice([route], { redis: redis.url, keyPrefix })
  t.teardown(async () => { await a.close(); await b.close(); await up.close(); await redis.close() })
  const began = Date.now()
  const statuses = await Promise.all(Array.from({ length: 30 }, async (_, i) => {
    const res = await request(`${(i % 2 === 0 ? a : b).url}/x/${i}`)
    await res.body.text()
    return res.statusCode
  }))
  const elapsed = Date.now() - began
  t.same(statuses, Array(30).fill(200), 'every request succeeds')
  t.equal(up.peak(), 3, 'the upstream held exactly 3 at most (and the cap was used)')
  t.ok(elapsed >= 10 * 200 - 50, `30 requests of 200 ms, 3 at a time, take at least 2 s (${elapsed} ms)`)
  t.ok(elapsed < 10 * 200 + 1500, `and slots are handed on promptly, not polled (${elapsed} ms)`)
})

t.test('slots held by a dead instance expire; a request that cannot get one within its bound is refused', async (t) => {
  const redis = await startRedis()
  const up = await slowUpstream(10)
  const keyPrefix = redis.prefix()
  const s = await startSluice([{ name: 'gh', upstream: up.url, limit: '1000/s', concurrency: 2, maxWait: '3s' }], { redis: redis.url, keyPrefix })
  // Another "instance" takes both slots and dies: its leases live 600 ms and are never given back.
  const ghost = new RedisStore({ url: redis.url, keyPrefix })
  await ghost.connect()
  t.teardown(async () => { await ghost.close(); await s.close(); await up.close(); await redis.close() })
  t.ok((await ghost.acquireLease('gh', 2, 'ghost-1', 600)).acquired)
  t.ok((await ghost.acquireLease('gh', 2, 'ghost-2', 600)).acquired)
  const refused = await request(`${s.url}/y`, { headers: { prefer: 'wait=0' } })
  const body = await refused.body.json() as { error: { code: string, details: Record<string, unknown> } }
  t.equal(refused.statusCode, 429)
  t.equal(body.error.code, 'RATE_LIMITED')
  t.equal(body.error.details.reason, 'concurrency')
  t.ok(Number(refused.headers['retry-after']) >= 1)
  const began = Date.now()
  const res = await request(`${s.url}/z`)
  await res.body.text()
  const waited = Date.now() - began
  t.equal(res.statusCode, 200, 'the dead instance\'s slots expired')
  t.ok(waited >= 400 && waited < 2000, `it waited for the expiry (${waited} ms), woken by the earliest lease's end`)
  t.same(up.hits.map((h) => h.url), ['/z'], 'the refused request never reached the upstream')
})

t.test('memory store: the same cap in one instance, and a client leaving frees its slot', async (t) => {
  const up = await slowUpstream(300)
  const s = await startSluice([{ upstream: up.url, limit: '1000/s', concurrency: 1, maxWait: '5s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const first = request(`${s.url}/1`).then(async (r) => { await r.body.text(); return r.statusCode })
  await new Promise((resolve) => setTimeout(resolve, 50))
  const controller = new AbortController()
  const leaving = request(`${s.url}/2`, { signal: controller.signal }).catch(() => 'aborted')
  await new Promise((resolve) => setTimeout(resolve, 50))
  controller.abort()
  t.equal(await leaving, 'aborted')
  const third = await request(`${s.url}/3`)
  await third.body.text()
  t.equal(await first, 200)
  t.equal(third.statusCode, 200)
  t.equal(up.peak(), 1)
  t.same(up.hits.map((h) => h.url), ['/1', '/3'], 'the client that left never reached the upstream')
})
