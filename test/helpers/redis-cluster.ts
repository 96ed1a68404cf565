// A real Redis Cluster of N primaries (no replicas) on free loopback ports, each node in its own
// temporary directory, created with `redis-cli --cluster create` and ready once every node reports
// cluster_state:ok. Skip a test with `missingRedisBinaries()` where redis-server or redis-cli is absent.
import { execFile } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Cluster, type ClusterOptions } from 'ioredis'
import { ask, dataNodeArgs, freePorts, startRedisNode, topology, until, type HostPort, type RedisNode } from './redis-node'

export interface RedisClusterOptions {
  /** Default 3, the fewest `redis-cli --cluster create` accepts. */
  primaries?: number
  /** cluster-node-timeout: how long a node may be unreachable before it is failing (ms). Default 1000. */
  nodeTimeoutMs?: number
}

export interface TestRedisCluster {
  /** The primaries, in port order of creation; each owns a contiguous share of the 16384 slots. */
  nodes: RedisNode[]
  /** Where a cluster client starts (every node). */
  seeds: HostPort[]
  /** An ioredis Cluster client on the seeds, disconnected by `close`. */
  client: (options?: ClusterOptions) => Cluster
  /** CLUSTER KEYSLOT of a key. */
  slotOf: (key: string) => Promise<number>
  /** The node that serves a key's slot now (CLUSTER SLOTS). */
  nodeOf: (key: string) => Promise<HostPort>
  /** FLUSHALL on every primary. */
  flushAll: () => Promise<void>
  /** Disconnect the clients, kill the nodes, remove their directories. */
  close: () => Promise<void>
}

type SlotRange = [number, number, [string, number, ...unknown[]], ...unknown[]]

export async function startRedisCluster (options: RedisClusterOptions = {}): Promise<TestRedisCluster> {
  const n = options.primaries ?? 3
  const { dir, nodes, track, close } = topology<Cluster>('sluice-cluster-')
  try {
    // Each node's client port and its cluster bus port (named, not the default port + 10000, which may be taken).
    const ports = await freePorts(2 * n)
    for (let i = 0; i < n; i++) {
      const nodeDir = join(dir, String(ports[i]))
      mkdirSync(nodeDir)
      nodes.push(await startRedisNode(ports[i], nodeDir, [
        ...dataNodeArgs(ports[i], nodeDir),
        '--cluster-enabled', 'yes',
        '--cluster-port', String(ports[n + i]),
        '--cluster-config-file', join(nodeDir, 'nodes.conf'),
        '--cluster-node-timeout', String(options.nodeTimeoutMs ?? 1000)
      ]))
    }
    await promisify(execFile)('redis-cli', ['--cluster', 'create', ...nodes.map((node) => `${node.host}:${node.port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 20_000 })
    await until('every cluster node reporting cluster_state:ok', 15_000, async () => {
      const infos = await Promise.all(nodes.map(async (node) => String(await ask(node, 'CLUSTER', 'INFO'))))
      return infos.every((info) => info.includes('cluster_state:ok')) ? true : undefined
    })
  } catch (err) {
    await close()
    throw err
  }
  const seeds = nodes.map(({ host, port }) => ({ host, port }))
  const slotOf = async (key: string): Promise<number> => Number(await ask(nodes[0], 'CLUSTER', 'KEYSLOT', key))
  return {
    nodes,
    seeds,
    client: (clientOptions) => track(new Cluster(seeds, clientOptions)),
    slotOf,
    nodeOf: async (key) => {
      const slot = await slotOf(key)
      const ranges = await ask(nodes[0], 'CLUSTER', 'SLOTS') as SlotRange[]
      const range = ranges.find(([from, to]) => slot >= from && slot <= to)
      if (range === undefined) throw new Error(`no node serves slot ${slot}`)
      return { host: range[2][0], port: Number(range[2][1]) }
    },
    flushAll: async () => { await Promise.all(nodes.map(async (node) => await ask(node, 'FLUSHALL'))) },
    close
  }
}
