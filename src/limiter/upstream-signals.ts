// What the upstream tells Sluice about one route's budget: pauses (pushback, or an announced budget
// that is spent until its reset) and announced limits. Pauses go to the shared store, so every
// instance holds back; an announced limit is followed through the route's limiter (setLimit), never
// written into the route's config.
import type { LimitSpec } from '../config/limits'
import type { RouteConfig } from '../config/schema'
import type { BucketStore } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import { clampDelayMs, parseRateLimitHeaders, type HeaderBag } from '../upstream/retry-after'
import type { LimitSet } from './limit-set'
import type { RouteLimiter } from './route-limiter'
import type { LearnedLimit } from './learned-limit'
import type { LimiterLog } from './store-failover'

export interface UpstreamSignalsOptions {
  route: RouteConfig
  limiter: RouteLimiter
  /** Where pauses are set (the store the limiter reserves in, so every reservation honours them). */
  store: BucketStore
  /** The same store without instrumentation: its announcements of every instance's pauses are followed. */
  checkStore: BucketStore
  log: LimiterLog
  /** What the route learns of the upstream's real limit from its pushback (learned-limit.ts); none for a keyed or shadow route. */
  learned?: LearnedLimit
}

/** Pauses remembered before the first sweep of ended ones (every distinct credential may be paused). */
const PAUSES_SWEEP_ABOVE = 256

export class UpstreamSignals {
  private readonly route: RouteConfig
  private readonly limiter: RouteLimiter
  private readonly store: BucketStore
  private readonly log: LimiterLog
  private readonly learned: LearnedLimit | undefined
  private readonly shadow: boolean
  /** What the config says, before any announcement: an adopted limit never goes above it. */
  private readonly configuredLimit: number
  /**
   * Announcements of the upstream's budget for the whole route. A route keyed per header has one bucket
   * per key, and keys differ (token tiers): one key's answer must not shrink every key's budget, so
   * such a route follows only the pauses (remaining 0) of each bucket. Numbers tagged with a budget
   * other than GitHub's primary one (X-RateLimit-Resource: search, graphql, …) are another budget.
   */
  private readonly adoptsLimits: boolean
  /** Several limits: those (by index) below their configured figure, warned of once each. */
  private readonly warned = new Set<number>()
  /** One limit: an announcement below the configured figure was warned of. */
  private warnedLimit = false
  /** Pauses known to this instance, epoch ms per bucket: its own, and others' announced by the store. */
  private readonly knownPause = new Map<string, number>()
  /** Why this instance paused a bucket (its latest pause), for the refusals during it. */
  private readonly pauseWhy = new Map<string, string>()
  /** knownPause is swept of ended pauses once it holds more than this many (then twice those left). */
  private sweepAbove = PAUSES_SWEEP_ABOVE

  constructor (opts: UpstreamSignalsOptions) {
    this.route = opts.route
    this.limiter = opts.limiter
    this.store = opts.store
    this.log = opts.log
    this.learned = opts.learned
    this.shadow = opts.route.mode === 'shadow'
    this.configuredLimit = opts.route.limit.count
    this.adoptsLimits = opts.route.limitAuto || opts.route.key.kind === 'instance'
    // Every pause any instance sets is announced (one pub/sub message per pause, no polling), so a
    // request that slept for its slot knows, without a store round trip, whether it must queue again.
    if (!this.shadow) opts.checkStore.onPause((bucket, delayMs) => this.notePause(bucket, Date.now() + delayMs))
  }

  /** Whether a pause this instance knows of holds `bucket` now (no store round trip). */
  pausedHere (bucket: string): boolean {
    const until = this.knownPause.get(bucket)
    if (until === undefined) return false
    if (until > Date.now()) return true
    this.knownPause.delete(bucket)
    return false
  }

