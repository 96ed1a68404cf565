// Everything Sluice tells about its budget: Prometheus metrics, the team-wide status, the live
// dashboard's events. The request path calls three hooks (admitted, finished, retry); the store is
// wrapped to time its commands and notice pauses; a heartbeat (every second while there is traffic or
// a watcher, every few seconds when idle: heartbeat-pace.ts) publishes this instance's figures to the
// shared store and reads everyone else's. Nothing here is on the admission path except a few counter
// increments.
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import type { RouteConfig, SluiceConfig } from '../config/schema'
import type { Admission, RouteLimiter } from '../limiter/route-limiter'
import { isShadowAdmission } from '../limiter/shadow-limiter'
import { isTeamBoard, type BucketPeek, type BucketStore, type MultiReservation } from '../store/bucket-store'
import { SERIES_S } from './activity'
import { BUCKET_IDLE_MS, BucketTracker, type QueueSource } from './bucket-tracker'
import { ClientSeries, clientUsage } from './client-series'
import { EventHub } from './event-stream'
import { HeartbeatPace } from './heartbeat-pace'
import { HISTORY_S, History } from './history'
import { admissionEvents } from './admission-events'
import { SluiceMetrics } from './metrics'
import { teamBeat } from './team-beat'
import { bucketStatus, teamSeries, type InstanceSnapshot, type SluiceStatus } from './status'
import { peekBuckets } from './store-peeks'
import { timedStore } from './timed-store'

