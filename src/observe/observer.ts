// Everything Sluice tells about its budget: Prometheus metrics, the team-wide status, the live
// dashboard's events. The request path calls three hooks (admitted, finished, retry); the store is
// wrapped to time its commands and notice pauses; a one-second heartbeat publishes this instance's
// figures to the shared store and reads everyone else's. Nothing here is on the admission path
// except a few counter increments.
import type { ClientStats } from '../limiter/client-stats'
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import type { RouteConfig, SluiceConfig } from '../config/schema'
import type { RequestState } from '../http/app'
import type { Admission, RouteLimiter } from '../limiter/route-limiter'
import { isShadowAdmission } from '../limiter/shadow-limiter'
import { isTeamBoard, type BucketPeek, type BucketStore } from '../store/bucket-store'
import { BucketActivity, SERIES_S } from './activity'
import { EventHub } from './event-stream'
import { HISTORY_S, History } from './history'
import { SluiceMetrics } from './metrics'
import { bucketStatus, parseSnapshot, teamSeries, type InstanceSnapshot, type SluiceStatus } from './status'

export interface ObserverOptions {
  /** How often this instance publishes its figures and reads the team's, ms. Default 1000. */
  heartbeatMs?: number
  /** An instance whose heartbeat is older than this is gone, ms. Default 5000. */
  instanceTtlMs?: number
  /**
   * Queues in front of the limiters (fair-scheduler.ts), by route: a request held there waits too.
   * Read lazily, so the map may be filled after the observer is made.
   */
  schedulers?: Map<string, { queueDepth: (bucket: string) => number, clients?: () => ClientStats[] }>
}

/** Buckets (one per credential with key: header:…) idle this long are forgotten, ms. */
const BUCKET_IDLE_MS = HISTORY_S * 1000
/** At most this many buckets are tracked (labels, status rows); the idlest go first. */
const MAX_BUCKETS = 500
/**
 * Buckets read from the store per status, the most recently used first (one read-only script each;
 * with key: header:… there may be hundreds of buckets): the others show remaining as unknown (null).
 */
const MAX_PEEKS = 50
/** Seconds of chart points each tick re-sends (a heartbeat that came late corrects them). */
const TICK_POINTS_S = 15

export class Observer {
  readonly id = randomUUID()
  readonly metrics: SluiceMetrics
  private readonly config: SluiceConfig
  private readonly store: BucketStore
  private readonly limiters: Map<string, RouteLimiter>
  private readonly logger: Logger
  private readonly routes = new Map<string, RouteConfig>()
  private readonly activity = new Map<string, BucketActivity>()
  private readonly admittedStates = new WeakSet<RequestState>()
  private readonly countedStates = new WeakSet<RequestState>()
  private readonly history = new History()
  readonly events = new EventHub()
  private readonly heartbeatMs: number
  private readonly instanceTtlMs: number
  private readonly schedulers: Map<string, { queueDepth: (bucket: string) => number, clients?: () => ClientStats[] }>
  private readonly startedAt = new Date().toISOString()
  private timer: NodeJS.Timeout | undefined
  private ticking = false
  private closed = false
  private liveCount = 1
  private last: SluiceStatus | undefined

  constructor (config: SluiceConfig, store: BucketStore, limiters: Map<string, RouteLimiter>, logger: Logger, options: ObserverOptions = {}) {
    this.config = config
    this.store = store
    this.limiters = limiters
    this.logger = logger
    this.heartbeatMs = options.heartbeatMs ?? 1000
    this.instanceTtlMs = options.instanceTtlMs ?? 5000
    this.schedulers = options.schedulers ?? new Map()
    for (const r of config.routes) this.routes.set(r.name, r)
    this.metrics = new SluiceMetrics(config.routes.map((r) => ({ name: r.name, limit: r.limit.count, windowS: r.limit.windowMs / 1000 })), {
      buckets: () => this.bucketFigures(),
      inFlight: () => this.inFlightByRoute(),
      liveInstances: () => this.liveCount,
      storeModes: () => config.routes.map((r) => ({ route: r.name, mode: this.storeModeOf(r.name) }))
    })
    for (const r of config.routes) {
      // A budget per route is known from the start; per-credential buckets appear when first used.
      if (r.key.kind === 'instance') this.activityOf(r, r.name)
    }
  }

