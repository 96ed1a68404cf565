// A real Redis primary, one replica and one Sentinel (quorum 1) on free loopback ports, each in its own
// temporary directory. Ready once the replica's link is up and the Sentinel knows the master and the
// replica (a failover needs both). Short down-after and failover timeouts, so a killed primary is
// replaced in seconds. Skip a test with `missingRedisBinaries()` where redis-server or redis-cli is absent.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Redis, { type RedisOptions } from 'ioredis'
import { ask, dataNodeArgs, freePorts, startRedisNode, topology, until, type HostPort, type RedisNode } from './redis-node'

export interface RedisSentinelOptions {
  /** The master's name in the Sentinel. Default 'sluice'. */
  name?: string
  /** down-after-milliseconds: how long the master may not answer before it is down. Default 1000. */
  downAfterMs?: number
  /** failover-timeout (ms). Default 2000. */
  failoverTimeoutMs?: number
}

export interface TestRedisSentinel {
  name: string
  /** Where a Sentinel client starts. */
  sentinels: HostPort[]
  /** The data nodes: the first started as primary, the second as its replica. */
  nodes: RedisNode[]
  /** The master's address as the Sentinel names it now. */
  master: () => Promise<HostPort>
  /** An ioredis client through the Sentinel (`{ sentinels, name }`), disconnected by `close`. */
  client: (options?: RedisOptions) => Redis
  /** SIGKILL the node that is master now; returns its address. */
  killPrimary: () => Promise<HostPort>
  /** Until the Sentinel names a master other than `old` and that node says it is one; returns it. */
  waitForPromotion: (old: HostPort, timeoutMs?: number) => Promise<HostPort>
  /** FLUSHALL on the master (the replica follows). */
  flushAll: () => Promise<void>
  /** Disconnect the clients, kill every process, remove the directories. */
  close: () => Promise<void>
}

function nodeDir (root: string, name: string): string {
  const dir = join(root, name)
  mkdirSync(dir)
  return dir
}

export async function startRedisSentinel (options: RedisSentinelOptions = {}): Promise<TestRedisSentinel> {
  const name = options.name ?? 'sluice'
  const { dir, nodes: processes, track, close } = topology<Redis>('sluice-sentinel-')
  let sentinel: HostPort
  try {
    const [primaryPort, replicaPort, sentinelPort] = await freePorts(3)
    // Diskless replication without its default 5 s wait for more replicas: the replica syncs at once.
    const sync = ['--repl-diskless-sync', 'yes', '--repl-diskless-sync-delay', '0']
    const primaryDir = nodeDir(dir, 'primary')
    processes.push(await startRedisNode(primaryPort, primaryDir, [...dataNodeArgs(primaryPort, primaryDir), ...sync]))
    const replicaDir = nodeDir(dir, 'replica')
    processes.push(await startRedisNode(replicaPort, replicaDir, [...dataNodeArgs(replicaPort, replicaDir), ...sync, '--replicaof', '127.0.0.1', String(primaryPort)]))
    const [primary, replica] = processes
    await until('the replica in sync with the primary', 10_000, async () => String(await ask(replica, 'INFO', 'replication')).includes('master_link_status:up') ? true : undefined)
    // The Sentinel starts after the replica is attached: it learns replicas from the master's INFO,
    // which it asks for only every 10 s once connected.
    const sentinelDir = nodeDir(dir, 'sentinel')
    const conf = join(sentinelDir, 'sentinel.conf')
    writeFileSync(conf, [
      `port ${sentinelPort}`,
      'bind 127.0.0.1',
      `dir ${sentinelDir}`,
      `logfile ${join(sentinelDir, 'redis.log')}`,
      `sentinel monitor ${name} 127.0.0.1 ${primary.port} 1`,
      `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1000}`,
      `sentinel failover-timeout ${name} ${options.failoverTimeoutMs ?? 2000}`,
      `sentinel parallel-syncs ${name} 1`,
      ''
    ].join('\n'))
    processes.push(await startRedisNode(sentinelPort, sentinelDir, [conf, '--sentinel']))
    sentinel = { host: '127.0.0.1', port: sentinelPort }
    await until(`the Sentinel knowing master ${name} and its replica`, 15_000, async () => {
      const addr = await ask(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name) as string[] | null
      const replicas = await ask(sentinel, 'SENTINEL', 'REPLICAS', name) as unknown[]
      return addr !== null && Number(addr[1]) === primary.port && replicas.length > 0 ? true : undefined
    })
  } catch (err) {
    await close()
    throw err
  }
  const nodes = processes.slice(0, 2)
  const master = async (): Promise<HostPort> => {
    const [host, port] = await ask(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name) as [string, string]
    return { host, port: Number(port) }
  }
  return {
    name,
    sentinels: [sentinel],
    nodes,
    master,
    client: (clientOptions) => track(new Redis({ ...clientOptions, sentinels: [sentinel], name })),
    killPrimary: async () => {
      const current = await master()
      const node = nodes.find((n) => n.port === current.port)
      if (node === undefined) throw new Error(`the master ${current.host}:${current.port} is not one of this topology's nodes`)
      await node.kill()
      return current
    },
    waitForPromotion: async (old, timeoutMs = 15_000) => await until(`a master other than ${old.host}:${old.port}`, timeoutMs, async () => {
      const now = await master()
      if (now.port === old.port) return undefined
      const role = await ask(now, 'ROLE') as [string, ...unknown[]]
      return role[0] === 'master' ? now : undefined
    }),
    flushAll: async () => { await ask(await master(), 'FLUSHALL') },
    close
  }
}
