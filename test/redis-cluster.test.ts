// Two Sluice instances given one node of a 3-primary Redis Cluster as a plain redis:// URL (not the
// seed list): the store finds the cluster at connect and shapes in it. A plain route and a keyed
// route (many credentials, so buckets land on every node) keep the limit at the upstream, no MOVED or
// CROSSSLOT reaches a log line, and readiness says every route shapes in Redis.
import { connect, createServer } from 'node:net'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { RedisStore } from '../src/store/redis-store'
import { freePort } from './helpers/redis'
import { startRedisCluster, type TestRedisCluster } from './helpers/redis-cluster'
import { ask, missingRedisBinaries, until } from './helpers/redis-node'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess, type RemoteUpstream } from './helpers/upstream-process'

const missing = missingRedisBinaries()
const CREDENTIALS = 12
const PER_CREDENTIAL = 8

t.test('redis:// to one cluster node: two instances shape in the cluster', { skip: missing }, async (t) => {
  const [cluster, up] = await Promise.all([startRedisCluster(), startUpstreamProcess()])
  t.teardown(async () => { await Promise.all([up.close(), cluster.close()]) })
  await twoInstances(t, cluster, up)
  await unreachableAtStart(t, cluster)
  await movedAfterAll(t, cluster)
})

async function twoInstances (t: Test, cluster: TestRedisCluster, up: RemoteUpstream): Promise<void> {
  const node = cluster.nodes[1]
  const routes = [
    { name: 'plain', prefix: '/plain', upstream: up.url, limit: '20/s', maxWait: '10s', margin: '100ms' },
    { name: 'keyed', prefix: '/keyed', upstream: up.url, limit: '5/s', maxWait: '10s', margin: '100ms', key: 'header:authorization' }
  ]
  const instances: TestSluice[] = []
  for (let i = 0; i < 2; i++) instances.push(await startSluice(routes, { redis: `redis://${node.host}:${node.port}`, keyPrefix: 'e2e:' }))
  t.teardown(async () => { for (const s of instances) await s.close() })
  t.same(instances.map((s) => (s.store as RedisStore).topology), ['cluster', 'cluster'], 'each store found the cluster behind the node')

  // Open each instance's upstream connections first (within the budget), then let the window pass:
  // this test is about where the buckets live; README "Cold starts" says what a cold burst costs.
  // As many at once as the measured burst starts at once: 20 plain, 5 for each of 12 credentials.
  await Promise.all(Array.from({ length: 20 + 64 }, async (_, i) => {
    const path = i < 20 ? `/plain/warm/${i}` : `/keyed/warm/${i}`
    await (await request(`${instances[i % 2].url}${path}`, { headers: { authorization: `Bearer warm-${i}` } })).body.text()
  }))
  await new Promise((resolve) => setTimeout(resolve, 1400))
  const began = performance.timeOrigin + performance.now()
  const plain = Array.from({ length: 50 }, async (_, i) => {
    const res = await request(`${instances[i % 2].url}/plain/${i}`)
    await res.body.text()
    return res.statusCode
  })
  const keyed = Array.from({ length: CREDENTIALS * PER_CREDENTIAL }, async (_, i) => {
    const c = i % CREDENTIALS
    const res = await request(`${instances[i % 2].url}/keyed/c${c}/${i}`, { headers: { authorization: `Bearer token-${c}` } })
    await res.body.text()
    return res.statusCode
  })
  const statuses = await Promise.all([...plain, ...keyed])
  t.same(statuses.filter((s) => s !== 200), [], `all ${statuses.length} requests proxied`)

  // The upstream sees the paths without the route prefixes: /<i> and /c<credential>/<i>.
  const hits = (await up.hits()).filter((h) => h.t >= began)
  t.equal(hits.length, statuses.length, 'each reached the upstream once')
  const plainPeak = maxInWindow(hits.filter((h) => /^\/\d+$/.test(h.url)).map((h) => h.t), 1000)
  t.ok(plainPeak <= 20, `the plain route's upstream saw at most ${plainPeak} requests in any 1 s window (limit 20)`)
  const keyedPeaks = Array.from({ length: CREDENTIALS }, (_, c) => maxInWindow(hits.filter((h) => h.url.startsWith(`/c${c}/`)).map((h) => h.t), 1000))
  t.ok(keyedPeaks.every((p) => p <= 5), `each credential's peak in any 1 s window is at most 5 (${keyedPeaks.join(', ')})`)

  const lines = JSON.stringify(instances.flatMap((s) => s.logs))
  t.notMatch(lines, /MOVED|CROSSSLOT|ASK \d/, 'no MOVED, ASK or CROSSSLOT in any log line')
  const switches = instances.flatMap((s) => s.logs.filter((l) => l.storeMode !== undefined))
  t.same(switches, [], 'no route left Redis')
  const sizes = await Promise.all(cluster.nodes.map(async (n) => Number(await ask(n, 'DBSIZE'))))
  t.ok(sizes.every((n) => n > 0), `every node holds buckets (DBSIZE ${sizes.join(', ')})`)
  for (const s of instances) {
    const res = await request(`${s.url}/_sluice/ready`)
    const body = await res.body.json() as { routes?: Record<string, string> }
    t.equal(res.statusCode, 200, 'ready')
    t.same(body.routes, { plain: 'redis', keyed: 'redis' }, 'every route shapes in Redis')
  }
}

