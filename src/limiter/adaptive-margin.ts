// The margin a route needs on its path, from what that path shows (pure: no timers, no I/O; the
// caller passes the time). The margin protects against one request of a window reaching the
// upstream later than the next window's request reaches it after their reserved starts: it must
// cover how late a request leaves after its start (a busy event loop, a new connection) plus how much
// the trip to the upstream varies. Both are measured per forwarded request (margin-probe.ts):
//   need = safety × (p99 of lateness + half the spread (p99 − p1) of response times)
// over the recent samples (those of the last horizon: the window and cap, at least 1 s; and always
// the latest minSamples), within [floor, cap]; the configured `margin` is the cap. And never
// less than safety × the latest of the requests sent within the last window (and cap): a start booked
// now is counted against those, whatever share of the 256 samples they are (a p99 of 256 lets the
// few requests a burst of arrivals delayed at the start of a 10 s window go, while the starts of the
// next window are booked against them).
//   need = max(that, safety × the most lateness among requests sent in the last window + cap ms)
// The horizon keeps a burst's first requests (a cold process admitting hundreds of arrivals at once,
// up to 100 ms late) from holding the margin wide for the 256 samples a quiet route takes minutes to
// replace: what they threaten is the next window, and the latest-in-window rule covers that.
// The margin widens at once (one late sample is enough) and narrows slowly (the gap to the
// estimate halves every narrowHalfLifeMs, or every half window when that is shorter), and not at
// all for a while after a pushback caused by jitter (see pushback()).

export interface MarginSettings {
  /** The configured margin: never above it. */
  capMs: number
  /** Never below it. */
  floorMs: number
  /** Times the measured need. */
  safety: number
  /** Samples before the estimate replaces the cap. */
  minSamples: number
  /** Samples the percentiles are taken over (the most recent ones, within the horizon). */
  keep: number
  /** Samples older than this many (window + cap) are left out of the percentiles (the latest minSamples never are). */
  horizonWindows: number
  /** ... and never a horizon shorter than this, ms. */
  horizonMinMs: number
  /** The gap between the margin and a lower estimate halves this often, or every half window when that is sooner. */
  narrowHalfLifeMs: number
  /** No narrowing for this long after a pushback caused by jitter. */
  holdAfterPushbackMs: number
  /** The route's window (ms): lateness within the last window and cap bounds the estimate from below. */
  windowMs: number
}

export const MARGIN_DEFAULTS: Omit<MarginSettings, 'capMs'> = {
  floorMs: 5,
  safety: 1.5,
  minSamples: 8,
  keep: 256,
  horizonWindows: 1,
  horizonMinMs: 1000,
  narrowHalfLifeMs: 1500,
  holdAfterPushbackMs: 30_000,
  windowMs: 1000
}

/**
 * Estimates are worked out again after this many samples and this long (ms), whichever comes last: a
 * late sample widens at once, and narrowing takes seconds, so a busy route sorts its samples at most
 * ten times a second, not every 16 requests. A quiet one (an instance's share of 20/s is 7 requests a
 * second) does so on any sample RECOMPUTE_IDLE_MS after the last estimate: counting 16 samples held
 * its margin at the cap for the first four windows of a 1 s route, and the narrowing is timed by its
 * half-life, not by how many requests came.
 */
const RECOMPUTE_EVERY = 16
const RECOMPUTE_AFTER_MS = 100
const RECOMPUTE_IDLE_MS = 250
/** Spans the last window (and cap) is cut into for its latest lateness: bounded, whatever the rate. */
const WINDOW_BUCKETS = 64

export type PushbackCause = 'jitter' | 'lower-limit'

/**
 * What an upstream 429 means: when the upstream had accepted a full window of Sluice's starts (or one
 * less) before the refused request, it counted a start of the window before: the margin was too
 * narrow. Fewer than that, and the upstream's limit is lower than the configured one. `full`: what
 * Sluice books in one window at most, evenly paced (fullWindow); `slack` widens "one less" where the
 * count is an estimate (n instances each counting their own starts, times n).
 */
export function pushbackCause (bookedBefore: number, full: number, slack = 1): PushbackCause {
  return bookedBefore >= Math.floor(full) - Math.max(1, slack) ? 'jitter' : 'lower-limit'
}

/**
 * Starts in one window when `limit` are booked per window plus margin, evenly paced (a token bucket's
 * backlog; a sliding window may book the whole limit at once, more than this, never less).
 */
export function fullWindow (limit: number, windowMs: number, marginMs: number): number {
  return limit * windowMs / (windowMs + marginMs)
}

