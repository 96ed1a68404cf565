// What the upstream really allows, learned from its pushback and shared by the team.
//
// Every attempt's send time goes, with whether the upstream accepted it or pushed back, into a short
// log in the store (batched: at most one write per FLUSH_MS per instance, and at once when any
// instance pauses the bucket). When the upstream pushes back on an attempt sent at s, its window
// ending at s was full: what it accepted in [s - window, s) is its limit. So the learned limit is
// that count, at once (after LEARN_DELAY_MS, while the pause holds the bucket anyway, so every
// instance's answers are in), kept in the store beside the bucket with a TTL: every instance, and
// one that restarts, shapes to it (limit-sources.ts composes it with the configured and announced
// limits). A lower count later lowers it again (the store keeps the minimum).
// Probing back up: after `quietWindows` windows without pushback, and at least a minute (never during
// a pause), one step up (max(1, limit / 20); Testmo: 1); a probe pushed back within its quiet time
// makes the next one wait twice as long (up to 16×). Reaching the configured limit forgets the learned one. Pushback while
// Sluice had already sent its whole limit in that window (the upstream's budget is shared with
// clients Sluice does not see) is learned as `shared`: it probes back after one quiet window, in
// steps of a tenth of the configured limit. `limit: auto` without announcements climbs from its
// start value (×1.25 every two quiet windows in which requests had to wait) until its first pushback.
import type { RouteConfig } from '../config/schema'
import { getProfile } from '../profiles'
import { hasLimitMemory, hasStoreClock, type BucketStore, type LearnedChange, type LearnedRecord, type LimitMemory } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import type { LimitSources } from './limit-sources'
import type { LimiterLog } from './store-failover'

/** An instance writes its answers to the store at most this often (ms)... */
export const FLUSH_MS = 100
/** ...and after a pushback, the learned limit is counted this much later (ms): by then every instance heard of the pause and wrote its answers. */
export const LEARN_DELAY_MS = 150
/** A learned limit is kept this long after its last change (ms), at least (a `shared` one, 20 windows). */
export const LEARNED_TTL_MS = 3_600_000
/** Windows without pushback before a probe up, by default... */
export const QUIET_WINDOWS = 10
/**
 * ...and at least this long (ms): at an upstream that did not raise its limit, a probe costs one 429
 * and its pause, so probes come once a minute at most (then 2, 4, 8, 16 minutes apart).
 */
export const PROBE_MIN_QUIET_MS = 60_000
/** A failed probe doubles the next quiet time, at most this many times. */
const MAX_BACKOFF_DOUBLINGS = 4

export interface ProbeContext {
  /** The ceiling of the learned limit: the configured (or announced, `limit: auto`) limit; Infinity for `limit: auto` with neither. */
  cap: number
  windowMs: number
  quietWindows: number
  /** Largest step up (1 for a profile whose repeated 429s escalate). */
  maxStep: number
  /** The least quiet time before a probe of a limit learned below Sluice's (ms). */
  minQuietMs: number
}

/** The next probe up from `record` (a pure function of it and the route's context), or undefined when none is due. */
export function nextProbe (record: LearnedRecord, ctx: ProbeContext): LearnedChange | undefined {
  const { cap, windowMs } = ctx
  let quietMs: number
  let step: number
  if (record.kind === 'climb') {
    quietMs = 2 * windowMs
    step = Math.max(1, Math.ceil(record.limit / 4))
  } else if (record.kind === 'shared') {
    quietMs = windowMs
    step = Math.max(1, Math.ceil((Number.isFinite(cap) ? cap : record.limit) / 10))
  } else {
    quietMs = Math.max(ctx.quietWindows * windowMs, ctx.minQuietMs) * 2 ** Math.min(record.failedProbes, MAX_BACKOFF_DOUBLINGS)
    step = Math.min(ctx.maxStep, Math.max(1, Math.floor(record.limit / 20)))
  }
  if (Math.min(record.sinceChangeMs, record.sincePushbackMs) < quietMs) return undefined
  const to = record.limit + step
  return { op: 'raise', from: record.limit, to: to >= cap ? undefined : to, windowMs, kind: record.kind, quietMs }
}

export interface LearnedLimitOptions {
  route: RouteConfig
  sources: LimitSources
  /** The store without instrumentation (learning is off the admission path). */
  store: BucketStore
  log: LimiterLog
  /** The least quiet time before a probe (ms); PROBE_MIN_QUIET_MS when undefined. */
  minQuietMs?: number
}

interface Answer { atMs: number, accepted: boolean }

export class LearnedLimit {
  private readonly route: RouteConfig
  private readonly sources: LimitSources
  private readonly store: BucketStore & LimitMemory
  private readonly log: LimiterLog
  /** The route's one bucket (learning is for routes with one budget: key instance). */
  readonly bucket: string
  private record: LearnedRecord | undefined
  /** When `record` was read (this process's clock), so its ages stay current. */
  private readAt = 0
  private pending: Answer[] = []
  private flushTimer: NodeJS.Timeout | undefined
  private nextProbeAt = 0
  /** Until then (ms, this process's clock) requests had to wait for their slot: there is demand to probe with. */
  private busyUntil = 0
  private closed = false
  private readonly minQuietMs: number

  /** A learner for `route`, or undefined where none applies (shadow mode, a keyed route, a store that keeps nothing). */
  static for (opts: LearnedLimitOptions): LearnedLimit | undefined {
    const { route, store } = opts
    // Learning is per route budget: not for a shadow route, a route keyed per credential (one key's
    // lesson must not shrink the others), or a route with several limits (which limit a 429 was of is
    // not known; its announced limits still apply, per limit).
    if (route.mode === 'shadow' || route.key.kind !== 'instance' || route.limits !== undefined || !hasLimitMemory(store)) return undefined
    return new LearnedLimit(opts, store)
  }