  /** The store as the limiters should see it: every command timed, every pause noticed. */
  timed (store: BucketStore): BucketStore {
    const metrics = this.metrics
    const onPause = (bucket: string, ms: number): void => this.paused(bucket, ms)
    // Methods are bound once, not on every access (the limiters call several per request); a method
    // replaced on the store is bound anew.
    const bound = new Map<string | symbol, { fn: unknown, method: unknown }>()
    const timedMethod = (fn: (...args: unknown[]) => Promise<unknown>, target: BucketStore, prop: string): unknown => {
      return async (...args: unknown[]): Promise<unknown> => {
        const labels = { store: target.kind, command: prop }
        const end = metrics.storeCommand.startTimer(labels)
        try {
          const result = await fn.apply(target, args)
          if (prop === 'pause') onPause(String(args[0]), Number(result))
          return result
        } catch (err) {
          metrics.storeErrors.inc(labels)
          throw err
        } finally {
          end()
        }
      }
    }
    return new Proxy(store, {
      get (target, prop) {
        const value = Reflect.get(target, prop, target) as unknown
        if (typeof value !== 'function') return value
        const known = bound.get(prop)
        if (known?.fn === value) return known.method
        const fn = value as (...args: unknown[]) => Promise<unknown>
        const method = prop === 'reserve' || prop === 'release' || prop === 'pause' ? timedMethod(fn, target, prop) : fn.bind(target)
        bound.set(prop, { fn: value, method })
        return method
      }
    })
  }

  /** A request got its slot (or, on a shadow route, its verdict) and is about to be forwarded. */
  admitted (state: RequestState, admission: Admission, reply: FastifyReply): void {
    if (this.admittedStates.has(state)) return
    this.admittedStates.add(state)
    const route = state.route
    const act = this.activityOf(route, admission.bucket)
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
  finished (state: RequestState | undefined, _status: number): void {
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
      if (state.bucket !== undefined) this.activityOf(state.route, state.bucket).count('rejected')
    }
    if (state.upstreamStatus !== undefined) {
      this.metrics.upstreamResponses.inc({ route, class: `${Math.floor(state.upstreamStatus / 100)}xx` })
    }
  }

