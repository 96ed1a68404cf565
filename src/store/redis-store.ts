// Buckets in Redis, shared by every Sluice instance that uses the same Redis and key prefix.
// Each operation is one Lua script (EVALSHA through ioredis defineCommand, reloaded by ioredis on
// NOSCRIPT), and the scripts read the time from Redis, so instances on different hosts agree.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import Redis, { type RedisOptions } from 'ioredis'
import { nowMs } from './clock'
import { admittedFromUs, refusalFromUs } from './memory-store'
import { slidingWindowParams, tokenBucketParams, type BucketPeek, type BucketPolicy, type BucketStore, type Reservation, type TeamBoard, type ClientPresence } from './bucket-store'
import { StoreTimeoutError } from '../errors'

type Reply = [number, number, number, number, number, number]

interface SluiceCommands {
  sluiceReserveTokenBucket (state: string, pause: string, intervalUs: number, tauUs: number, cost: number, maxWaitUs: number): Promise<Reply>
  sluiceReserveSlidingWindow (starts: string, pause: string, floor: string, limit: number, windowUs: number, cost: number, maxWaitUs: number, keep: number, padUs: number): Promise<Reply>
  sluiceReleaseTokenBucket (state: string, ticket: string, backUs: number): Promise<number>
  sluiceReleaseSlidingWindow (starts: string, ticket: string, cost: number): Promise<number>
  sluiceRecordTokenBucket (state: string, intervalUs: number, ...startsUs: string[]): Promise<number>
  sluiceRecordSlidingWindow (starts: string, windowUs: number, ...startsUs: string[]): Promise<number>
  sluicePause (pause: string, delayUs: number, channel: string, bucket: string): Promise<number>
  sluiceAcquireLease (leases: string, limit: number, leaseId: string, ttlMs: number): Promise<[number, number]>
  sluiceReleaseLease (leases: string, leaseId: string, channel: string, bucket: string): Promise<number>
  sluiceRenewLeases (leases: string, ttlMs: number, ...leaseIds: string[]): Promise<number>
  sluicePeekTokenBucket (state: string, pause: string, intervalUs: number, tauUs: number): Promise<[number, number, number, number]>
  sluicePeekSlidingWindow (starts: string, pause: string, floor: string, limit: number, windowUs: number): Promise<[number, number, number, number]>
  sluiceHeartbeat (live: string, snapshots: string, id: string, snapshot: string, ttlMs: number): Promise<number>
  sluiceLiveInstances (live: string, snapshots: string): Promise<Array<string | null>>
  sluiceClientPresence (presence: string, instance: string, ttlMs: number, ...clients: string[]): Promise<number[]>
}

const SCRIPTS: Array<[keyof SluiceCommands, string, number]> = [
  ['sluiceReserveTokenBucket', 'reserve-token-bucket-2.lua', 2],
  ['sluiceReserveSlidingWindow', 'reserve-sliding-window-3.lua', 3],
  ['sluiceReleaseTokenBucket', 'release-token-bucket-1.lua', 1],
  ['sluiceReleaseSlidingWindow', 'release-sliding-window-1.lua', 1],
  ['sluiceRecordTokenBucket', 'record-token-bucket-1.lua', 1],
  ['sluiceRecordSlidingWindow', 'record-sliding-window-1.lua', 1],
  ['sluicePause', 'pause-1.lua', 1],
  ['sluiceAcquireLease', 'acquire-lease-1.lua', 1],
  ['sluiceReleaseLease', 'release-lease-1.lua', 1],
  ['sluiceRenewLeases', 'renew-leases-1.lua', 1],
  ['sluicePeekTokenBucket', 'peek-token-bucket-2.lua', 2],
  ['sluicePeekSlidingWindow', 'peek-sliding-window-3.lua', 3],
  ['sluiceHeartbeat', 'heartbeat-2.lua', 2],
  ['sluiceLiveInstances', 'live-instances-2.lua', 2],
  ['sluiceClientPresence', 'client-presence-1.lua', 1]
]

/**
 * The command timeout on the admission path (ms). ioredis's own commandTimeout is a plain timer: on
 * an event loop blocked for longer (a burst of thousands of arrivals) it fires before the reply that
 * already sits in the socket is read, and the route falls back to local shaping for nothing.
 */
