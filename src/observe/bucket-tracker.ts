// Which buckets this instance tracks and what each did recently (activity.ts): a route's own budget
// from the start, a per-credential bucket from its first use, bounded in number (the idlest go
// first). Also what waits in each: the limiters' and fair queues' depths, read when asked.
import type { RouteConfig } from '../config/schema'
import type { ClientStats } from '../limiter/client-stats'
import type { RouteLimiter } from '../limiter/route-limiter'
import { BucketActivity } from './activity'
import { HISTORY_S } from './history'
import type { InstanceSnapshot } from './status'

/** Buckets (one per credential with key: header:…) idle this long are forgotten, ms (default). */
export const BUCKET_IDLE_MS = HISTORY_S * 1000
/** At most this many buckets are tracked (labels, status rows); the idlest go first. */
const MAX_BUCKETS = 500

/** A route's fair queue (fair-scheduler.ts) as the observer reads it. */
export interface QueueSource {
  queueDepth: (bucket: string) => number
  clients?: () => ClientStats[]
  /** Running counts of the fair queue's refusals, timeouts and low-priority probes. */
  readonly stats?: Readonly<{ lowProbes: number, lowProbesRefused: number, heldTimeouts: number, refusedAtArrival: number }>
}

export interface BucketFigures { route: string, bucket: string, queueDepth: number, pauseRemainingS: number, tokensRemaining: number | undefined, limitsRemaining: number[] | undefined }

export class BucketTracker {
  private readonly activity = new Map<string, BucketActivity>()

  /**
   * `limiters` and `schedulers` are read lazily, so the maps may be filled after the tracker is made.
   */
  constructor (
    private readonly routes: Map<string, RouteConfig>,
    private readonly limiters: Map<string, RouteLimiter>,
    private readonly schedulers: Map<string, QueueSource>,
    private readonly idleMs = BUCKET_IDLE_MS
  ) {}

  get size (): number {
    return this.activity.size
  }

  /** Whether a request of this instance is waiting or in flight in any bucket. */
  busy (): boolean {
    for (const act of this.activity.values()) if (act.inFlight > 0 || this.queueDepth(act.route, act.bucket) > 0) return true
    return false
  }

  get (bucket: string): BucketActivity | undefined {
    return this.activity.get(bucket)
  }

  buckets (): IterableIterator<string> {
    return this.activity.keys()
  }

  /** The activity of `bucket`, tracked from now on if it was not. */
  of (route: RouteConfig, bucket: string): BucketActivity {
    let act = this.activity.get(bucket)
    if (act === undefined) {
      // The route's window now (its limiter follows the upstream's announcements with limit: auto).
      const windowMs = this.limiters.get(route.name)?.policy.windowMs ?? route.limit.windowMs
      act = new BucketActivity(route.name, bucket, windowMs / 1000)
      this.activity.set(bucket, act)
      if (this.activity.size > MAX_BUCKETS) this.forgetIdle(Date.now(), true)
    }
    return act
  }

  forgetIdle (now: number, evictOne = false): void {
    let idlest: BucketActivity | undefined
    for (const act of this.activity.values()) {
      if (act.route === act.bucket) continue // a route's own budget stays
      if (act.inFlight > 0 || this.queueDepth(act.route, act.bucket) > 0) continue
      if (now - act.lastSeenMs > this.idleMs) this.activity.delete(act.bucket)
      else if (idlest === undefined || act.lastSeenMs < idlest.lastSeenMs) idlest = act
    }
    if (evictOne && this.activity.size > MAX_BUCKETS && idlest !== undefined) this.activity.delete(idlest.bucket)
  }

  /** Requests of this instance waiting in a bucket: in the fair queue or for their slot (shadow: would be). */
  queueDepth (route: string, bucket: string): number {
    const limited = this.limiters.get(route)?.queueDepth(bucket) ?? 0
    if (this.routes.get(route)?.mode === 'shadow') return limited
    return Math.max(limited, this.schedulers.get(route)?.queueDepth(bucket) ?? 0)
  }

  /** The route of a bucket this instance or another one (by its heartbeat) tracks. */
  routeOf (bucket: string, snapshots: InstanceSnapshot[]): RouteConfig | undefined {
    const own = this.activity.get(bucket)
    if (own !== undefined) return this.routes.get(own.route)
    for (const snap of snapshots) {
      const name = snap.buckets[bucket]?.r
      if (name !== undefined) return this.routes.get(name)
    }
    return undefined
  }

  /** This instance's figures per bucket, as its heartbeat publishes them. */
  snapshot (now: number): InstanceSnapshot['buckets'] {
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
    return buckets
  }

  * figures (): Generator<BucketFigures> {
    const now = Date.now()
    for (const act of this.activity.values()) {
      yield {
        route: act.route,
        bucket: act.bucket,
        queueDepth: this.queueDepth(act.route, act.bucket),
        pauseRemainingS: Math.max(0, act.pausedUntilMs - now) / 1000,
        tokensRemaining: act.tokensRemaining,
        limitsRemaining: act.limitsRemaining
      }
    }
  }

  * inFlightByRoute (): Generator<{ route: string, inFlight: number }> {
    const sums = new Map<string, number>()
    for (const r of this.routes.keys()) sums.set(r, 0)
    for (const act of this.activity.values()) sums.set(act.route, (sums.get(act.route) ?? 0) + act.inFlight)
    for (const [route, inFlight] of sums) yield { route, inFlight }
  }
}
