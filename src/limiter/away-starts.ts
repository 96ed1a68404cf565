// The starts an instance made without Redis (its local share during an outage, or unshaped), per
// bucket: once Redis is back they are recorded there, at the times they were made, so every
// instance's next reservations count them (store-failover.ts hands over; this keeps the starts).
import { hasStartRecorder, type BucketPolicy, type BucketStore } from '../store/bucket-store'
import { nowMs } from '../store/clock'

export class AwayStarts {
  /** Starts (epoch ms, nowMs clock, one per unit) per bucket. */
  private readonly starts = new Map<string, number[]>()

  /** `policy`: the route's live policy (its window and margin say how long a start counts). */
  constructor (private readonly store: BucketStore, private readonly policy: BucketPolicy) {}

  get size (): number {
    return this.starts.size
  }

  /**
   * A start made without Redis; a bucket's list is pruned of starts older than a window. `back`: the
   * route is on Redis again (booked locally just before another request switched back: the local
   * store answers after a turn of the event loop), so it is recorded now rather than at the next
   * outage's end.
   */
  note (bucket: string, startMs: number, cost: number, back: boolean): void {
    let starts = this.starts.get(bucket)
    if (starts === undefined) {
      starts = []
      this.starts.set(bucket, starts)
    }
    for (let i = 0; i < cost; i++) starts.push(startMs)
    if (back) return this.record()
    if (starts.length > 2 * this.policy.limit) this.starts.set(bucket, this.withinWindow(starts))
  }

  /**
   * Those of the last window (and margin) are recorded in Redis once, and forgotten here. Best effort:
   * on an error the failover's transition (a local share taken with every Redis booking) still holds.
   */
  record (): void {
    const store = this.store
    if (hasStartRecorder(store)) {
      for (const [bucket, starts] of this.starts) {
        const recent = this.withinWindow(starts).sort((x, y) => x - y)
        if (recent.length > 0) void store.recordStarts(bucket, this.policy, recent).catch(() => {})
      }
    }
    this.starts.clear()
  }

  /** Forget starts older than a window and its margin, and buckets left without any. */
  forgetOld (): void {
    for (const [name, starts] of this.starts) {
      const recent = this.withinWindow(starts)
      if (recent.length === 0) this.starts.delete(name)
      else if (recent.length < starts.length) this.starts.set(name, recent)
    }
  }

  /** The starts (epoch ms, nowMs clock) a window and its margin could still hold. */
  private withinWindow (starts: number[]): number[] {
    const since = nowMs() - this.policy.windowMs - this.policy.marginMs
    return starts.filter((at) => at > since)
  }
}