const COMMAND_TIMEOUT_MS = 500
/** ioredis's own timeout stays as a backstop for commands off the admission path (ms). */
const BACKSTOP_TIMEOUT_MS = 5000
/** TIME round trips on each (re)connection to learn Redis's clock. */
const CLOCK_SAMPLES = 3
/** How long the offset from the fastest round trip is kept before any later one replaces it (ms): clocks drift. */
const CLOCK_KEEP_MS = 30_000

/**
 * Reject when `promise` has not settled `ms` after the call, unless the timer itself fired late (the
 * loop was blocked): then the reply may be waiting unread, so the poll phase gets one more turn
 * (setImmediate runs after it) before the command counts as timed out.
 */
export async function withLagAwareTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let settled = false
    const armedAt = performance.now()
    const fail = (): void => {
      if (settled) return
      settled = true
      reject(new StoreTimeoutError(`Redis did not answer within ${ms} ms`))
    }
    const timer = setTimeout(() => {
      if (performance.now() - armedAt > ms * 1.5) setImmediate(fail)
      else fail()
    }, ms)
    promise.then((value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(value)
    }, (err: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(err)
    })
  })
}

/** How long a higher live-instance count outlives a lower one (ms). */
const INSTANCE_COUNT_HOLD_MS = 10_000

export interface RedisStoreOptions {
  url: string
  /** Prepended to every key, so teams can share one Redis. */
  keyPrefix: string
  /** A command that takes longer fails, so no request hangs on a dead Redis (ms). */
  commandTimeoutMs?: number
}

export class RedisStore implements BucketStore, TeamBoard, ClientPresence {
  readonly kind = 'redis' as const
  readonly client: Redis & SluiceCommands
  private readonly prefix: string
  private readonly commandTimeoutMs: number

