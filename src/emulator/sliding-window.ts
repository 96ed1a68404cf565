// Exact sliding-window log: at most `limit` accepted arrivals in ANY window of `windowMs` ms.
// Windows are half-open: arrivals exactly `windowMs` apart never share one. All times are in ms.

export class SlidingWindowLog {
  private times: number[] = []
  private head = 0

  constructor (readonly limit: number, readonly windowMs: number) {}

  /** Accepted arrivals within (now - windowMs, now]. */
  count (now: number): number {
    this.evict(now)
    return this.times.length - this.head
  }

  /** Accepts (and counts) the arrival when fewer than `limit` are in the window ending at `now`. */
  tryAccept (now: number): boolean {
    if (this.count(now) >= this.limit) return false
    this.times.push(now)
    return true
  }

  /** ms from `now` until fewer than `n` accepted arrivals remain in the window; 0 when already so. */
  msUntilBelow (n: number, now: number): number {
    const c = this.count(now)
    if (c < n) return 0
    // The (c - n + 1) oldest must leave; the last of them leaves windowMs after it arrived.
    return this.times[this.head + c - Math.max(n, 1)]! + this.windowMs - now
  }

  /** ms from `now` until the oldest accepted arrival leaves the window; `windowMs` when it is empty. */
  msUntilOldestLeaves (now: number): number {
    return this.count(now) === 0 ? this.windowMs : this.times[this.head]! + this.windowMs - now
  }

  clear (): void {
    this.times = []
    this.head = 0
  }

  private evict (now: number): void {
    const cutoff = now - this.windowMs
    while (this.head < this.times.length && this.times[this.head]! <= cutoff) this.head++
    // Compact now and then so a long run does not keep every timestamp it ever saw.
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head)
      this.head = 0
    }
  }
}

/**
 * Largest number of `times` (ms) inside any half-open window of `windowMs` ms, in O(n) with two
 * pointers (plus a sort when `times` is not already ascending). Used on the emulator's own log and on
 * any time list a benchmark, a test or the demo gathers.
 */
export function maxInWindow (times: readonly number[], windowMs: number): number {
  return densestWindow(times, windowMs).count
}

/** The same, with where the densest window begins (its first time; undefined for no times). */
export function densestWindow (times: readonly number[], windowMs: number): { from: number | undefined, count: number } {
  if (!(typeof windowMs === 'number' && windowMs > 0)) {
    throw new TypeError(`maxInWindow windowMs: expected a number of ms > 0, received ${String(windowMs)} (${typeof windowMs})`)
  }
  let sorted = times
  for (let i = 1; i < times.length; i++) {
    if (times[i]! < times[i - 1]!) {
      sorted = [...times].sort((a, b) => a - b)
      break
    }
  }
  let best = 0
  let from: number | undefined
  let lo = 0
  for (let hi = 0; hi < sorted.length; hi++) {
    while (sorted[lo]! <= sorted[hi]! - windowMs) lo++
    if (hi - lo + 1 > best) {
      best = hi - lo + 1
      from = sorted[lo]
    }
  }
  return { from, count: best }
}
