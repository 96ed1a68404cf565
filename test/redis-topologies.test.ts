// The harness for real Redis deployments works with plain ioredis: a 3-primary Cluster spreads keys of
// different hash tags over its nodes, a Sentinel hands clients the promoted replica after the primary
// is killed, and the delay relay makes Redis distant (a round trip costs twice the one-way delay).
import { performance } from 'node:perf_hooks'
import t from 'tap'
import Redis from 'ioredis'
import { startDelayRelay } from './helpers/delay-relay'
import { startRedis } from './helpers/redis'
import { startRedisCluster } from './helpers/redis-cluster'
import { ask, missingRedisBinaries } from './helpers/redis-node'
import { startRedisSentinel } from './helpers/redis-sentinel'

const missing = missingRedisBinaries()

t.test('a 3-primary cluster: keys of different hash tags live on different nodes', { skip: missing }, async (t) => {
  const cluster = await startRedisCluster()
  t.teardown(cluster.close)
  t.equal(cluster.nodes.length, 3, 'three primaries')
  const client = cluster.client()
  // Tags whose slots fall on three different nodes (the slots are split in three contiguous ranges).
  const byNode = new Map<number, string>()
  for (let i = 0; byNode.size < 3 && i < 100; i++) {
    const key = `{route-${i}}:log`
    const node = await cluster.nodeOf(key)
    if (!byNode.has(node.port)) byNode.set(node.port, key)
  }
  t.equal(byNode.size, 3, 'three hash tags found, one per node')
  for (const key of byNode.values()) await client.set(key, 'x')
  for (const [port, key] of byNode) {
    const direct = await ask({ host: '127.0.0.1', port }, 'DBSIZE')
    t.equal(direct, 1, `node ${port} holds the one key of its tag (${key})`)
  }
  const [a, b] = [...byNode.values()]
  t.not(await cluster.slotOf(a), await cluster.slotOf(b), 'different tags, different slots')
  t.equal(await cluster.slotOf('{route-0}:log'), await cluster.slotOf('{route-0}:heartbeat'), 'one tag, one slot (CLUSTER KEYSLOT)')
  await cluster.flushAll()
  t.equal(await client.dbsize(), 0, 'FLUSHALL emptied the node the client asks')
  for (const port of byNode.keys()) t.equal(await ask({ host: '127.0.0.1', port }, 'DBSIZE'), 0, `node ${port} is empty after flushAll`)
})

t.test('a primary with a replica and a Sentinel: the client follows the failover', { skip: missing }, async (t) => {
  const topology = await startRedisSentinel({ downAfterMs: 1000, failoverTimeoutMs: 2000 })
  t.teardown(topology.close)
  const client = topology.client({ maxRetriesPerRequest: null })
  await client.set('budget', '7')
  t.equal(await client.get('budget'), '7', 'writes and reads through the Sentinel')
  // The write is on the replica before the primary dies.
  t.equal(await client.call('WAIT', '1', '2000'), 1, 'the replica acknowledged it')

  const old = await topology.killPrimary()
  const killedAt = performance.now()
  const promoted = await topology.waitForPromotion(old, 15_000)
  t.not(promoted.port, old.port, `the Sentinel promoted the replica (${promoted.port}) in ${((performance.now() - killedAt) / 1000).toFixed(1)} s`)
  // The client, retrying, reaches the new master within a bounded time.
  const answered = await Promise.race([
    client.get('budget'),
    new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('no answer within 10 s of the promotion')), 10_000))
  ])
  t.equal(answered, '7', 'the client reads the replicated value from the promoted replica')
  await client.set('after', '1')
  const role = await client.call('ROLE') as [string]
  t.equal(role[0], 'master', 'and writes to it: it is the master now')
  t.equal((client as unknown as { stream: { remotePort: number } }).stream.remotePort, promoted.port, 'connected to the promoted node')
  t.ok(performance.now() - killedAt < 20_000, `failover and reconnection within 20 s (${((performance.now() - killedAt) / 1000).toFixed(1)} s)`)
  await topology.flushAll()
  t.equal(await client.dbsize(), 0, 'flushAll empties the current master')
})

t.test('the delay relay: a distant Redis', { skip: missing }, async (t) => {
  const redis = await startRedis()
  t.teardown(redis.close)
  const relay = await startDelayRelay({ targetPort: redis.port, oneWayMs: 40 })
  t.teardown(relay.close)
  const client = new Redis({ port: relay.port, host: '127.0.0.1' })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  await client.ping()

  const began = performance.now()
  t.equal(await client.ping(), 'PONG', 'PING answered through the relay')
  const rttMs = performance.now() - began
  t.ok(rttMs >= 80, `a round trip through a 40 ms one-way relay takes at least 80 ms (${rttMs.toFixed(1)} ms)`)
  t.ok(rttMs < 400, `and not much more (${rttMs.toFixed(1)} ms)`)

  // Many chunks in flight, one order: a 4 MiB value (more than the relay queues) and pipelined commands.
  const big = Buffer.alloc(4 << 20, 'abcdefgh').toString()
  await client.set('big', big)
  const replies = await Promise.all([client.get('big'), ...Array.from({ length: 50 }, async (_, i) => await client.echo(String(i)))])
  t.equal(replies[0]?.length, big.length, 'the 4 MiB value came back whole')
  t.ok(replies[0] === big, 'byte for byte')
  t.same(replies.slice(1), Array.from({ length: 50 }, (_, i) => String(i)), 'pipelined replies in order')

  relay.setDelay(0)
  const fast = performance.now()
  await client.ping()
  t.ok(performance.now() - fast < 80, `setDelay(0): the next round trip is short again (${(performance.now() - fast).toFixed(1)} ms)`)
  const stats = relay.stats()
  t.equal(stats.connections, 1, 'one connection relayed')
  t.ok(stats.bytesUp > 4 << 20 && stats.bytesDown > 4 << 20, 'the value passed both ways')
})
