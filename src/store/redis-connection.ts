// Which Redis deployment the store talks to, decided in one place: one server, a Redis Cluster (from
// redis+cluster:// seeds, or found behind a redis:// node when it becomes ready), or a primary guarded
// by Sentinels. Every client has the same failure semantics: no offline queue, one retry, a reconnect
// backoff of at most 1 s, so no request waits behind a Redis that is gone (onStoreError covers it).
import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis'
import { maskRedisUrl, type RedisTopology } from '../config/redis-url'
import { defineSluiceCommands, SCRIPTS, type SluiceCommands } from './lua-scripts'

export type SluiceRedis = (Redis | Cluster) & SluiceCommands

/** Told once per distinct topology error (a MOVED reply to a one-server client, CROSSSLOT). */
export type TopologyLog = (fields: Record<string, unknown>, message: string) => void

/** ioredis's own timeout stays as a backstop for commands off the admission path (ms). */
const BACKSTOP_TIMEOUT_MS = 5000
/** A Sentinel that does not answer a lookup within this is skipped for the next one (ms). */
const SENTINEL_COMMAND_TIMEOUT_MS = 1000

/** Back off from 50 ms to at most 1 s, so shaping returns to Redis within ~1 s of it coming back. */
function backoff (times: number): number {
  return Math.min(50 * 2 ** Math.min(times, 5), 1000)
}

/** What every data-node connection shares, whatever the topology. */
function nodeOptions (): RedisOptions {
  return {
    lazyConnect: true,
    // Many concurrent reservations share round trips without changing their semantics.
    enableAutoPipelining: true,
    commandTimeout: BACKSTOP_TIMEOUT_MS,
    // Fail at once while disconnected instead of queueing requests behind a dead Redis.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: backoff,
    // A primary demoted to replica refuses writes (READONLY): see RedisConnection.readOnlyReply.
  }
}

/** After a READONLY reply, the connection is made again this long later, and at most this often (ms). */
const READONLY_RECONNECT_MS = 5_000

interface Credentials {
  username?: string | undefined
  password?: string | undefined
  tls?: RedisOptions['tls'] | undefined
}

function clusterOptions (credentials: Credentials): ClusterOptions {
  const { retryStrategy: _retry, enableOfflineQueue: _queue, lazyConnect: _lazy, ...node } = nodeOptions()
  return {
    lazyConnect: true,
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: backoff,
    slotsRefreshTimeout: 1000,
    // TLS checks the certificate against the name the node was reached by: keep names, not IPs.
    ...(credentials.tls === undefined ? {} : { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) }),
    redisOptions: { ...node, username: credentials.username, password: credentials.password, tls: credentials.tls }
  }
}

/** A client of `topology`, not connected yet. */
export function openClient (topology: RedisTopology): Redis | Cluster {
  const tls = topology.tls ? {} : undefined
  if (topology.kind === 'single') return new Redis(topology.url, nodeOptions())
  if (topology.kind === 'cluster') return new Cluster(topology.nodes, clusterOptions({ username: topology.username, password: topology.password, tls }))
  return new Redis({
    ...nodeOptions(),
    sentinels: topology.sentinels,
    name: topology.name,
    role: 'master',
    db: topology.db,
    username: topology.username,
    password: topology.password,
    sentinelUsername: topology.sentinelUsername,
    sentinelPassword: topology.sentinelPassword,
    sentinelCommandTimeout: SENTINEL_COMMAND_TIMEOUT_MS,
    // rediss+sentinel: TLS to the Sentinels and to the primary they name.
    tls,
    sentinelTLS: tls,
    enableTLSForSentinelMode: topology.tls,
    // Subscribed to +switch-master on the Sentinels: a failover reconnects at once, not on the next error.
    failoverDetector: true
  })
}

/** A cluster client seeded with the node `single` talks to, with its credentials and TLS. */
function clusterBehind (single: Redis): Cluster {
  const { host, port, username, password, tls } = single.options
  return new Cluster([{ host, port }], clusterOptions({ username, password, tls }))
}

