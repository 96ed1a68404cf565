// Everything Sluice tells about its budget: Prometheus metrics, the team-wide status, the live
// dashboard's events. The request path calls three hooks (admitted, finished, retry); the store is
// wrapped to time its commands and notice pauses; a one-second heartbeat publishes this instance's
// figures to the shared store and reads everyone else's. Nothing here is on the admission path
// except a few counter increments.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import type { RouteConfig, SluiceConfig } from '../config/schema'
import type { Admission, RouteLimiter } from '../limiter/route-limiter'
import { isShadowAdmission } from '../limiter/shadow-limiter'
import { isTeamBoard, type BucketPeek, type BucketStore } from '../store/bucket-store'
import { SERIES_S } from './activity'
import { BucketTracker, type QueueSource } from './bucket-tracker'
import { EventHub } from './event-stream'
import { HISTORY_S, History } from './history'
import { admissionEvents } from './admission-events'
import { SluiceMetrics } from './metrics'
import { bucketStatus, parseSnapshot, teamSeries, type ClientUsage, type InstanceSnapshot, type SluiceStatus } from './status'
import { timedStore } from './timed-store'

export interface ObserverOptions {
  /** How often this instance publishes its figures and reads the team's, ms. Default 1000. */
  heartbeatMs?: number
  /** An instance whose heartbeat is older than this is gone, ms. Default 5000. */
  instanceTtlMs?: number
  /**
   * Queues in front of the limiters (fair-scheduler.ts), by route: a request held there waits too.
   * Read lazily, so the map may be filled after the observer is made.
   */
  schedulers?: Map<string, QueueSource>
}

/**
 * Buckets read from the store per status, the most recently used first (one read-only script each;
 * with key: header:… there may be hundreds of buckets): the others show remaining as unknown (null).
 */
const MAX_PEEKS = 50
/** Seconds of chart points each tick re-sends (a heartbeat that came late corrects them). */
const TICK_POINTS_S = 15

/** What the observer reads of a request (http/request-state.ts fills it): its route, bucket, client and how it ended. */
export interface ObservedRequest {
  route: RouteConfig
  bucket: string | undefined
  client?: string
  outcome: string
  code?: string
  upstreamStatus?: number
}

export class Observer {
  readonly id = randomUUID()
  readonly metrics: SluiceMetrics
  private readonly store: BucketStore
  private readonly limiters: Map<string, RouteLimiter>
  private readonly logger: Logger
  private readonly routes = new Map<string, RouteConfig>()
  private readonly tracker: BucketTracker
  private readonly admittedStates = new WeakSet<ObservedRequest>()
  private readonly countedStates = new WeakSet<ObservedRequest>()
  private readonly history = new History()
  readonly events = new EventHub()
  private readonly heartbeatMs: number
  private readonly instanceTtlMs: number
  private readonly schedulers: Map<string, QueueSource>
  private readonly startedAt = new Date().toISOString()
  private timer: NodeJS.Timeout | undefined
  private ticking = false
  private closed = false
  private liveCount = 1
  private last: SluiceStatus | undefined

  constructor (config: SluiceConfig, store: BucketStore, limiters: Map<string, RouteLimiter>, logger: Logger, options: ObserverOptions = {}) {
    this.store = store
    this.limiters = limiters
    this.logger = logger
    this.heartbeatMs = options.heartbeatMs ?? 1000
    this.instanceTtlMs = options.instanceTtlMs ?? 5000
    this.schedulers = options.schedulers ?? new Map()
    for (const r of config.routes) this.routes.set(r.name, r)
    this.tracker = new BucketTracker(this.routes, limiters, this.schedulers)
    this.metrics = new SluiceMetrics(config.routes.map((r) => ({ name: r.name, limit: r.limit.count, windowS: r.limit.windowMs / 1000 })), {
      buckets: () => this.tracker.figures(),
      inFlight: () => this.tracker.inFlightByRoute(),
      liveInstances: () => this.liveCount,
      storeModes: () => config.routes.map((r) => ({ route: r.name, mode: this.storeModeOf(r.name) })),
      admissionEvents: () => admissionEvents(this.routes.keys(), this.limiters, this.schedulers),
      limits: () => [...this.limiters.entries()].map(([route, l]) => ({ route, ...l.limits.view(), windowS: l.policy.windowMs / 1000, limit: l.policy.limit }))
    })
    for (const r of config.routes) {
      // A budget per route is known from the start; per-credential buckets appear when first used.
      if (r.key.kind === 'instance') this.tracker.of(r, r.name)
    }
  }

  /** The store as the limiters should see it: every command timed, every pause noticed. */
  timed (store: BucketStore): BucketStore {
    return timedStore(store, this.metrics, (bucket, ms) => this.paused(bucket, ms))
  }

