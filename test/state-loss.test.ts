// A bucket's state vanishes from Redis while the connection stays up (FLUSHALL here; eviction or a
// promoted replica in production): the instances notice from the generation each reservation returns,
// record their starts of the last window again, and the upstream still never sees more than the limit.
import t from 'tap'
import { request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { startRedis } from './helpers/redis'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess } from './helpers/upstream-process'

const LIMIT = 20
const REQUESTS = 100

t.test('FLUSHALL under load: never above the limit at the upstream, and said once', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  for (const algorithm of ['sliding-window', 'token-bucket'] as const) {
    t.test(algorithm, async (t) => {
      const up = await startUpstreamProcess()
      const keyPrefix = redis.prefix()
      const route = { name: 'lossy', upstream: up.url, limit: `${LIMIT}/s`, algorithm, maxWait: '30s' }
      const instances: TestSluice[] = [await startSluice([route], { redis: redis.url, keyPrefix }), await startSluice([route], { redis: redis.url, keyPrefix })]
      t.teardown(async () => {
        for (const s of instances) await s.close()
        await up.close()
      })
      // Connections to the upstream opened first (within the budget), then a window lets it refill.
      await Promise.all(Array.from({ length: 8 }, async (_, i) => { await (await request(`${instances[i % 2].url}/warm/${i}`)).body.text() }))
      await new Promise((resolve) => setTimeout(resolve, 1200))
      const began = performance.timeOrigin + performance.now()
      // Halfway through the drain (100 at 20/s: about 5 s), with starts of both instances in the last window.
      const flush = setTimeout(() => { void redis.client().flushall() }, 2200)
      const statuses = await Promise.all(Array.from({ length: REQUESTS }, async (_, i) => {
        const res = await request(`${instances[i % 2].url}/r/${i}`)
        await res.body.text()
        return res.statusCode
      }))
      clearTimeout(flush)
      t.equal(statuses.filter((s) => s === 200).length, REQUESTS, 'every request succeeds')
      const hits = (await up.hits()).filter((h) => h.t >= began)
      const peak = maxInWindow(hits.map((h) => h.t), 1000)
      t.ok(peak <= LIMIT, `the upstream saw at most ${peak} requests in any 1 s window (limit ${LIMIT})`)
      const said = instances.map((s) => s.logs.filter((l) => String(l.msg).includes('bucket state lost in Redis')).length)
      t.same(said, [1, 1], `each instance said it once (${said.join(', ')})`)
    })
  }
})

t.test('a Redis that may evict Sluice\'s keys is named at start-up, with what to set', async (t) => {
  for (const [policy, warned] of [['allkeys-lru', true], ['volatile-ttl', true], ['noeviction', false]] as const) {
    const redis = await startRedis(['--maxmemory-policy', policy])
    const sluice = await startSluice([{ name: 'r', upstream: 'http://127.0.0.1:9', limit: '5/s' }], { redis: redis.url, keyPrefix: redis.prefix() })
    // CONFIG GET runs once the connection is ready: a few round trips on loopback.
    const said = (): Array<Record<string, unknown>> => sluice.logs.filter((l) => String(l.msg).includes('maxmemory-policy'))
    if (warned) for (let i = 0; i < 50 && said().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    else await new Promise((resolve) => setTimeout(resolve, 200))
    t.equal(said().length, warned ? 1 : 0, `${policy}: ${warned ? 'warned once' : 'nothing said'}`)
    if (warned) t.match(String(said()[0].msg), /noeviction/, 'the warning says what to set')
    await sluice.close()
    await redis.close()
  }
})