/** A subscriber connection alongside `client`: queues SUBSCRIBE until connected and subscribes again after a reconnect. */
function openSubscriber (client: Redis | Cluster): Redis | Cluster {
  if (client instanceof Cluster) {
    const redisOptions = { ...client.options.redisOptions, commandTimeout: undefined, maxRetriesPerRequest: null }
    return client.duplicate([], { lazyConnect: false, enableOfflineQueue: true, redisOptions })
  }
  return client.duplicate({ lazyConnect: false, enableOfflineQueue: true, commandTimeout: undefined, maxRetriesPerRequest: null })
}

export interface ConnectionHooks {
  /**
   * Runs on every (re)connection of the client in use (the store samples Redis's clock); the first
   * connect() resolves after it, so the first commands do not queue behind its round trips.
   */
  onReady: () => Promise<void>
  log: TopologyLog
}

/**
 * The client in use and what its topology needs: for redis:// the cluster check on each connection
 * (`INFO cluster`; a cluster node hands over to a Cluster client seeded with it), and the watch for
 * replies that say the topology is not what the client assumes.
 */
export class RedisConnection {
  private current: SluiceRedis
  private readonly topology: RedisTopology
  private readonly hooks: ConnectionHooks
  /**
   * False for a one-server client until the first `INFO cluster` said what it is. Later connections
   * are checked too, without holding traffic back for the round trip: a node that became a cluster
   * node meanwhile is found by the check or by the first MOVED reply.
   */
  private checked: boolean
  /** The last connection's onReady and, for redis://, its cluster check. */
  private settling: Promise<unknown> | undefined
  private upgrading: Promise<void> | undefined
  private fault: string | undefined
  private readonly logged = new Set<string>()
  private subscriber: Redis | Cluster | undefined
  private subscription: { channels: string[], listener: (channel: string, message: string) => void } | undefined
  private closed = false

  constructor (topology: RedisTopology, hooks: ConnectionHooks) {
    this.topology = topology
    this.hooks = hooks
    this.checked = topology.kind !== 'single'
    this.current = this.adopt(openClient(topology))
  }

  get client (): SluiceRedis {
    return this.current
  }

  /** What the client talks to now: a redis:// URL is 'cluster' once its node turned out to be one. */
  get kind (): 'single' | 'cluster' | 'sentinel' {
    if (this.current instanceof Cluster) return 'cluster'
    return this.topology.kind === 'sentinel' ? 'sentinel' : 'single'
  }

  /** Ready for traffic: connected, its topology known, no topology error. */
  available (): boolean {
    return this.current.status === 'ready' && this.checked && this.fault === undefined
  }

  /** Why the store cannot be used although Redis answers (undefined when there is no such reason). */
  topologyError (): string | undefined {
    return this.fault
  }

  /** The first connection, and for redis:// the cluster check (and the hand-over to a Cluster client). */
  async connect (): Promise<void> {
    await this.current.connect()
    await this.settling
    await this.upgrading
  }

  async ping (): Promise<void> {
    if (this.fault !== undefined) throw new Error(this.fault)
    await this.current.ping()
  }

  /** One subscriber for `channels`, moved along when the client is replaced. */
  subscribe (channels: string[], listener: (channel: string, message: string) => void): void {
    this.subscription = { channels, listener }
    this.subscriber?.disconnect()
    const sub = openSubscriber(this.current)
    sub.on('error', () => {})
    sub.on('message', listener)
    sub.subscribe(...channels).catch(() => {})
    this.subscriber = sub
  }

  async close (): Promise<void> {
    this.closed = true
    this.subscriber?.disconnect()
    try {
      await this.current.quit()
    } catch {}
    // Also after QUIT: a Sentinel client's failover detector holds connections to the Sentinels until then.
    this.current.disconnect()
  }

  private adopt (raw: Redis | Cluster): SluiceRedis {
    const client = defineSluiceCommands(raw)
    // Connection errors are reported through ping()/readiness; an unhandled 'error' event would crash.
    client.on('error', () => {})
    client.on('ready', () => {
      if (client !== this.current) return
      const checked = client instanceof Redis && this.topology.kind === 'single' ? this.check(client) : undefined
      this.settling = Promise.all([this.hooks.onReady(), checked])
    })
    this.watchReplies(client)
    return client
  }