/**
 * The node does not answer when the store starts (here: nothing listens yet at the address it is
 * given, a forwarder to the node comes later): the store waits unavailable, and the check runs on the
 * first connection, so the buckets go to the cluster without a single MOVED.
 */
async function unreachableAtStart (t: Test, cluster: TestRedisCluster): Promise<void> {
  const port = await freePort()
  const logged: string[] = []
  const store = new RedisStore({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'late:', log: (_fields, message) => logged.push(message) })
  t.teardown(() => store.close())
  await t.rejects(store.connect(), 'no Redis at start-up')
  t.notOk(store.available(), 'unavailable: the routes shape by onStoreError')
  const forwarder = createServer((client) => {
    const node = connect(cluster.nodes[2].port, '127.0.0.1')
    for (const [from, to] of [[client, node], [node, client]]) {
      from.on('error', () => to.destroy())
      from.pipe(to)
    }
  })
  t.teardown(async () => { await new Promise((resolve) => forwarder.close(resolve)) })
  await new Promise<void>((resolve) => forwarder.listen(port, '127.0.0.1', resolve))
  await until('the store connected to the cluster', 5000, async () => store.available() ? true : undefined)
  t.equal(store.topology, 'cluster', 'the first connection found a cluster node')
  const policy = { algorithm: 'token-bucket', limit: 5, windowMs: 1000, burst: 5, marginMs: 10 } as const
  const buckets = Array.from({ length: 12 }, (_, i) => `late-${i}`)
  const reserved = await Promise.all(buckets.map(async (b) => await store.reserve(b, policy, 1, 0)))
  t.ok(reserved.every((r) => r.admitted), 'buckets on every node are reserved')
  t.same(logged, [], 'no topology error')
}

/**
 * Where INFO is refused (an ACL), the check at connect cannot tell a cluster node from one server:
 * the first MOVED reply is a topology error (said once; ping fails with it, so readiness does), and a
 * cluster client seeded with the node takes over.
 */
async function movedAfterAll (t: Test, cluster: TestRedisCluster): Promise<void> {
  const node = cluster.nodes[0]
  await ask(node, 'ACL', 'SETUSER', 'default', '-info')
  const logged: string[] = []
  const store = new RedisStore({ url: `redis://${node.host}:${node.port}`, keyPrefix: 'acl:', log: (_fields, message) => logged.push(message) })
  t.teardown(() => store.close())
  await store.connect()
  t.equal(store.topology, 'single', 'INFO refused: taken as one server')
  t.ok(store.available(), 'and used')
  // A bucket whose slot another node serves.
  let bucket = ''
  for (let i = 0; bucket === ''; i++) if ((await cluster.nodeOf(`acl:{b${i}}:sw`)).port !== node.port) bucket = `b${i}`
  const policy = { algorithm: 'sliding-window', limit: 5, windowMs: 1000, burst: 1, marginMs: 10 } as const
  await t.rejects(store.reserve(bucket, policy, 1, 0), /^MOVED/, 'the first reservation there is answered MOVED')
  t.match(store.topologyError() ?? '', /answered MOVED: it is a Redis Cluster node/, 'a topology error says why')
  t.notOk(store.available(), 'the store is not available meanwhile (the routes shape by onStoreError, not flapping)')
  await t.rejects(store.ping(), /Redis Cluster node/, 'ping fails with it, so readiness does')
  await until('the cluster client taking over', 5000, async () => store.topology === 'cluster' && store.available() ? true : undefined)
  t.equal(store.topologyError(), undefined, 'the error is gone once the cluster client serves')
  t.ok((await store.reserve(bucket, policy, 1, 0)).admitted, 'and the reservation is made in the cluster')
  t.same(logged.length, 1, `said once (${logged[0]})`)
}