  /**
   * The pause holding `bucket` now, as this instance knows it, and why (an announced pause of another
   * instance says only that the upstream pushed back there); undefined when none does.
   */
  pauseNote (bucket: string): { remainingMs: number, why: string } | undefined {
    if (!this.pausedHere(bucket)) {
      this.pauseWhy.delete(bucket)
      return undefined
    }
    return { remainingMs: (this.knownPause.get(bucket) ?? Date.now()) - Date.now(), why: this.pauseWhy.get(bucket) ?? 'upstream pushback seen by another instance' }
  }

  /**
   * The upstream pushed back: pause the bucket for the delay it asked for (without one: one window of
   * the route's budget), within the route's pause bounds. Resolves to that pause, ms.
   */
  async pushback (bucket: string, delayMs: number | undefined, why: string, limited?: { sentAtMs: number }): Promise<number> {
    const pauseMs = clampDelayMs(delayMs ?? this.limiter.policy.windowMs, this.route.minPauseMs, this.route.maxPauseMs)
    // A rate limit (not maintenance) on an attempt sent at sentAtMs: learn what the upstream accepted before it.
    if (limited !== undefined && this.learned !== undefined && bucket === this.learned.bucket) void this.learned.pushedBack(limited.sentAtMs)
    await this.pause(bucket, pauseMs, why)
    return pauseMs
  }

  /** The send time to note for an attempt (this process's clock, ms). */
  sentAt (): number {
    return nowMs()
  }

  /** The upstream answered an attempt sent at `sentAtMs` without pushing back (`waited`: the request had waited for its slot). */
  answered (bucket: string, sentAtMs: number, waited: boolean): void {
    if (this.learned !== undefined && bucket === this.learned.bucket) this.learned.accepted(sentAtMs, waited)
  }

  /** Steer by the upstream's own numbers: an exhausted budget pauses, a lower limit is adopted. */
  follow (headers: HeaderBag, bucket: string): void {
    const info = parseRateLimitHeaders(headers, Date.now())
    if (info.limit !== undefined && info.limit >= 1 && !this.shadow && this.adoptsLimits && (info.resource === undefined || info.resource === 'core')) {
      this.adopt(info.limit, info.windowMs)
    }
    if (info.remaining === 0 && info.resetMs !== undefined && info.resetMs > 0) {
      void this.pause(bucket, clampDelayMs(info.resetMs, 0, this.route.maxPauseMs), 'upstream reports remaining 0 until reset')
    }
  }

  private notePause (bucket: string, untilMs: number): void {
    if (untilMs > (this.knownPause.get(bucket) ?? 0)) this.knownPause.set(bucket, untilMs)
    if (this.knownPause.size <= this.sweepAbove) return
    const now = Date.now()
    for (const [name, until] of this.knownPause) if (until <= now) this.knownPause.delete(name)
    for (const name of this.pauseWhy.keys()) if (!this.knownPause.has(name)) this.pauseWhy.delete(name)
    this.sweepAbove = Math.max(PAUSES_SWEEP_ABOVE, 2 * this.knownPause.size)
  }

  /** Pauses this instance remembers (bounded-state tests). */
  get pausesKnown (): number {
    return this.knownPause.size
  }

  private async pause (bucket: string, delayMs: number, why: string): Promise<void> {
    if (this.shadow || delayMs <= 0) return
    const route = this.route.name
    this.notePause(bucket, Date.now() + delayMs)
    this.pauseWhy.set(bucket, why)
    try {
      await this.store.pause(bucket, delayMs)
    } catch (err) {
      this.log('warn', { route, bucket, err: (err as Error).message }, 'could not store a pause; this instance still backs off through its retries')
    }
    this.log('info', { route, bucket, pauseMs: Math.round(delayMs), why }, 'bucket paused')
  }

