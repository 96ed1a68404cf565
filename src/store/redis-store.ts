// Buckets in Redis, shared by every Sluice instance that uses the same Redis and key prefix.
// Each operation is one Lua script (EVALSHA through ioredis defineCommand, reloaded by ioredis on
// NOSCRIPT), and the scripts read the time from Redis, so instances on different hosts agree.
import { parseRedisUrl } from '../config/redis-url'
import { nowMs } from './clock'
import { admittedFromUs, refusalFromUs } from './memory-store'
import { slidingWindowParams, tokenBucketParams, type BucketPeek, type BucketPolicy, type BucketStore, type Reservation, type TeamBoard, type ClientPresence, type LearnedChange, type LearnedRecord, type LimitBooking, type LimitMemory, type LimitRef, type MultiLimitStore, type MultiReservation, type StoreDistance, type GenerationWatch, type StateLossNotice, type WriteProbe } from './bucket-store'
import * as learned from './learned-redis'
import { withLagAwareTimeout } from './lag-aware-timeout'
import type { GenerationArgs, ReserveReply } from './lua-scripts'
import { RedisClock, type ClockOffset } from './redis-clock'
import { RedisAnnouncements } from './redis-announcements'
import { RedisConnection, type SluiceRedis, type TopologyLog } from './redis-connection'
import { redisKeys, type RedisKeys } from './redis-keys'
import { RoundTrips } from './round-trips'

/**
 * The command timeout on the admission path (ms). ioredis's own commandTimeout is a plain timer: on
 * an event loop blocked for longer (a burst of thousands of arrivals) it fires before the reply that
 * already sits in the socket is read, and the route falls back to local shaping for nothing.
 */
const COMMAND_TIMEOUT_MS = 500
/**
 * A distant Redis answers no faster than its round trip: the admission timeout is at least this many
 * of the slowest round trip known (TIME on connection, recent reservations), so a Redis 300 ms away is
 * not taken for a dead one.
 */
const TIMEOUT_ROUND_TRIPS = 3

/** How long a higher live-instance count outlives a lower one (ms). */
const INSTANCE_COUNT_HOLD_MS = 10_000

export interface RedisStoreOptions {
  /** Any form parseRedisUrl takes: redis://, rediss://, redis+cluster://, redis+sentinel://. */
  url: string
  /** Prepended to every key, so teams can share one Redis. */
  keyPrefix: string
  /** A command that takes longer fails, so no request hangs on a dead Redis (ms). */
  commandTimeoutMs?: number
  /** Told once per topology error (a one-server client answered MOVED, CROSSSLOT). */
  log?: TopologyLog
}

export class RedisStore implements BucketStore, TeamBoard, ClientPresence, MultiLimitStore, LimitMemory, StoreDistance, StateLossNotice, WriteProbe {
  readonly kind = 'redis' as const
  private readonly connection: RedisConnection
  private readonly keys: RedisKeys
  private readonly clock = new RedisClock()
  private readonly roundTrips = new RoundTrips()
  private readonly commandTimeoutMs: number
  private readonly announcements: RedisAnnouncements

  constructor (options: RedisStoreOptions) {
    this.connection = new RedisConnection(parseRedisUrl(options.url), {
      // On every (re)connection, before traffic: how Redis's clock differs from ours (another host, or
      // after a failover or a hand-over to a cluster client another server), for the lateness check.
      onReady: async () => { await this.clock.sample(async () => await this.client.time()) },
      log: options.log ?? (() => {})
    })
    this.keys = redisKeys(options.keyPrefix)
    this.announcements = new RedisAnnouncements(this.connection, this.keys)
    this.commandTimeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS
  }

  /** The client in use now (a redis:// URL whose node is a cluster node is served by a Cluster client). */
  get client (): SluiceRedis {
    return this.connection.client
  }

  /** What the store talks to: one server, a cluster, or a Sentinel-guarded primary. */
  get topology (): 'single' | 'cluster' | 'sentinel' {
    return this.connection.kind
  }

  /**
   * Why the store is unusable although Redis may answer (a one-server client that got MOVED, a
   * CROSSSLOT reply), for readiness; undefined otherwise. available() is false while it is set.
   */
  topologyError (): string | undefined {
    return this.connection.topologyError()
  }

  private connecting: Promise<void> | undefined

  clockOffset (): ClockOffset | undefined {
    return this.clock.offset()
  }

  /** The fastest is also the clock's (TIME on connection, then the fastest reservation of up to 30 s). */
  reserveRoundTrips (): { fastestMs: number, medianMs: number } | undefined {
    const now = nowMs()
    const fastestMs = Math.min(this.roundTrips.quantile(now, 0) ?? Infinity, this.clock.offset()?.rttMs ?? Infinity)
    if (fastestMs === Infinity) return undefined
    return { fastestMs, medianMs: this.roundTrips.quantile(now, 0.5) ?? fastestMs }
  }