  constructor (options: RedisStoreOptions) {
    const redisOptions: RedisOptions = {
      lazyConnect: true,
      // Many concurrent reservations share round trips without changing their semantics.
      enableAutoPipelining: true,
      commandTimeout: BACKSTOP_TIMEOUT_MS,
      // Fail at once while disconnected instead of queueing requests behind a dead Redis.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      // Back off from 50 ms to at most 1 s, so shaping returns to Redis within ~1 s of it coming back.
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 5), 1000)
    }
    this.client = new Redis(options.url, redisOptions) as Redis & SluiceCommands
    // Connection errors are reported through ping()/readiness; an unhandled 'error' event would crash.
    this.client.on('error', () => {})
    // On every (re)connection, before traffic: how Redis's clock differs from ours (another host, or
    // after a failover another server), for the limiter's lateness check.
    this.client.on('ready', () => { void this.sampleClock() })
    for (const [name, file, numberOfKeys] of SCRIPTS) {
      this.client.defineCommand(name, { numberOfKeys, lua: readFileSync(join(__dirname, 'lua', file), 'utf8') })
    }
    this.prefix = options.keyPrefix
    this.commandTimeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS
  }

  private connecting: Promise<void> | undefined
  private clock: { skewMs: number, rttMs: number, atMs: number } | undefined

  clockOffset (): { skewMs: number, rttMs: number } | undefined {
    return this.clock
  }

  /**
   * Redis read its clock (`redisMs`) between `sentAt` and `receivedAt` here. Taken as `receivedAt`,
   * the offset is a lower bound: lateness measured with it is never overstated (a distant Redis is
   * not late) and understated by at most the round trip, so the fastest round trip is kept.
   */
  private noteClock (redisMs: number, sentAt: number, receivedAt: number): void {
    const rttMs = receivedAt - sentAt
    const c = this.clock
    if (c !== undefined && rttMs > c.rttMs && receivedAt - c.atMs < CLOCK_KEEP_MS) return
    this.clock = { skewMs: redisMs - receivedAt, rttMs, atMs: receivedAt }
  }

  /** A few TIME round trips, before traffic on a new connection (possibly to another server). */
  private async sampleClock (): Promise<void> {
    this.clock = undefined
    for (let i = 0; i < CLOCK_SAMPLES; i++) {
      try {
        const sentAt = nowMs()
        const [s, us] = await this.client.time()
        this.noteClock(Number(s) * 1000 + Number(us) / 1000, sentAt, nowMs())
      } catch {
        return
      }
    }
  }

  /** The first connection; later calls share it. ioredis reconnects by itself afterwards. */
  async connect (): Promise<void> {
    this.connecting ??= this.client.connect()
    await this.connecting
  }

  /** `{…}` is a hash tag: a bucket's keys stay in one Redis Cluster slot. */
  private key (bucket: string, part: string): string {
    return `${this.prefix}{${bucket}}:${part}`
  }

  async reserve (bucket: string, policy: BucketPolicy, cost: number, maxWaitMs: number): Promise<Reservation> {
    const maxWaitUs = Math.round(maxWaitMs * 1000)
    const sentAt = nowMs()
    let reply: Reply
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      reply = await withLagAwareTimeout(this.client.sluiceReserveTokenBucket(this.key(bucket, 'tb'), this.key(bucket, 'pause'), intervalUs, tauUs, cost, maxWaitUs), this.commandTimeoutMs)
    } else {
      const { windowUs, keep, padUs } = slidingWindowParams(policy)
      reply = await withLagAwareTimeout(this.client.sluiceReserveSlidingWindow(this.key(bucket, 'sw'), this.key(bucket, 'pause'), this.key(bucket, 'sw-floor'), policy.limit, windowUs, cost, maxWaitUs, keep, padUs), this.commandTimeoutMs)
    }
    const [ok, waitUs, remaining, resetUs, ticket, startUs] = reply
    // The script read Redis's clock at the start less the wait.
    this.noteClock((startUs - waitUs) / 1000, sentAt, nowMs())
    return ok === 1 ? admittedFromUs(waitUs, remaining, resetUs, ticket, startUs) : refusalFromUs(waitUs, resetUs, startUs)
  }

  async release (bucket: string, policy: BucketPolicy, cost: number, ticket: number): Promise<boolean> {
    const t = String(ticket)
    const done = policy.algorithm === 'token-bucket'
      ? await this.client.sluiceReleaseTokenBucket(this.key(bucket, 'tb'), t, tokenBucketParams(policy).intervalUs * cost)
      : await this.client.sluiceReleaseSlidingWindow(this.key(bucket, 'sw'), t, cost)
    return done === 1
  }

  /**
   * Starts made without Redis (epoch ms in this process's clock, oldest first), recorded at their
   * times in Redis's clock, as far as this instance knows the two clocks' difference.
   */
  async recordStarts (bucket: string, policy: BucketPolicy, startsMs: number[]): Promise<void> {
    const skewMs = this.clock?.skewMs ?? 0
    const us = startsMs.map((ms) => String(Math.round((ms + skewMs) * 1000)))
    if (policy.algorithm === 'token-bucket') await this.client.sluiceRecordTokenBucket(this.key(bucket, 'tb'), tokenBucketParams(policy).intervalUs, ...us)
    else await this.client.sluiceRecordSlidingWindow(this.key(bucket, 'sw'), slidingWindowParams(policy).windowUs, ...us)
  }

  async pause (bucket: string, delayMs: number): Promise<number> {
    const us = await this.client.sluicePause(this.key(bucket, 'pause'), Math.round(delayMs * 1000), this.pauseChannel(), bucket)
    return us / 1000
  }

  async peek (bucket: string, policy: BucketPolicy): Promise<BucketPeek> {
    let reply: [number, number, number, number]
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      reply = await this.client.sluicePeekTokenBucket(this.key(bucket, 'tb'), this.key(bucket, 'pause'), intervalUs, tauUs)
    } else {
      reply = await this.client.sluicePeekSlidingWindow(this.key(bucket, 'sw'), this.key(bucket, 'pause'), this.key(bucket, 'sw-floor'), policy.limit, slidingWindowParams(policy).windowUs)
    }
    const [remaining, booked, resetUs, pausedUs] = reply
    return { remaining, booked, resetMs: resetUs / 1000, pausedForMs: pausedUs / 1000 }
  }

  /** The team's heartbeat keys share one hash tag, so both scripts stay in one Redis Cluster slot. */
  private teamKey (part: string): string {
    return `${this.prefix}{instances}:${part}`
  }

  async heartbeat (id: string, snapshot: string, ttlMs: number): Promise<number> {
    const live = await this.client.sluiceHeartbeat(this.teamKey('live'), this.teamKey('snapshots'), id, snapshot, Math.max(1, Math.round(ttlMs)))
    // Remembered for the outage fallback: each instance then shapes with 1/live of the budget. A lower
    // count is believed only after INSTANCE_COUNT_HOLD_MS: just after a Redis restart the first
    // heartbeats see only themselves, and believing that would hand each instance the whole budget.
    const now = Date.now()
    if (live >= this.instanceHigh || now - this.instanceHighAt > INSTANCE_COUNT_HOLD_MS) {
      this.instanceHigh = Math.max(1, live)
      this.instanceHighAt = now
    }
    return live
  }

  private instanceHigh = 1
  private instanceHighAt = 0

  instanceCount (): number {
    return this.instanceHigh
  }

  available (): boolean {
    return this.client.status === 'ready'
  }

  async liveInstances (): Promise<Map<string, string>> {
    const flat = await this.client.sluiceLiveInstances(this.teamKey('live'), this.teamKey('snapshots'))
    const live = new Map<string, string>()
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const id = flat[i]
      const snapshot = flat[i + 1]
      if (id !== null && snapshot !== null) live.set(id, snapshot)
    }
    return live
  }

  async clientPresence (bucket: string, instance: string, clients: string[], ttlMs: number): Promise<number[]> {
    if (clients.length === 0) return []
    return await this.client.sluiceClientPresence(this.key(bucket, 'presence'), instance, Math.max(1, Math.round(ttlMs)), ...clients)
  }

  async leave (id: string): Promise<void> {
    await this.client.multi().zrem(this.teamKey('live'), id).hdel(this.teamKey('snapshots'), id).exec()
  }

  async acquireLease (bucket: string, limit: number, leaseId: string, ttlMs: number): Promise<{ acquired: boolean, retryInMs: number }> {
    const [ok, retryInMs] = await withLagAwareTimeout(this.client.sluiceAcquireLease(this.key(bucket, 'leases'), limit, leaseId, Math.round(ttlMs)), this.commandTimeoutMs)
    return { acquired: ok === 1, retryInMs }
  }

  async releaseLease (bucket: string, leaseId: string): Promise<void> {
    await this.client.sluiceReleaseLease(this.key(bucket, 'leases'), leaseId, this.leaseChannel(), bucket)
  }

  async renewLeases (bucket: string, leaseIds: string[], ttlMs: number): Promise<void> {
    if (leaseIds.length > 0) await this.client.sluiceRenewLeases(this.key(bucket, 'leases'), Math.round(ttlMs), ...leaseIds)
  }

  private subscriber: Redis | undefined
  private readonly leaseListeners: Array<(bucket: string) => void> = []

  private readonly pauseListeners: Array<(bucket: string, delayMs: number) => void> = []

  private leaseChannel (): string {
    return `${this.prefix}lease-freed`
  }

  private pauseChannel (): string {
    return `${this.prefix}paused`
  }

  /** One subscriber connection per instance, for both channels; ioredis subscribes again after a reconnect. */
  private subscribe (): void {
    if (this.subscriber !== undefined) return
    const sub = this.client.duplicate({ lazyConnect: false, enableOfflineQueue: true, commandTimeout: undefined })
    sub.on('error', () => {})
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.leaseChannel()) {
        for (const l of this.leaseListeners) l(message)
        return
      }
      const bar = message.lastIndexOf('|')
      const delayMs = Number(message.slice(bar + 1)) / 1000
      if (bar > 0 && Number.isFinite(delayMs)) for (const l of this.pauseListeners) l(message.slice(0, bar), delayMs)
    })
    sub.subscribe(this.leaseChannel(), this.pauseChannel()).catch(() => {})
    this.subscriber = sub
  }

  onLeaseFreed (listener: (bucket: string) => void): void {
    this.leaseListeners.push(listener)
    this.subscribe()
  }

  onPause (listener: (bucket: string, delayMs: number) => void): void {
    this.pauseListeners.push(listener)
    this.subscribe()
  }

  async ping (): Promise<void> {
    await this.client.ping()
  }

  async close (): Promise<void> {
    this.subscriber?.disconnect()
    try {
      await this.client.quit()
    } catch {
      this.client.disconnect()
    }
  }
}