  /**
   * An announced limit. A route with one limit hands it to its limit sources (limit-sources.ts), which
   * compose the limit in force with the configured and learned ones; a route with several applies it
   * to the limit of its window (adoptInLimitSet).
   */
  private adopt (announced: number, announcedWindowMs: number | undefined): void {
    if (this.limiter.limits !== undefined) {
      this.adoptInLimitSet(this.limiter.limits, announced, announcedWindowMs)
      return
    }
    const sources = this.limiter.sources
    const name = this.route.name
    const windowMs = announcedWindowMs !== undefined && announcedWindowMs > 0 ? announcedWindowMs : this.limiter.policy.windowMs
    const limit = Math.floor(announced)
    const before = sources.announced
    if (before !== undefined && before.limit === limit && before.windowMs === windowMs) return
    const was = this.limiter.policy.limit
    sources.announce({ limit, windowMs })
    if (this.route.limitAuto) {
      if (this.limiter.policy.limit !== was || before === undefined) this.log('info', { route: name, limit, windowMs }, `route ${name}: limit auto adopts the upstream's announced ${limit} per ${windowMs} ms`)
      return
    }
    // The announcement in the route's own window, so 5000/h and 180/min compare.
    const inRouteWindow = sources.inWindow({ limit, windowMs })
    const configured = this.configuredLimit
    if (inRouteWindow < configured && !this.warnedLimit) {
      this.warnedLimit = true
      this.log('warn', { route: name, configured, announced: inRouteWindow, windowMs: this.limiter.policy.windowMs },
        `route ${name}: the upstream announces a limit of ${inRouteWindow} per ${this.limiter.policy.windowMs} ms, below the configured ${configured}; Sluice follows the upstream`)
    } else if (inRouteWindow >= configured && before !== undefined && sources.inWindow(before) < configured) {
      this.log('info', { route: name, limit: configured, windowMs: this.limiter.policy.windowMs }, `route ${name}: the upstream announces ${inRouteWindow} per ${this.limiter.policy.windowMs} ms again; back to the configured ${configured}`)
    }
  }

  /** A route with several limits: the announcement is of the limit of its window, else of the first. */
  private adoptInLimitSet (limits: LimitSet, announced: number, announcedWindowMs: number | undefined): void {
    const name = this.route.name
    const at = this.announcedLimitOf(announcedWindowMs)
    const target = limits.policies[at]
    const label = `route ${name} limit ${limits.names[at]}`
    // The announcement in the limit's own window, so 5000/h and 180/min compare.
    const inLimitWindow = announcedWindowMs !== undefined && announcedWindowMs > 0 && announcedWindowMs !== target.windowMs
      ? Math.floor(announced * target.windowMs / announcedWindowMs)
      : Math.floor(announced)
    // The limit follows the latest announcement, down and back up, never above the configured one.
    const configured = (this.route.limits as LimitSpec[])[at].rate.count
    const limit = Math.min(inLimitWindow, configured)
    if (limit < 1 || limit === target.limit) return
    limits.setLimit(at, limit)
    const windowMs = target.windowMs
    if (limit < configured && !this.warned.has(at)) {
      this.warned.add(at)
      this.log('warn', { route: name, configured, announced: inLimitWindow, windowMs, limitName: limits.names[at] },
        `${label}: the upstream announces a limit of ${inLimitWindow} per ${windowMs} ms, below the configured ${configured}; Sluice follows the upstream`)
    } else if (limit === configured) {
      this.log('info', { route: name, limit, windowMs }, `${label}: the upstream announces ${inLimitWindow} per ${windowMs} ms again; back to the configured ${limit}`)
    }
  }

  /**
   * Which of a route's several limits an announcement is of: the one whose window is the announced
   * window, else the first (the route's primary); -1 for a route with one limit.
   */
  private announcedLimitOf (announcedWindowMs: number | undefined): number {
    const limits = this.limiter.limits
    if (limits === undefined) return -1
    const same = announcedWindowMs === undefined ? -1 : limits.policies.findIndex((p) => p.windowMs === announcedWindowMs)
    return Math.max(0, same)
  }
}