/** The value at fraction q (0..1) of sorted values (nearest rank). */
export function quantile (sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i]
}

export class AdaptiveMargin {
  readonly settings: MarginSettings
  private margin: number
  private readonly late: Float64Array
  private readonly response: Float64Array
  /** When each sample was taken (the caller's clock). */
  private readonly takenAt: Float64Array
  /** The latest lateness in each of WINDOW_BUCKETS spans of (window + cap) / (WINDOW_BUCKETS − 1) ms, and which span it is. */
  private readonly spanLate = new Float64Array(WINDOW_BUCKETS)
  /** The widest margin in force at a sample, per span: what the window's starts were booked with. */
  private readonly spanMargin = new Float64Array(WINDOW_BUCKETS)
  private readonly spanId = new Float64Array(WINDOW_BUCKETS).fill(-1)
  private spanMs: number
  private lastNow = 0
  private count = 0
  private sinceRecompute = 0
  private lastNarrowAt: number | undefined
  private recomputedAt = -Infinity
  private holdUntil = -Infinity
  private estimate: number | undefined

  constructor (settings: Partial<MarginSettings> & { capMs: number }) {
    this.settings = { ...MARGIN_DEFAULTS, ...settings }
    // Until the path is measured, the configured margin.
    this.margin = this.settings.capMs
    this.late = new Float64Array(this.settings.keep)
    this.response = new Float64Array(this.settings.keep)
    this.takenAt = new Float64Array(this.settings.keep)
    this.spanMs = (this.settings.windowMs + this.settings.capMs) / (WINDOW_BUCKETS - 1)
  }

  /** The margin in force, ms. */
  get marginMs (): number {
    return this.margin
  }

  /** The latest estimate of what the path needs (before the cap), ms; undefined until minSamples. */
  get neededMs (): number | undefined {
    return this.estimate
  }

  get samples (): number {
    return Math.min(this.count, this.settings.keep)
  }

  /** A new cap (the configured margin changed, or `limit: auto` adopted another window). */
  setCap (capMs: number): void {
    this.settings.capMs = capMs
    this.margin = Math.min(this.margin, capMs)
    this.respan()
  }

  /** The route's window changed (`limit: auto` adopted another, or a reload). */
  setWindow (windowMs: number): void {
    this.settings.windowMs = windowMs
    this.respan()
  }

  /** The latest lateness sent within the last window and cap before `now` (0 when none). */
  latestInWindow (now: number): number {
    return this.mostInWindow(this.spanLate, now)
  }

  /**
   * The widest margin in force within the last window and cap before `now`, the one in force now
   * included: the starts of the upstream's last window were booked with margins up to this wide, so
   * fewer of them fit than today's margin would book (see pushback()).
   */
  widestInWindow (now: number): number {
    return Math.max(this.margin, this.mostInWindow(this.spanMargin, now))
  }

  private mostInWindow (values: Float64Array, now: number): number {
    const first = Math.floor(now / this.spanMs) - (WINDOW_BUCKETS - 1)
    let most = 0
    for (let i = 0; i < WINDOW_BUCKETS; i++) if (this.spanId[i] >= first) most = Math.max(most, values[i])
    return most
  }

  private noteInWindow (latenessMs: number, marginMs: number, now: number): void {
    const id = Math.floor(now / this.spanMs)
    const slot = id % WINDOW_BUCKETS
    if (this.spanId[slot] !== id) {
      this.spanId[slot] = id
      this.spanLate[slot] = 0
      this.spanMargin[slot] = 0
    }
    this.spanLate[slot] = Math.max(this.spanLate[slot], latenessMs)
    this.spanMargin[slot] = Math.max(this.spanMargin[slot], marginMs)
  }

  /** New span lengths: what the old ones held is kept, conservatively, as one sample at the last one's time. */
  private respan (): void {
    const latest = this.latestInWindow(this.lastNow)
    const widest = this.mostInWindow(this.spanMargin, this.lastNow)
    this.spanMs = (this.settings.windowMs + this.settings.capMs) / (WINDOW_BUCKETS - 1)
    this.spanId.fill(-1)
    if (latest > 0 || widest > 0) this.noteInWindow(latest, widest, this.lastNow)
  }

