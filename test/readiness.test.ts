// /_sluice/ready tells the truth: 200 only while every route shapes as configured. A Redis that answers
// PING but refuses every reservation (a read-only replica: READONLY) is not ready, and the body names
// the route, its mode and the store's reason; the route says so in its log once, not per request.
import t from 'tap'
import Redis from 'ioredis'
import { request } from 'undici'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

interface ReadyBody {
  status?: string
  routes?: Record<string, string>
  error?: { code: string, message: string, details: { routes: Record<string, string>, degraded: Array<{ route: string, mode: string, reason?: string }>, reason?: string } }
}

t.test('a read-only replica: not ready, with the route, its mode and READONLY', async (t) => {
  const primary = await startRedis()
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(primary.port)])
  const up = await startUpstream()
  const s = await startSluice([{ name: 'ro', upstream: up.url, limit: '20/s', onStoreError: 'local' }], { redis: replica.url, keyPrefix: replica.prefix() })
  const admin = new Redis(replica.url)
  admin.on('error', () => {})
  t.teardown(async () => {
    admin.disconnect()
    await s.close()
    await up.close()
    await replica.close()
    await primary.close()
  })
  const ready = async (): Promise<{ status: number, body: ReadyBody }> => {
    const res = await request(`${s.url}/_sluice/ready`)
    return { status: res.statusCode, body: await res.body.json() as ReadyBody }
  }

  // PING answers, writes do not: before any request, readiness already says the store refuses writes.
  const before = await ready()
  t.equal(before.status, 503, 'not ready before any request')
  t.match(before.body.error?.details.reason, /READONLY/, `the store's reason (${before.body.error?.details.reason})`)

  const statuses = await Promise.all(Array.from({ length: 5 }, async (_, i) => (await request(`${s.url}/r/${i}`)).statusCode))
  t.same(statuses, [200, 200, 200, 200, 200], 'requests are shaped locally (onStoreError: local)')
  const after = await ready()
  t.equal(after.status, 503, 'not ready while the route shapes locally')
  t.equal(after.body.error?.code, 'STORE_UNAVAILABLE')
  t.same(after.body.error?.details.degraded.map((d) => [d.route, d.mode]), [['ro', 'local']], 'the route and its mode')
  t.match(after.body.error?.details.degraded[0].reason, /READONLY/, 'and why: the last store error')
  const warned = (): number => s.logs.filter((l) => l.storeMode === 'local' && /READONLY/.test(String(l.reason))).length
  t.equal(warned(), 1, 'the route said it once, with the reason, not once per request')

  // Promoted: writes succeed, and readiness takes the route back to Redis without waiting for a request.
  await admin.replicaof('NO', 'ONE')
  const promoted = await ready()
  t.equal(promoted.status, 200, `ready once the replica is promoted (${JSON.stringify(promoted.body)})`)
  t.same(promoted.body.routes, { ro: 'redis' })

  // Demoted again: the same reason within a minute is not said again for each change of mode.
  await admin.replicaof('127.0.0.1', String(primary.port))
  t.equal((await request(`${s.url}/r/again`)).statusCode, 200)
  t.equal((await ready()).status, 503, 'not ready again')
  t.equal(warned(), 1, 'the flap on the same reason went unsaid')
})