  /** The admission-path timeout: the configured one, or more for a Redis known to be far away. */
  private admissionTimeoutMs (): number {
    const rtt = Math.max(this.clock.offset()?.rttMs ?? 0, this.roundTrips.quantile(nowMs(), 0.9) ?? 0)
    return Math.max(this.commandTimeoutMs, TIMEOUT_ROUND_TRIPS * rtt)
  }

  /** The first connection (and for redis:// the cluster check); later calls share it. ioredis reconnects by itself afterwards. */
  async connect (): Promise<void> {
    this.connecting ??= this.connection.connect()
    await this.connecting
  }

  async reserve (bucket: string, policy: BucketPolicy, cost: number, maxWaitMs: number, watch?: GenerationWatch): Promise<Reservation> {
    const maxWaitUs = Math.round(maxWaitMs * 1000)
    const key = (part: string): string => this.keys.bucket(bucket, part)
    const generation: GenerationArgs = [watch?.expect === undefined ? '0' : String(watch.expect), Math.round((watch?.gatherMs ?? 0) * 1000), this.keys.pauseChannel, bucket]
    const sentAt = nowMs()
    let reply: ReserveReply
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      const windowUs = (policy.windowMs + policy.marginMs) * 1000
      reply = await withLagAwareTimeout(this.client.sluiceReserveTokenBucket(key('tb'), key('pause'), key('gen'), key('tb-margin'), intervalUs, tauUs, cost, maxWaitUs, windowUs,
        ...generation, Math.round(policy.marginMs * 1000), policy.limit - policy.burst + 1), this.admissionTimeoutMs())
    } else {
      const { windowUs, keep, padUs } = slidingWindowParams(policy)
      reply = await withLagAwareTimeout(this.client.sluiceReserveSlidingWindow(key('sw'), key('pause'), key('sw-floor'), key('gen'), key('sw-margin'), policy.limit, windowUs, cost, maxWaitUs, keep, padUs, ...generation, Math.round(policy.marginMs * 1000)), this.admissionTimeoutMs())
    }
    const [ok, waitUs, remaining, resetUs, ticket, startUs, gen] = reply
    // The script read Redis's clock at the start less the wait (a lost state's reply: at `startUs`).
    const receivedAt = nowMs()
    this.clock.note((ok === 2 ? startUs : startUs - waitUs) / 1000, sentAt, receivedAt)
    this.roundTrips.note(sentAt, receivedAt)
    if (ok === 2) return { ...refusalFromUs(waitUs, 0, startUs + waitUs), generation: gen, stateLost: true }
    const reservation = ok === 1 ? admittedFromUs(waitUs, remaining, resetUs, ticket, startUs) : refusalFromUs(waitUs, resetUs, startUs)
    reservation.generation = gen
    return reservation
  }

  /** reserve-limits.lua: every limit's keys under one hash tag, one round trip. */
  async reserveLimits (bookings: readonly LimitBooking[], pause: LimitRef, maxWaitMs: number): Promise<MultiReservation> {
    const keys: string[] = [this.keys.limit(pause, 'pause')]
    const args: number[] = [bookings.length, Math.round(maxWaitMs * 1000)]
    for (const { ref, policy, cost } of bookings) {
      // Each limit's margin is the team's (the widest booked within its window), as with one limit.
      const marginUs = Math.round(policy.marginMs * 1000)
      if (policy.algorithm === 'token-bucket') {
        const { intervalUs, tauUs } = tokenBucketParams(policy)
        keys.push(this.keys.limit(ref, 'tb'), this.keys.limit(ref, 'sw-floor'), this.keys.limit(ref, 'tb-margin'))
        args.push(1, intervalUs, tauUs, cost, 0, 0, marginUs, policy.limit - policy.burst + 1)
      } else {
        const { windowUs, keep, padUs } = slidingWindowParams(policy)
        keys.push(this.keys.limit(ref, 'sw'), this.keys.limit(ref, 'sw-floor'), this.keys.limit(ref, 'sw-margin'))
        args.push(2, policy.limit, windowUs, cost, keep, padUs, marginUs, 0)
      }
    }
    const sentAt = nowMs()
    const r = await withLagAwareTimeout(this.client.sluiceReserveLimits(keys.length, ...keys, ...args), this.commandTimeoutMs)
    const [ok, waitUs, remaining, resetUs, binding, startUs] = r
    this.clock.note((startUs - waitUs) / 1000, sentAt, nowMs())
    const limits = bookings.map((_, i) => ({ ticket: r[6 + 3 * i], remaining: r[7 + 3 * i], resetMs: r[8 + 3 * i] / 1000 }))
    const base = ok === 1 ? admittedFromUs(waitUs, remaining, resetUs, startUs, startUs) : refusalFromUs(waitUs, resetUs, startUs)
    return { ...base, limits, binding: binding - 1 }
  }

  async releaseLimit (booking: LimitBooking, ticket: number): Promise<boolean> {
    if (ticket === 0) return false
    const t = String(ticket)
    const done = booking.policy.algorithm === 'token-bucket'
      ? await this.client.sluiceReleaseTokenBucket(this.keys.limit(booking.ref, 'tb'), t, tokenBucketParams(booking.policy).intervalUs * booking.cost)
      : await this.client.sluiceReleaseSlidingWindow(this.keys.limit(booking.ref, 'sw'), t, booking.cost)
    return done === 1
  }

  async pauseLimit (ref: LimitRef, bucket: string, delayMs: number): Promise<number> {
    return await this.client.sluicePause(this.keys.limit(ref, 'pause'), Math.round(delayMs * 1000), this.keys.pauseChannel, bucket) / 1000
  }

  async peekLimit (ref: LimitRef, pause: LimitRef, policy: BucketPolicy): Promise<BucketPeek> {
    const reply = policy.algorithm === 'token-bucket'
      ? await this.client.sluicePeekTokenBucket(this.keys.limit(ref, 'tb'), this.keys.limit(pause, 'pause'), tokenBucketParams(policy).intervalUs, tokenBucketParams(policy).tauUs)
      : await this.client.sluicePeekSlidingWindow(this.keys.limit(ref, 'sw'), this.keys.limit(pause, 'pause'), this.keys.limit(ref, 'sw-floor'), policy.limit, slidingWindowParams(policy).windowUs)
    const [remaining, booked, resetUs, pausedUs] = reply
    return { remaining, booked, resetMs: resetUs / 1000, pausedForMs: pausedUs / 1000 }
  }

  /** One limit's starts made without Redis (see recordStarts), with the limit's own generation key. */
  async recordLimitStarts (ref: LimitRef, policy: BucketPolicy, startsMs: number[]): Promise<void> {
    await this.recordIn((part) => this.keys.limit(ref, part), policy, startsMs)
  }

  async release (bucket: string, policy: BucketPolicy, cost: number, ticket: number): Promise<boolean> {
    const t = String(ticket)
    const done = policy.algorithm === 'token-bucket'
      ? await this.client.sluiceReleaseTokenBucket(this.keys.bucket(bucket, 'tb'), t, tokenBucketParams(policy).intervalUs * cost)
      : await this.client.sluiceReleaseSlidingWindow(this.keys.bucket(bucket, 'sw'), t, cost)
    return done === 1
  }

  async pushBack (bucket: string, policy: BucketPolicy, byMs: number): Promise<boolean> {
    if (policy.algorithm !== 'token-bucket') return false
    await withLagAwareTimeout(this.client.sluicePushBackTokenBucket(this.keys.bucket(bucket, 'tb'), Math.round(byMs * 1000), tokenBucketParams(policy).intervalUs), this.admissionTimeoutMs())
    return true
  }

  async postpone (bucket: string, policy: BucketPolicy, cost: number, ticket: number, aheadMs: number): Promise<number | undefined> {
    if (policy.algorithm !== 'sliding-window') return undefined
    const [moved, at] = await withLagAwareTimeout(this.client.sluicePostponeSlidingWindow(this.keys.bucket(bucket, 'sw'), this.keys.bucket(bucket, 'sw-margin'), policy.limit,
      slidingWindowParams(policy).windowUs, cost, String(ticket), Math.round(aheadMs * 1000), Math.round(policy.marginMs * 1000)), this.admissionTimeoutMs())
    return moved === 1 ? at : undefined
  }

  /**
   * Starts made without Redis (epoch ms in this process's clock, oldest first), recorded at their
   * times in Redis's clock, as far as this instance knows the two clocks' difference.
   */
  async recordStarts (bucket: string, policy: BucketPolicy, startsMs: number[]): Promise<void> {
    await this.recordIn((part) => this.keys.bucket(bucket, part), policy, startsMs)
  }

  /** The record scripts on one state's keys (`key(part)`); they keep its generation alive beside it. */
  private async recordIn (key: (part: string) => string, policy: BucketPolicy, startsMs: number[]): Promise<void> {
    const skewMs = this.clock.offset()?.skewMs ?? 0
    const us = startsMs.map((ms) => String(Math.round((ms + skewMs) * 1000)))
    if (policy.algorithm === 'token-bucket') await this.client.sluiceRecordTokenBucket(key('tb'), key('gen'), tokenBucketParams(policy).intervalUs, (policy.windowMs + policy.marginMs) * 1000, ...us)
    else await this.client.sluiceRecordSlidingWindow(key('sw'), key('gen'), slidingWindowParams(policy).windowUs, ...us)
  }

  async pause (bucket: string, delayMs: number): Promise<number> {
    const us = await this.client.sluicePause(this.keys.bucket(bucket, 'pause'), Math.round(delayMs * 1000), this.keys.pauseChannel, bucket)
    return us / 1000
  }

  async peek (bucket: string, policy: BucketPolicy): Promise<BucketPeek> {
    let reply: [number, number, number, number]
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      reply = await this.client.sluicePeekTokenBucket(this.keys.bucket(bucket, 'tb'), this.keys.bucket(bucket, 'pause'), intervalUs, tauUs)
    } else {
      reply = await this.client.sluicePeekSlidingWindow(this.keys.bucket(bucket, 'sw'), this.keys.bucket(bucket, 'pause'), this.keys.bucket(bucket, 'sw-floor'), policy.limit, slidingWindowParams(policy).windowUs)
    }
    const [remaining, booked, resetUs, pausedUs] = reply
    return { remaining, booked, resetMs: resetUs / 1000, pausedForMs: pausedUs / 1000 }
  }

  async heartbeat (id: string, snapshot: string, ttlMs: number): Promise<number> {
    const live = await this.client.sluiceHeartbeat(this.keys.team('live'), this.keys.team('snapshots'), id, snapshot, Math.max(1, Math.round(ttlMs)))
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
    return this.connection.available()
  }

  async liveInstances (): Promise<Map<string, string>> {
    const flat = await this.client.sluiceLiveInstances(this.keys.team('live'), this.keys.team('snapshots'))
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
    return await this.client.sluiceClientPresence(this.keys.bucket(bucket, 'presence'), instance, Math.max(1, Math.round(ttlMs)), ...clients)
  }

  async leave (id: string): Promise<void> {
    await this.client.multi().zrem(this.keys.team('live'), id).hdel(this.keys.team('snapshots'), id).exec()
  }

  async acquireLease (bucket: string, limit: number, leaseId: string, ttlMs: number): Promise<{ acquired: boolean, retryInMs: number }> {
    const [ok, retryInMs] = await withLagAwareTimeout(this.client.sluiceAcquireLease(this.keys.bucket(bucket, 'leases'), limit, leaseId, Math.round(ttlMs)), this.admissionTimeoutMs())
    return { acquired: ok === 1, retryInMs }
  }

  async releaseLease (bucket: string, leaseId: string): Promise<void> {
    await this.client.sluiceReleaseLease(this.keys.bucket(bucket, 'leases'), leaseId, this.keys.leaseChannel, bucket)
  }

  async renewLeases (bucket: string, leaseIds: string[], ttlMs: number): Promise<void> {
    if (leaseIds.length > 0) await this.client.sluiceRenewLeases(this.keys.bucket(bucket, 'leases'), Math.round(ttlMs), ...leaseIds)
  }

  onLeaseFreed (listener: (bucket: string) => void): void { this.announcements.onLeaseFreed(listener) }
  onStateLost (listener: (bucket: string, generation: number) => void): void { this.announcements.onStateLost(listener) }
  onPause (listener: (bucket: string, delayMs: number) => void): void { this.announcements.onPause(listener) }
  onLearned (listener: (bucket: string) => void): void { this.announcements.onLearned(listener) }

  async learnedLimit (bucket: string): Promise<LearnedRecord | undefined> { return await learned.learnedLimit(this.client, this.keys, bucket) }
  async changeLearned (bucket: string, change: LearnedChange, ttlMs: number): Promise<LearnedRecord | undefined> { return await learned.changeLearned(this.client, this.keys, bucket, change, ttlMs) }
  async noteAnswers (bucket: string, answers: ReadonlyArray<{ atMs: number, accepted: boolean }>, keepMs: number): Promise<void> { await learned.noteAnswers(this.client, this.keys, bucket, answers, keepMs) }
  async countAnswers (bucket: string, fromMs: number, toMs: number): Promise<{ accepted: number, rejected: number }> { return await learned.countAnswers(this.client, this.keys, bucket, fromMs, toMs) }

  async ping (): Promise<void> {
    await this.connection.ping()
  }

  /** One short-lived key of the team's: a replica answers READONLY, a full noeviction Redis OOM. */
  async probeWrite (): Promise<void> {
    await this.client.set(this.keys.team('ready'), '1', 'PX', 10_000)
  }

  async close (): Promise<void> {
    await this.connection.close()
  }
}