  /**
   * One forwarded request: how late it left after its reserved start, and how long the upstream took
   * to answer (undefined when no answer came). Returns the margin in force afterwards.
   */
  sample (latenessMs: number, responseMs: number | undefined, now: number): number {
    const i = this.count % this.settings.keep
    this.late[i] = Math.max(0, latenessMs)
    this.response[i] = responseMs ?? NaN
    this.takenAt[i] = now
    this.lastNow = now
    this.noteInWindow(Math.max(0, latenessMs), this.margin, now)
    this.count++
    this.sinceRecompute++
    const { safety } = this.settings
    // Widen at once: a request later than the margin covers cannot wait for the percentiles.
    if (this.count >= this.settings.minSamples && safety * latenessMs > this.margin) {
      this.widenTo(safety * latenessMs)
      this.lastNarrowAt = now
    }
    if (this.count >= this.settings.minSamples && this.due(now)) this.recompute(now)
    return this.margin
  }

  private due (now: number): boolean {
    if (this.estimate === undefined) return true
    const since = now - this.recomputedAt
    return since >= RECOMPUTE_IDLE_MS || (this.sinceRecompute >= RECOMPUTE_EVERY && since >= RECOMPUTE_AFTER_MS)
  }

  /**
   * The upstream pushed back. `bookedBefore`: starts Sluice booked in the upstream's window before
   * the refused one (and the upstream accepted); `full`: see pushbackCause. Jitter widens the margin
   * (doubles it, by the floor at least, and back to the widest it was within the last window: the
   * narrowing since went too far) and holds it.
   */
  pushback (bookedBefore: number, full: number, now: number, slack = 1): PushbackCause {
    const cause = pushbackCause(bookedBefore, full, slack)
    if (cause === 'jitter') {
      this.widenTo(Math.max(2 * this.margin, this.margin + this.settings.floorMs, this.widestInWindow(now)))
      this.holdUntil = now + this.settings.holdAfterPushbackMs
    }
    return cause
  }

  /** The path went cold (no warm connection left): back to at least `coldMs` until it is measured again. */
  cold (coldMs: number): number {
    this.widenTo(coldMs)
    return this.margin
  }

  /** The samples of the horizon (at least the latest minSamples), sorted: typed arrays sort numerically, NaN (no answer) last. */
  private recent (now: number): { late: Float64Array, all: Float64Array } {
    const { keep, minSamples, horizonWindows, horizonMinMs, windowMs, capMs } = this.settings
    const n = this.samples
    const since = now - Math.max(horizonMinMs, horizonWindows * (windowMs + capMs))
    const late = new Float64Array(n)
    const all = new Float64Array(n)
    let k = 0
    // Newest first: the ring's latest sample is at count - 1.
    for (let j = 1; j <= n; j++) {
      const i = (this.count - j) % keep
      if (j > minSamples && this.takenAt[i] < since) break
      late[k] = this.late[i]
      all[k++] = this.response[i]
    }
    return { late: late.subarray(0, k).sort(), all: all.subarray(0, k).sort() }
  }

  private widenTo (ms: number): void {
    const { capMs, floorMs } = this.settings
    this.margin = Math.min(capMs, Math.max(this.margin, floorMs, ms))
  }

  private recompute (now: number): void {
    this.sinceRecompute = 0
    this.recomputedAt = now
    const { late, all } = this.recent(now)
    let answered = all.length
    while (answered > 0 && Number.isNaN(all[answered - 1])) answered--
    const resp = all.subarray(0, answered)
    const spread = resp.length === 0 ? 0 : (quantile(resp, 0.99) - quantile(resp, 0.01)) / 2
    const { safety, floorMs, capMs, narrowHalfLifeMs } = this.settings
    const need = Math.min(capMs, Math.max(floorMs, safety * (quantile(late, 0.99) + spread), safety * this.latestInWindow(now)))
    this.estimate = need
    if (need >= this.margin) {
      this.widenTo(need)
      this.lastNarrowAt = now
      return
    }
    if (now < this.holdUntil) {
      this.lastNarrowAt = now
      return
    }
    // Slowly, but in windows: each window's starts are booked with the margin of the window before, so
    // a 1 s window narrowing by 1.5 s half-lives kept its second to fourth windows 90 / 50 / 30 ms
    // wider than they needed (50/s, 3 instances); the latest-in-window rule and widening at once
    // still guard what a faster narrowing could let through.
    const halfLifeMs = Math.min(narrowHalfLifeMs, this.settings.windowMs / 2)
    const since = this.lastNarrowAt === undefined ? halfLifeMs : now - this.lastNarrowAt
    this.lastNarrowAt = now
    const kept = Math.pow(0.5, Math.max(0, since) / halfLifeMs)
    this.margin = Math.max(need, need + (this.margin - need) * kept)
  }
}
