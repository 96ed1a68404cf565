// What this instance did per bucket, recently: requests per second (forwarded, rejected, and the
// shadow verdicts), in flight, the last reservation's tokens, pauses, and the waits of the last
// minute (for percentiles). Fixed-size rings: the cost per bucket does not grow with traffic.

/** Seconds of per-second counts published in the heartbeat (the status page's "last minute"). */
export const SERIES_S = 60
/** Wait samples kept per bucket for percentiles (the newest ones within the last minute). */
const MAX_WAIT_SAMPLES = 2048

/** [epoch second, forwarded, rejected, would delay, would reject] */
export type SecondCounts = [number, number, number, number, number]

export type Counted = 'forwarded' | 'rejected' | 'wouldDelay' | 'wouldReject'
const COLUMN: Record<Counted, 1 | 2 | 3 | 4> = { forwarded: 1, rejected: 2, wouldDelay: 3, wouldReject: 4 }

export interface WaitPercentiles {
  p50: number
  p90: number
  p99: number
  /** samples they were computed from */
  count: number
}

export class BucketActivity {
  readonly route: string
  readonly bucket: string
  lastSeenMs = Date.now()
  inFlight = 0
  tokensRemaining: number | undefined
  /** A route with several limits: each limit's remaining as of the last reservation, in order. */
  limitsRemaining: number[] | undefined = undefined
  /** ms since epoch, this instance's clock */
  pausedUntilMs = 0
  /** One slot per second, as long as the budget window (at least SERIES_S, at most an hour). */
  private readonly slots: SecondCounts[]
  private readonly windowS: number
  private readonly waits: Array<{ at: number, ms: number }> = []
  private waitHead = 0

  constructor (route: string, bucket: string, windowS: number) {
    this.route = route
    this.bucket = bucket
    this.windowS = Math.max(1, Math.ceil(windowS))
    const size = Math.min(3600, Math.max(SERIES_S, this.windowS))
    this.slots = Array.from({ length: size }, () => [0, 0, 0, 0, 0] as SecondCounts)
  }

  count (what: Counted, nowMs = Date.now()): void {
    this.lastSeenMs = nowMs
    const sec = Math.floor(nowMs / 1000)
    const slot = this.slots[sec % this.slots.length]
    if (slot[0] !== sec) slot.splice(0, 5, sec, 0, 0, 0, 0)
    slot[COLUMN[what]]++
  }

  recordWait (ms: number, nowMs = Date.now()): void {
    if (this.waits.length < MAX_WAIT_SAMPLES) this.waits.push({ at: nowMs, ms })
    else {
      this.waits[this.waitHead] = { at: nowMs, ms }
      this.waitHead = (this.waitHead + 1) % MAX_WAIT_SAMPLES
    }
  }

  /** Per-second counts of the last SERIES_S seconds (the current one included), non-empty seconds only. */
  series (nowMs = Date.now()): SecondCounts[] {
    const now = Math.floor(nowMs / 1000)
    const out: SecondCounts[] = []
    for (const slot of this.slots) {
      if (slot[0] > now - SERIES_S && slot[0] <= now && (slot[1] | slot[2] | slot[3] | slot[4]) !== 0) out.push([...slot] as SecondCounts)
    }
    return out.sort((a, b) => a[0] - b[0])
  }

  /**
   * Requests forwarded in the last budget window, counted over the whole seconds before the current
   * one (a window of 1 s is the last complete second: the current one is only partly there).
   */
  forwardedInWindow (nowMs = Date.now()): number {
    const now = Math.floor(nowMs / 1000)
    let n = 0
    for (const slot of this.slots) if (slot[0] >= now - this.windowS && slot[0] < now) n += slot[1]
    return n
  }

  /** Nearest-rank percentiles of the waits of the last minute, ms. */
  waitPercentiles (nowMs = Date.now()): WaitPercentiles {
    const recent = this.waits.filter((w) => w.at > nowMs - SERIES_S * 1000).map((w) => w.ms).sort((a, b) => a - b)
    const at = (p: number): number => recent.length === 0 ? 0 : recent[Math.min(recent.length - 1, Math.ceil(p * recent.length) - 1)]
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), count: recent.length }
  }
}