  /** A request got its slot (or, on a shadow route, its verdict) and is about to be forwarded. */
  admitted (state: ObservedRequest, admission: Admission, reply: FastifyReply): void {
    if (this.admittedStates.has(state)) return
    this.admittedStates.add(state)
    const route = state.route
    const act = this.tracker.of(route, admission.bucket)
    act.tokensRemaining = admission.reservation.remaining
    act.count('forwarded')
    this.metrics.wait.observe({ route: route.name }, admission.waitedMs / 1000)
    if (state.client !== undefined) this.metrics.clientWait.inc({ route: route.name, client: state.client }, admission.waitedMs / 1000)
    act.recordWait(admission.waitedMs)
    if (isShadowAdmission(admission)) {
      const v = admission.shadow
      if (v.code !== undefined) {
        this.metrics.shadow.inc({ route: route.name, verdict: 'would_reject', code: v.code })
        act.count('wouldReject')
      } else {
        this.metrics.shadowWait.observe({ route: route.name }, v.wouldWaitMs / 1000)
        if (v.wouldWaitMs > 0) {
          this.metrics.shadow.inc({ route: route.name, verdict: 'would_delay', code: '' })
          act.count('wouldDelay')
        }
      }
    }
    act.inFlight++
    // 'close' comes once for every response, also when the client leaves mid-body.
    reply.raw.once('close', () => { act.inFlight-- })
  }

  /** A routed request ended (from the onResponse hook, and where a waiting client left). */
  finished (state: ObservedRequest | undefined, _status: number): void {
    if (state === undefined || state.outcome === 'admin' || state.outcome === 'unrouted' || state.route === undefined) return
    if (this.countedStates.has(state)) return
    this.countedStates.add(state)
    const route = state.route.name
    if (state.client !== undefined) {
      const outcome = this.admittedStates.has(state) ? 'forwarded' : state.outcome === 'cancelled' ? 'cancelled' : 'rejected'
      this.metrics.clientRequests.inc({ route, client: state.client, outcome })
    }
    if (this.admittedStates.has(state)) {
      this.metrics.requests.inc({ route, outcome: 'forwarded', code: state.code ?? '' })
    } else if (state.outcome === 'cancelled') {
      this.metrics.requests.inc({ route, outcome: 'cancelled', code: '' })
    } else {
      this.metrics.requests.inc({ route, outcome: 'rejected', code: state.code ?? 'UNKNOWN' })
      if (state.bucket !== undefined) this.tracker.of(state.route, state.bucket).count('rejected')
    }
    if (state.upstreamStatus !== undefined) {
      this.metrics.upstreamResponses.inc({ route, class: `${Math.floor(state.upstreamStatus / 100)}xx` })
    }
  }

  /** Sluice sent a request to the upstream again, after pushback or a transient failure (`reason`). */
  retry (route: string, reason: string): void {
    this.metrics.retries.inc({ route, reason })
  }

  /** Where a route makes its reservations now (redis, memory; local, open or closed during an outage). */
  storeModeOf (route: string): string {
    return this.limiters.get(route)?.storeMode ?? this.store.kind
  }

  /** A bucket was paused after upstream pushback, for `ms` from now. */
  paused (bucket: string, ms: number): void {
    const route = this.routes.get(bucket.split(':')[0])
    if (route === undefined) return
    this.metrics.pauses.inc({ route: route.name })
    const act = this.tracker.of(route, bucket)
    act.pausedUntilMs = Math.max(act.pausedUntilMs, Date.now() + ms)
  }