  /** `INFO cluster` on a redis:// node: a cluster node hands over to a Cluster client seeded with it. */
  private async check (node: Redis): Promise<void> {
    let info = ''
    try {
      info = await node.info('cluster')
    } catch {
      // INFO refused (an ACL) or the connection gone: taken as one server; a MOVED reply would say otherwise.
    }
    if (node !== this.current) return
    if (!/^cluster_enabled:1\s*$/m.test(info)) {
      this.checked = true
      return
    }
    this.fault ??= `Redis at ${maskRedisUrl(this.url())} is a Redis Cluster node: connecting to the cluster`
    await this.upgrade(node)
  }

  /** Replace the one-server client with a Cluster client once that is ready; until then the store is not available. */
  private async upgrade (node: Redis): Promise<void> {
    if (this.upgrading !== undefined) return await this.upgrading
    const cluster = this.adopt(clusterBehind(node))
    this.upgrading = new Promise<void>((resolve) => {
      cluster.once('ready', () => {
        if (!this.closed) return resolve(this.replaceWith(cluster))
        cluster.disconnect()
        resolve()
      })
    })
    cluster.connect().catch(() => {})
    await this.upgrading
  }

  private async replaceWith (next: SluiceRedis): Promise<void> {
    const old = this.current
    this.current = next
    this.checked = true
    this.fault = undefined
    old.disconnect()
    if (this.subscription !== undefined) this.subscribe(this.subscription.channels, this.subscription.listener)
    await this.hooks.onReady()
  }

  /**
   * A MOVED or ASK reply means a one-server client talks to a cluster node (the check could not run
   * or was refused): the store is unavailable, said once, and a Cluster client takes over. CROSSSLOT
   * means one script's keys are in different slots (a key prefix with an empty hash tag `{}`).
   */
  private readonlyTimer: NodeJS.Timeout | undefined

  /**
   * A primary demoted to replica behind one address (a managed endpoint's DNS name after a failover)
   * refuses writes: the client connects again READONLY_RECONNECT_MS after the first such reply, and
   * at most that often, so the name resolves to the new primary. An address that is a replica for good
   * keeps answering READONLY in between, which is what readiness and the mode log then say.
   */
  private readOnlyReply (client: SluiceRedis): void {
    if (this.readonlyTimer !== undefined || client !== this.current) return
    this.readonlyTimer = setTimeout(() => {
      if (client === this.current && client.status === 'ready') client.disconnect(true)
      this.readonlyTimer = setTimeout(() => { this.readonlyTimer = undefined }, READONLY_RECONNECT_MS)
      this.readonlyTimer.unref()
    }, READONLY_RECONNECT_MS)
    this.readonlyTimer.unref()
  }

  private watchReplies (client: SluiceRedis): void {
    const watch = (err: unknown): never => {
      this.noteReply(client, err)
      throw err
    }
    for (const [name] of SCRIPTS) {
      const command = client[name] as (this: unknown, ...args: unknown[]) => unknown
      // A pipeline (auto-pipelining included) copies the client's script functions and calls them on
      // itself: there the original queues the command, and its reply reaches the client's call.
      Object.assign(client, {
        [name]: function (this: unknown, ...args: unknown[]): unknown {
          const result = command.apply(this, args)
          return this === client ? (result as Promise<unknown>).catch(watch) : result
        }
      })
    }
  }

  private noteReply (client: SluiceRedis, err: unknown): void {
    const message = err instanceof Error ? err.message : ''
    if (message.startsWith('READONLY')) this.readOnlyReply(client)
    const word = /^(MOVED|ASK|CROSSSLOT)\b/.exec(message)?.[1]
    if (word === undefined || client !== this.current) return
    if (word === 'CROSSSLOT') {
      this.report('Redis Cluster refused a script whose keys are in different slots (CROSSSLOT): a keyPrefix with an empty hash tag "{}" splits a bucket\'s keys; remove the braces from keyPrefix', word)
    } else if (client instanceof Redis && this.topology.kind === 'single') {
      this.report(`Redis at ${maskRedisUrl(this.url())} answered ${word}: it is a Redis Cluster node, but the cluster check at connect did not say so (INFO refused?); switching to a cluster client`, word)
      void this.upgrade(client)
    }
  }

  private url (): string {
    return this.topology.kind === 'single' ? this.topology.url : this.topology.kind
  }

  private report (fault: string, reply: string): void {
    this.fault = fault
    if (this.logged.has(fault)) return
    this.logged.add(fault)
    this.hooks.log({ reply, topology: this.kind }, fault)
  }
}