export interface ObserverOptions {
  /** How often this instance publishes its figures and reads the team's while busy or watched, ms. Default 1000. */
  heartbeatMs?: number
  /** The same when idle (no traffic, nobody watching), ms. Default 5000. */
  idleHeartbeatMs?: number
  /** A busy instance whose heartbeat is older than this is gone, ms (an idle one's lasts its slower pace more). Default 5000. */
  instanceTtlMs?: number
  /** Per-bucket figures and per-client series idle this long are forgotten, ms. Default 10 min. */
  idleMs?: number
  /**
   * Queues in front of the limiters (fair-scheduler.ts), by route: a request held there waits too.
   * Read lazily, so the map may be filled after the observer is made.
   */
  schedulers?: Map<string, QueueSource>
}

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
  private readonly schedulers: Map<string, QueueSource>
  private readonly startedAt = new Date().toISOString()
  private readonly pace: HeartbeatPace
  private readonly clientSeries: ClientSeries
  private ticking = false
  private closed = false
  private liveCount = 1
  private last: SluiceStatus | undefined

  constructor (config: SluiceConfig, store: BucketStore, limiters: Map<string, RouteLimiter>, logger: Logger, options: ObserverOptions = {}) {
    this.store = store
    this.limiters = limiters
    this.logger = logger
    const busyMs = options.heartbeatMs ?? 1000
    const ttlMs = options.instanceTtlMs ?? 5000
    this.pace = new HeartbeatPace({ busyMs, idleMs: options.idleHeartbeatMs ?? 5000, ttlMs, holdMs: 2 * ttlMs }, async () => await this.tick(), () => this.events.size > 0 || this.tracker.busy())
    this.schedulers = options.schedulers ?? new Map()
    for (const r of config.routes) this.routes.set(r.name, r)
    const idleMs = options.idleMs ?? BUCKET_IDLE_MS
    this.tracker = new BucketTracker(this.routes, limiters, this.schedulers, idleMs)
    this.metrics = new SluiceMetrics({
      buckets: () => this.tracker.figures(),
      inFlight: () => this.tracker.inFlightByRoute(),
      liveInstances: () => this.liveCount,
      storeModes: () => [...this.routes.values()].map((r) => ({ route: r.name, mode: this.storeModeOf(r.name) })),
      admissionEvents: () => admissionEvents(this.routes.keys(), this.limiters, this.schedulers),
      limits: () => [...this.limiters].flatMap(([route, l]) => l.limits === undefined || !this.routes.has(route) ? [] : l.limits.describe().map((d) => ({ route, ...d }))),
      limitsInForce: () => [...this.limiters.entries()].filter(([route]) => this.routes.has(route)).map(([route, l]) => ({ route, ...l.sources.view(), windowS: l.policy.windowMs / 1000, limit: l.policy.limit }))
    })
    this.clientSeries = new ClientSeries(this.metrics.clientRequests, this.metrics.clientWait, idleMs)
    for (const r of config.routes) {
      // A budget per route is known from the start; per-credential buckets appear when first used.
      if (r.key.kind === 'instance') this.tracker.of(r, r.name)
    }
  }

  /** After a reload (http/reload.ts): the routes served now; kept routes' buckets keep their figures. */
  reconfigure (config: SluiceConfig): void {
    this.routes.clear()
    for (const r of config.routes) this.routes.set(r.name, r)
  }

  /** The store as the limiters should see it: every command timed, every pause noticed. */
  timed (store: BucketStore): BucketStore {
    return timedStore(store, this.metrics, (bucket, ms) => this.paused(bucket, ms))
  }

  /** A request got its slot (or, on a shadow route, its verdict) and is about to be forwarded. */
  admitted (state: ObservedRequest, admission: Admission, reply: FastifyReply): void {
    if (this.admittedStates.has(state)) return
    this.admittedStates.add(state)
    this.pace.activity()
    const route = state.route
    const act = this.tracker.of(route, admission.bucket)
    act.tokensRemaining = admission.reservation.remaining
    const perLimit = (admission.reservation as Partial<MultiReservation>).limits
    if (perLimit !== undefined) act.limitsRemaining = perLimit.map((l) => l.remaining)
    act.count('forwarded')
    this.metrics.wait.observe({ route: route.name }, admission.waitedMs / 1000)
    if (state.client !== undefined) this.metrics.clientWait.inc({ route: route.name, client: this.clientSeries.label(route.name, state.client) }, admission.waitedMs / 1000)
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
    this.pace.activity()
    const route = state.route.name
    if (state.client !== undefined) {
      const outcome = this.admittedStates.has(state) ? 'forwarded' : state.outcome === 'cancelled' ? 'cancelled' : 'rejected'
      this.metrics.clientRequests.inc({ route, client: this.clientSeries.label(route, state.client), outcome })
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
    if (!this.closed) this.pace.start()
  }

  /** Forget buckets and per-client series idle for the idle time (idle-sweep.ts calls this). */
  forgetIdle (now = Date.now()): void {
    this.tracker.forgetIdle(now)
    this.clientSeries.sweep(now)
  }

  /** How much per-bucket and per-client state this observer holds (bounded-state tests). */
  stateSizes (): { buckets: number, clientSeries: number, otherClients: number } {
    const { labelled, candidates } = this.clientSeries.sizes()
    return { buckets: this.tracker.size, clientSeries: labelled, otherClients: candidates }
  }

  async close (): Promise<void> {
    this.closed = true
    this.pace.stop()
    this.events.closeAll()
    if (isTeamBoard(this.store)) await this.store.leave(this.id).catch(() => {})
  }

  /** The team-wide status for someone reading it: the heartbeat keeps its busy pace while they do. */
  async status (): Promise<SluiceStatus> {
    this.pace.watched()
    return await this.refresh()
  }

  /**
   * The team-wide status, fresh: this instance's heartbeat first, then everyone's, then the store.
   * `peek: false` skips reading the buckets from the store (the heartbeat alone, when nobody watches).
   */
  private async refresh (options: { peek?: boolean } = {}): Promise<SluiceStatus> {
    const now = Date.now()
    this.forgetIdle(now)
    const { snapshots, reachable } = await teamBeat(this.store, this.snapshot(now), this.pace.ttlMs())
    if (reachable) this.liveCount = snapshots.length
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
        ...(limiter === undefined ? {} : { sources: limiter.sources.view() }),
        storeMode: this.storeModeOf(route.name),
        waitMs: act?.waitPercentiles(now) ?? { p50: 0, p90: 0, p99: 0, count: 0 },
        requestsLastMinute: act === undefined ? 0 : act.series(now).reduce((n, s) => n + s[1], 0),
        ...(limiter?.limits === undefined ? {} : { limits: limiter.limits.describe() })
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
      clients: clientUsage(this.schedulers)
    }
    this.last = status
    return status
  }

  /** Each bucket's state in the store, for the most recently used (store-peeks.ts). */
  private async peek (buckets: string[], names: Set<string>, snapshots: InstanceSnapshot[]): Promise<Array<BucketPeek | BucketPeek[] | undefined>> {
    const recent = [...names].sort((a, b) => (this.tracker.get(b)?.lastSeenMs ?? 0) - (this.tracker.get(a)?.lastSeenMs ?? 0))
    return await peekBuckets(this.store, buckets, recent, (bucket) => {
      const route = this.tracker.routeOf(bucket, snapshots)
      return route === undefined ? undefined : this.limiters.get(route.name)
    })
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
      const status = await this.refresh({ peek: this.events.size > 0 })
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