  start (): void {
    if (this.timer !== undefined || this.closed) return
    this.timer = setInterval(() => { void this.tick() }, this.heartbeatMs)
    this.timer.unref()
    void this.tick()
  }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.timer)
    this.events.closeAll()
    if (isTeamBoard(this.store)) await this.store.leave(this.id).catch(() => {})
  }

  /**
   * The team-wide status, fresh: this instance's heartbeat first, then everyone's, then the store.
   * `peek: false` skips reading the buckets from the store (the heartbeat alone, when nobody watches).
   */
  async status (options: { peek?: boolean } = {}): Promise<SluiceStatus> {
    const now = Date.now()
    this.tracker.forgetIdle(now)
    const { snapshots, reachable } = await this.heartbeat(this.snapshot(now))
    const names = new Set<string>(this.tracker.buckets())
    for (const snap of snapshots) for (const [bucket, b] of Object.entries(snap.buckets)) if (this.routes.has(b.r)) names.add(bucket)
    const buckets = [...names].sort()
    const peeks = reachable && options.peek !== false ? await this.peek(buckets, names, snapshots) : []
    const rows = []
    for (let i = 0; i < buckets.length; i++) {
      const bucket = buckets[i]
      const route = this.tracker.routeOf(bucket, snapshots)
      if (route === undefined) continue
      const act = this.tracker.get(bucket)
      const limiter = this.limiters.get(route.name)
      const policy = limiter?.policy
      rows.push(bucketStatus({
        route,
        bucket,
        limit: policy?.limit ?? route.limit.count,
        windowMs: policy?.windowMs ?? route.limit.windowMs,
        ...(limiter === undefined ? {} : { sources: limiter.limits.view() }),
        storeMode: this.storeModeOf(route.name),
        waitMs: act?.waitPercentiles(now) ?? { p50: 0, p90: 0, p99: 0, count: 0 },
        requestsLastMinute: act === undefined ? 0 : act.series(now).reduce((n, s) => n + s[1], 0)
      }, snapshots, this.id, peeks[i], now))
    }
    const nowS = Math.floor(now / 1000)
    for (const bucket of buckets) this.history.update(bucket, teamSeries(snapshots, bucket), nowS - SERIES_S + 1, nowS)
    this.history.forget(new Set(buckets))
    const status: SluiceStatus = {
      generatedAt: new Date(now).toISOString(),
      instance: { id: this.id, store: this.store.kind, storeReachable: reachable },
      instances: snapshots.map((s) => ({ id: s.id, host: s.host, pid: s.pid, startedAt: s.startedAt })),
      buckets: rows,
      clients: this.clientUsage()
    }
    this.last = status
    return status
  }

  /** Publish this instance's heartbeat and read everyone's: the live instances' snapshots, own first. */
  private async heartbeat (own: InstanceSnapshot): Promise<{ snapshots: InstanceSnapshot[], reachable: boolean }> {
    const board = isTeamBoard(this.store) ? this.store : undefined
    if (board === undefined) return { snapshots: [own], reachable: true }
    try {
      this.liveCount = await board.heartbeat(this.id, JSON.stringify(own), this.instanceTtlMs)
      const live = await board.liveInstances()
      const snapshots = [own]
      for (const [id, text] of live) {
        const snap = id === this.id ? undefined : parseSnapshot(text)
        if (snap !== undefined) snapshots.push(snap)
      }
      this.liveCount = snapshots.length
      return { snapshots, reachable: true }
    } catch {
      return { snapshots: [own], reachable: false }
    }
  }

  /** Each bucket's state in the store, for the MAX_PEEKS most recently used (undefined for the others). */
  private async peek (buckets: string[], names: Set<string>, snapshots: InstanceSnapshot[]): Promise<Array<BucketPeek | undefined>> {
    const board = isTeamBoard(this.store) ? this.store : undefined
    if (board === undefined) return []
    const peeked = new Set([...names].sort((a, b) => (this.tracker.get(b)?.lastSeenMs ?? 0) - (this.tracker.get(a)?.lastSeenMs ?? 0)).slice(0, MAX_PEEKS))
    return await Promise.all(buckets.map(async (bucket): Promise<BucketPeek | undefined> => {
      const route = this.tracker.routeOf(bucket, snapshots)
      const limiter = route === undefined ? undefined : this.limiters.get(route.name)
      if (limiter === undefined || !peeked.has(bucket)) return undefined
      return await board.peek(bucket, limiter.policy).catch(() => undefined)
    }))
  }

  /** Usage and waits of the fair-share clients this instance has seen. */
  private clientUsage (): ClientUsage[] {
    return [...this.schedulers].flatMap(([route, s]) => (s.clients?.() ?? []).map((c) => ({
      route,
      bucket: c.bucket,
      client: c.client,
      weight: c.weight,
      admitted: c.admitted,
      units: c.units,
      rejected: c.rejected,
      cancelled: c.cancelled,
      meanWaitMs: c.admitted === 0 ? 0 : Math.round(c.waitedMsTotal / c.admitted),
      maxWaitMs: Math.round(c.waitedMsMax),
      waiting: c.held + c.reserved
    })))
  }

  /** The first event of a new dashboard stream: the status and the whole chart history. */
  initialEvents (): Array<{ event: string, data: string }> {
    if (this.last === undefined) return []
    return [{ event: 'status', data: this.payload(this.last, HISTORY_S) }]
  }

  private payload (status: SluiceStatus, pointsS: number): string {
    const sinceS = Math.floor(Date.parse(status.generatedAt) / 1000) - pointsS
    const points: Record<string, unknown> = {}
    for (const b of status.buckets) points[b.bucket] = this.history.points(b.bucket, sinceS)
    return JSON.stringify({ status, points, sinceS })
  }

  private async tick (): Promise<void> {
    if (this.ticking || this.closed) return
    this.ticking = true
    try {
      // Nobody watching: publish the heartbeat and keep the chart's history, read no bucket.
      const status = await this.status({ peek: this.events.size > 0 })
      if (!this.closed) this.events.broadcast('status', this.payload(status, TICK_POINTS_S))
    } catch (err) {
      this.logger.debug({ err }, 'status tick failed')
    } finally {
      this.ticking = false
    }
  }

  private snapshot (now: number): InstanceSnapshot {
    return { v: 1, id: this.id, host: hostname(), pid: process.pid, startedAt: this.startedAt, store: this.store.kind, buckets: this.tracker.snapshot(now) }
  }
}