  private constructor (opts: LearnedLimitOptions, store: BucketStore & LimitMemory) {
    this.route = opts.route
    this.sources = opts.sources
    this.store = store
    this.log = opts.log
    this.bucket = opts.route.name
    this.minQuietMs = opts.minQuietMs ?? PROBE_MIN_QUIET_MS
    store.onLearned((bucket) => { if (bucket === this.bucket) void this.refresh() })
    // Any instance's pause: write this instance's answers now, for the instance that counts them.
    store.onPause((bucket) => { if (bucket === this.bucket) void this.flush() })
    void this.refresh()
  }

  close (): void {
    this.closed = true
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer)
  }

  /** The send time to note for an attempt (this process's clock, ms). */
  sentAt (): number {
    return nowMs()
  }

  /** The upstream answered an attempt sent at `sentAtMs` without pushing back. */
  accepted (sentAtMs: number, waited: boolean): void {
    if (waited) this.busyUntil = nowMs() + 2 * this.sources.effective.windowMs
    this.note({ atMs: sentAtMs + this.skewMs(), accepted: true })
    this.maybeProbe()
  }

  /** The upstream pushed back on an attempt sent at `sentAtMs`: count what it accepted before, and learn that. */
  async pushedBack (sentAtMs: number): Promise<void> {
    const atMs = sentAtMs + this.skewMs()
    this.note({ atMs, accepted: false })
    await this.flush()
    await new Promise((resolve) => setTimeout(resolve, LEARN_DELAY_MS).unref())
    if (this.closed) return
    const windowMs = this.sources.effective.windowMs
    const limitInForce = this.sources.effective.limit
    try {
      const { accepted, rejected } = await this.store.countAnswers(this.bucket, atMs - windowMs, atMs)
      const candidate = Math.max(1, accepted)
      if (candidate >= limitInForce && this.record === undefined) return
      // Sluice's own budget had room (it sent less than its limit in that window): the upstream's
      // limit is lower than Sluice's. Otherwise the upstream's budget is shared with others.
      const kind = accepted + rejected < limitInForce ? 'learned' : 'shared'
      const ttlMs = kind === 'shared' ? Math.max(60_000, 20 * windowMs) : Math.max(LEARNED_TTL_MS, 20 * windowMs)
      this.take(await this.store.changeLearned(this.bucket, { op: 'lower', limit: Math.min(candidate, limitInForce), windowMs, kind, probeMs: Math.max(this.probeQuietWindows() * windowMs, this.minQuietMs) }, ttlMs))
    } catch (err) {
      this.log('warn', { route: this.route.name, bucket: this.bucket, err: (err as Error).message }, 'could not learn from pushback; the pause still holds')
    }
  }

  private probeQuietWindows (): number {
    return getProfile(this.route.profile).probe?.quietWindows ?? QUIET_WINDOWS
  }

  private note (answer: Answer): void {
    this.pending.push(answer)
    this.flushTimer ??= setTimeout(() => { void this.flush() }, FLUSH_MS).unref()
  }

  private async flush (): Promise<void> {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    if (this.pending.length === 0 || this.closed) return
    const answers = this.pending
    this.pending = []
    await this.store.noteAnswers(this.bucket, answers, 2 * this.sources.effective.windowMs + 1000).catch(() => {})
  }

  /** The store's clock less this process's (ms): answers are logged in the store's clock, which every instance shares. */
  private skewMs (): number {
    return hasStoreClock(this.store) ? this.store.clockOffset()?.skewMs ?? 0 : 0
  }

  private maybeProbe (): void {
    const now = nowMs()
    if (now < this.nextProbeAt || now > this.busyUntil) return
    const route = this.route
    const windowMs = this.sources.effective.windowMs
    const announced = this.sources.announced
    const cap = route.limitAuto ? (announced === undefined ? Infinity : this.sources.inWindow(announced)) : route.limit.count
    let change: LearnedChange | undefined
    if (this.record === undefined) {
      // limit: auto with nothing announced and nothing learned: start climbing from the start value.
      if (!route.limitAuto || announced !== undefined) return
      const from = this.sources.effective.limit
      change = { op: 'lower', limit: from + Math.max(1, Math.ceil(from / 4)), windowMs, kind: 'climb', probeMs: 0 }
    } else {
      const aged = { ...this.record, sinceChangeMs: this.record.sinceChangeMs + now - this.readAt, sincePushbackMs: this.record.sincePushbackMs + now - this.readAt }
      change = nextProbe(aged, { cap, windowMs, quietWindows: this.probeQuietWindows(), maxStep: getProfile(route.profile).probe?.maxStep ?? Infinity, minQuietMs: this.minQuietMs })
    }
    // One try per window at most from this instance; the store refuses a probe another instance made first.
    this.nextProbeAt = now + windowMs
    if (change === undefined) return
    const ttlMs = Math.max(LEARNED_TTL_MS, 20 * windowMs)
    this.store.changeLearned(this.bucket, change, ttlMs).then((r) => this.take(r), () => {})
  }

  private async refresh (): Promise<void> {
    try {
      this.take(await this.store.learnedLimit(this.bucket))
    } catch {
      // Unreachable store: the limit in force stays; the next announcement or pushback reads it again.
    }
  }

  private take (record: LearnedRecord | undefined): void {
    if (this.closed) return
    this.record = record
    this.readAt = nowMs()
    this.sources.learn(record === undefined ? undefined : { limit: record.limit, windowMs: record.windowMs }, record?.kind)
  }
}
