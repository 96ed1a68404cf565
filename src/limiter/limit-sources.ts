// The one place a route's limit in force is composed: effective = min(configured, announced, learned).
// The configured limit is the route's config; the announced one is what the upstream's rate-limit
// headers say (upstream-signals.ts adopts it); the learned one is what the upstream was seen to
// accept before it pushed back (learned-limit.ts). Each source is set here, and only here is the
// limiter told (RouteLimiter.setLimit), with one log line per change of the limit in force.
import type { RouteConfig } from '../config/schema'

/** Where a change of the limit in force is logged (the shape of store-failover.ts's LimiterLog, not imported: no cycle). */
type LimiterLog = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void

/** A limit in requests per window. */
export interface SourceLimit {
  limit: number
  windowMs: number
}

/** What status, metrics and refusal details show of a route's limit. */
export interface LimitView {
  /** The limit in force (what the limiter shapes to). */
  limit: number
  windowMs: number
  /** The route's config; undefined for `limit: auto` (its start value is no ceiling). */
  configured: number | undefined
  /** What the upstream announces, in the route's window; undefined before it announced anything. */
  announced: number | undefined
  /** What Sluice learned from pushback (or climbed to, `limit: auto`); undefined when nothing is learned. */
  learned: number | undefined
  /** How: learned (below Sluice's limit), shared (with others Sluice does not see), climb (`limit: auto`). */
  learnedKind?: string
}

export class LimitSources {
  private readonly route: RouteConfig
  private readonly apply: (limit: number, windowMs: number) => void
  private readonly log: LimiterLog
  private announcedLimit: SourceLimit | undefined
  private learnedLimit: SourceLimit | undefined
  private learnedKind: string | undefined
  private current: SourceLimit

  constructor (route: RouteConfig, apply: (limit: number, windowMs: number) => void, log: LimiterLog) {
    this.route = route
    this.apply = apply
    this.log = log
    this.current = { limit: route.limit.count, windowMs: route.limit.windowMs }
  }

  /** The upstream's announced limit (undefined: none); `limit: auto` adopts its window too. */
  announce (announced: SourceLimit | undefined): void {
    this.announcedLimit = announced
    this.update('announced')
  }

  /** The learned limit (undefined: forgotten, back to the others), and how it was learned. */
  learn (learned: SourceLimit | undefined, kind?: string): void {
    this.learnedLimit = learned
    this.learnedKind = learned === undefined ? undefined : kind
    this.update('learned')
  }

  get announced (): SourceLimit | undefined {
    return this.announcedLimit
  }

  get learned (): SourceLimit | undefined {
    return this.learnedLimit
  }

  /** The limit in force now. */
  get effective (): SourceLimit {
    return this.current
  }

  view (): LimitView {
    return {
      limit: this.current.limit,
      windowMs: this.current.windowMs,
      configured: this.route.limitAuto ? undefined : this.route.limit.count,
      announced: this.announcedLimit === undefined ? undefined : this.inWindow(this.announcedLimit),
      learned: this.learnedLimit === undefined ? undefined : this.inWindow(this.learnedLimit),
      ...(this.learnedKind === undefined ? {} : { learnedKind: this.learnedKind })
    }
  }

  /** A source's limit counted in the window in force, so 5000/h and 180/min compare. */
  inWindow (source: SourceLimit): number {
    if (source.windowMs === this.current.windowMs) return source.limit
    return Math.max(1, Math.floor(source.limit * this.current.windowMs / source.windowMs))
  }

  /**
   * min(configured, announced, learned). A `limit: auto` route has no ceiling of its own: it follows
   * the announced limit (and window) when there is one, else the learned one, else its start value.
   */
  compose (): SourceLimit {
    const route = this.route
    const announced = this.announcedLimit
    // A climb (`limit: auto` exploring upwards without announcements) is no ceiling once the upstream announces.
    const learned = this.learnedKind === 'climb' && announced !== undefined ? undefined : this.learnedLimit
    let base: SourceLimit
    if (route.limitAuto) base = announced ?? learned ?? { limit: route.limit.count, windowMs: route.limit.windowMs }
    else base = { limit: route.limit.count, windowMs: route.limit.windowMs }
    let limit = base.limit
    for (const source of [announced, learned]) {
      if (source === undefined || source === base) continue
      limit = Math.min(limit, source.windowMs === base.windowMs ? source.limit : Math.max(1, Math.floor(source.limit * base.windowMs / source.windowMs)))
    }
    return { limit: Math.max(1, Math.floor(limit)), windowMs: base.windowMs }
  }

  private update (changed: 'announced' | 'learned'): void {
    const next = this.compose()
    if (next.limit === this.current.limit && next.windowMs === this.current.windowMs) return
    const from = this.current
    this.current = next
    this.apply(next.limit, next.windowMs)
    const view = this.view()
    const name = this.route.name
    this.log('info', { route: name, limit: next.limit, windowMs: next.windowMs, from: from.limit, configured: view.configured, announced: view.announced, learned: view.learned, source: changed },
      `route ${name}: limit in force ${next.limit} per ${next.windowMs} ms (was ${from.limit}; configured ${view.configured ?? 'auto'}, announced ${view.announced ?? '-'}, learned ${view.learned ?? '-'})`)
  }
}
