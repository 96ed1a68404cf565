// What a route's limiter remembers of each bucket in this process: how many of its requests wait
// here (the maxQueue bound is per instance) and its newest local start (a useful Retry-After for
// QUEUE_FULL; the store failover's local share reads it too). Every distinct credential of a keyed
// route is a bucket, so both are swept: once they hold more than SWEEP_ABOVE buckets (and then twice
// as many as were left), and by forgetIdle when traffic has stopped.
import { sleep, type CancelSignal } from './cancel'

/** Per-bucket memory of a limiter is swept of idle buckets beyond this many (noteStart). */
const SWEEP_ABOVE = 1024

export class LocalBuckets {
  /** Newest local start per bucket, ms since epoch. */
  readonly lastStart = new Map<string, number>()
  /** Requests of this instance waiting per bucket. */
  private readonly waiting = new Map<string, number>()
  /** Requests of this instance waiting, in all buckets. */
  private waitingTotal = 0
  private sweepAbove = SWEEP_ABOVE

  /**
   * `idleMs`: how long without a start makes a bucket idle (the window and its margin, read live);
   * `swept`: told the buckets still remembered after each sweep, to forget the others too.
   */
  constructor (private readonly idleMs: () => number, private readonly swept: (kept: ReadonlyMap<string, number>) => void) {}

  waitingIn (bucket: string): number {
    return this.waiting.get(bucket) ?? 0
  }

  /** Requests waiting in all buckets, and how many buckets they wait in. */
  waitingAll (): { requests: number, buckets: number } {
    return { requests: this.waitingTotal, buckets: this.waiting.size }
  }

  noteStart (bucket: string, startMs: number): void {
    this.lastStart.set(bucket, Math.max(this.lastStart.get(bucket) ?? 0, startMs))
    if (this.lastStart.size > this.sweepAbove) this.forgetIdle(Date.now())
  }

  /**
   * Forget buckets without a start for a window and its margin and nothing waiting: they hold nothing
   * that matters (their newest reservation can no longer be given back usefully, nor their last
   * start delay anything).
   */
  forgetIdle (now: number): void {
    const idleBefore = now - this.idleMs()
    for (const [name, last] of this.lastStart) {
      if (last >= idleBefore || this.waiting.has(name)) continue
      this.lastStart.delete(name)
    }
    this.swept(this.lastStart)
    this.sweepAbove = Math.max(SWEEP_ABOVE, 2 * this.lastStart.size)
  }

  /** Sleep `ms` as one of the bucket's waiting requests; false when `signal` fired first. */
  async wait (bucket: string, ms: number, signal: CancelSignal): Promise<boolean> {
    this.waiting.set(bucket, (this.waiting.get(bucket) ?? 0) + 1)
    this.waitingTotal++
    try {
      return await sleep(ms, signal)
    } finally {
      this.waitingTotal--
      const left = (this.waiting.get(bucket) ?? 1) - 1
      if (left <= 0) this.waiting.delete(bucket)
      else this.waiting.set(bucket, left)
    }
  }

  sizes (): { lastStart: number, waiting: number } {
    return { lastStart: this.lastStart.size, waiting: this.waiting.size }
  }
}
