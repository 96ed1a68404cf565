// Two Sluice instances on redis+sentinel://…/name under steady load; the primary is killed mid-run.
// Every request is answered, the upstream never sees more than the limit in any window (each
// instance shapes its share locally while there is no primary), shaping is back in Redis on the
// promoted replica within a bounded time, and the new primary holds the bucket keys.
import t from 'tap'
import { request } from 'undici'
import { maxInWindow } from '../src/emulator'
import type { RedisStore } from '../src/store/redis-store'
import { ask, missingRedisBinaries, until } from './helpers/redis-node'
import { startRedisSentinel } from './helpers/redis-sentinel'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess } from './helpers/upstream-process'

const missing = missingRedisBinaries()
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }

async function mode (s: TestSluice): Promise<string> {
  const res = await request(`${s.url}/_sluice/ready`)
  const body = await res.body.json() as { routes?: Record<string, string>, error?: { details: { routes: Record<string, string> } } }
  return (body.routes ?? body.error?.details.routes ?? {}).failover ?? 'unknown'
}

t.test('the primary dies under load: no request unanswered, the limit holds, shaping returns to Redis', { skip: missing }, async (t) => {
  const [sentinel, up] = await Promise.all([startRedisSentinel({ downAfterMs: 1000, failoverTimeoutMs: 2000 }), startUpstreamProcess()])
  const url = `redis+sentinel://${sentinel.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}/${sentinel.name}`
  // A wide margin, as in store-outage.test.ts: the hand-overs are the subject, not arrival jitter.
  const route = { name: 'failover', upstream: up.url, limit: '20/s', algorithm: 'sliding-window', maxWait: '3s', onStoreError: 'local', margin: '250ms' }
  const a = await startSluice([route], { redis: url, keyPrefix: 'sentinel:' })
  const b = await startSluice([route], { redis: url, keyPrefix: 'sentinel:' })
  t.teardown(async () => { await a.close(); await b.close(); await Promise.all([up.close(), sentinel.close()]) })
  t.same([(a.store as RedisStore).topology, await mode(a), await mode(b)], ['sentinel', 'redis', 'redis'], 'both shape in Redis through the Sentinel')
  for (const s of [a, b]) await (await request(`${s.url}/warm`)).body.text()
  // Both heartbeat once: each then knows the team has 2 members (its local share is half the budget).
  await sleep(1500)
  t.equal(a.store.instanceCount(), 2, 'instance a knows the team size')

  const outcomes: Array<{ status: number, code?: string }> = []
  let stop = false
  const loadStart = performance.timeOrigin + performance.now()
  // Steady load above the limit, alternating between the instances: 6 loops, up to ~40 requests/s offered against 20/s.
  const loops = Array.from({ length: 6 }, async (_, k) => {
    // eslint-disable-next-line no-unmodified-loop-condition -- changed by another task (a closure), which the rule cannot see
    for (let i = 0; !stop; i++) {
      try {
        const res = await request(`${((k + i) % 2 === 0 ? a : b).url}/load/${k}/${i}`, { headersTimeout: 10_000, bodyTimeout: 10_000 })
        const body = await res.body.json() as { error?: { code: string } }
        outcomes.push({ status: res.statusCode, code: body.error?.code })
      } catch (err) {
        outcomes.push({ status: 0, code: (err as Error).message })
      }
      await sleep(150)
    }
  })
  await sleep(1500)
  const old = await sentinel.killPrimary()
  const killedAt = Date.now()
  const promoted = await sentinel.waitForPromotion(old, 15_000)
  const promotedAt = Date.now()
  const backAfterMs = await until('both routes back in Redis', 10_000, async () => {
    return (await mode(a)) === 'redis' && (await mode(b)) === 'redis' ? Date.now() - promotedAt : undefined
  }).catch(() => -1)
  await sleep(1500)
  stop = true
  await Promise.all(loops)

  t.ok(backAfterMs >= 0 && backAfterMs <= 5000, `both routes back in Redis ${backAfterMs} ms after the promotion (${promotedAt - killedAt} ms after the kill)`)
  const modes = [a, b].map((s) => s.logs.filter((l) => l.storeMode !== undefined).map((l) => l.storeMode))
  t.same(modes, [['local', 'redis'], ['local', 'redis']], 'each instance shaped its share locally while there was no primary, and went back once')
  t.ok(outcomes.length > 50, `${outcomes.length} requests were answered`)
  t.equal(outcomes.filter((o) => o.status === 0).length, 0, 'no request went unanswered')
  t.same(outcomes.filter((o) => o.status !== 200 && o.code !== 'RATE_LIMITED'), [], 'every answer is a proxied success or a RATE_LIMITED envelope')
  const hits = (await up.hits()).filter((h) => h.t >= loadStart)
  const peak = maxInWindow(hits.map((h) => h.t), 1000)
  t.ok(peak <= 20, `the upstream saw at most ${peak} requests in any 1 s window (limit 20) across the failover`)
  const keys = await ask(promoted, 'KEYS', 'sentinel:*') as string[]
  t.ok(keys.includes('sentinel:{failover}:sw'), `the new primary holds the bucket (${keys.length} keys)`)
  t.comment(`${outcomes.filter((o) => o.status === 200).length} ok, ${outcomes.filter((o) => o.code === 'RATE_LIMITED').length} RATE_LIMITED; peak ${peak}/s`)
})