  /** Sluice sent a request to the upstream again (after pushback or a transient failure). */
  retry (route: string): void {
    this.metrics.retries.inc({ route })
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
    const act = this.activityOf(route, bucket)
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
    this.forgetIdle(now)
    const own = this.snapshot(now)
    let snapshots: InstanceSnapshot[] = [own]
    let reachable = true
    const board = isTeamBoard(this.store) ? this.store : undefined
    if (board !== undefined) {
      try {
        this.liveCount = await board.heartbeat(this.id, JSON.stringify(own), this.instanceTtlMs)
        const live = await board.liveInstances()
        snapshots = [own]
        for (const [id, text] of live) {
          const snap = id === this.id ? undefined : parseSnapshot(text)
          if (snap !== undefined) snapshots.push(snap)
        }
        this.liveCount = snapshots.length
      } catch {
        reachable = false
      }
    }
    const names = new Set<string>(this.activity.keys())
    for (const snap of snapshots) for (const [bucket, b] of Object.entries(snap.buckets)) if (this.routes.has(b.r)) names.add(bucket)
    const buckets = [...names].sort()
    const peeked = new Set([...names].sort((a, b) => (this.activity.get(b)?.lastSeenMs ?? 0) - (this.activity.get(a)?.lastSeenMs ?? 0)).slice(0, MAX_PEEKS))
    const peeks = await Promise.all(buckets.map(async (bucket): Promise<BucketPeek | undefined> => {
      const route = this.routeOf(bucket, snapshots)
      const limiter = route === undefined ? undefined : this.limiters.get(route.name)
      if (board === undefined || limiter === undefined || !reachable || options.peek === false || !peeked.has(bucket)) return undefined
      return await board.peek(bucket, limiter.policy).catch(() => undefined)
    }))
    const rows = []
    for (let i = 0; i < buckets.length; i++) {
      const bucket = buckets[i]
      const route = this.routeOf(bucket, snapshots)
      if (route === undefined) continue
      const act = this.activity.get(bucket)
      rows.push(bucketStatus({
        route,
        bucket,
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
      clients: [...this.schedulers].flatMap(([route, s]) => (s.clients?.() ?? []).map((c) => ({
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
    this.last = status
    return status
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
    const buckets: InstanceSnapshot['buckets'] = {}
    for (const [bucket, act] of this.activity) {
      buckets[bucket] = {
        r: act.route,
        q: this.queueDepth(act.route, bucket),
        f: act.inFlight,
        u: act.forwardedInWindow(now),
        s: act.series(now)
      }
    }
    return { v: 1, id: this.id, host: hostname(), pid: process.pid, startedAt: this.startedAt, store: this.store.kind, buckets }
  }

  /** Requests of this instance waiting in a bucket: in the fair queue or for their slot (shadow: would be). */
  private queueDepth (route: string, bucket: string): number {
    const limited = this.limiters.get(route)?.queueDepth(bucket) ?? 0
    if (this.routes.get(route)?.mode === 'shadow') return limited
    return Math.max(limited, this.schedulers.get(route)?.queueDepth(bucket) ?? 0)
  }

  private routeOf (bucket: string, snapshots: InstanceSnapshot[]): RouteConfig | undefined {
    const own = this.activity.get(bucket)
    if (own !== undefined) return this.routes.get(own.route)
    for (const snap of snapshots) {
      const name = snap.buckets[bucket]?.r
      if (name !== undefined) return this.routes.get(name)
    }
    return undefined
  }

  private activityOf (route: RouteConfig, bucket: string): BucketActivity {
    let act = this.activity.get(bucket)
    if (act === undefined) {
      act = new BucketActivity(route.name, bucket, route.limit.windowMs / 1000)
      this.activity.set(bucket, act)
      if (this.activity.size > MAX_BUCKETS) this.forgetIdle(Date.now(), true)
    }
    return act
  }

  private forgetIdle (now: number, evictOne = false): void {
    let idlest: BucketActivity | undefined
    for (const act of this.activity.values()) {
      if (act.route === act.bucket) continue // a route's own budget stays
      if (act.inFlight > 0 || this.queueDepth(act.route, act.bucket) > 0) continue
      if (now - act.lastSeenMs > BUCKET_IDLE_MS) this.activity.delete(act.bucket)
      else if (idlest === undefined || act.lastSeenMs < idlest.lastSeenMs) idlest = act
    }
    if (evictOne && this.activity.size > MAX_BUCKETS && idlest !== undefined) this.activity.delete(idlest.bucket)
  }

  private * bucketFigures (): Generator<{ route: string, bucket: string, queueDepth: number, pauseRemainingS: number, tokensRemaining: number | undefined }> {
    const now = Date.now()
    for (const act of this.activity.values()) {
      yield {
        route: act.route,
        bucket: act.bucket,
        queueDepth: this.queueDepth(act.route, act.bucket),
        pauseRemainingS: Math.max(0, act.pausedUntilMs - now) / 1000,
        tokensRemaining: act.tokensRemaining
      }
    }
  }

  private * inFlightByRoute (): Generator<{ route: string, inFlight: number }> {
    const sums = new Map<string, number>()
    for (const r of this.config.routes) sums.set(r.name, 0)
    for (const act of this.activity.values()) sums.set(act.route, (sums.get(act.route) ?? 0) + act.inFlight)
    for (const [route, inFlight] of sums) yield { route, inFlight }
  }
}
