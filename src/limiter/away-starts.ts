// The starts an instance made without Redis (its local share during an outage, or unshaped), per
// state in Redis: once Redis is back they are recorded there, at the times they were made, so every
// instance's next reservations count them. One route's bucket (store-failover.ts), or one limit's
// state of a route with several (limit-set.ts); this keeps the starts, the caller says when to record.
import type { BucketPolicy } from '../store/bucket-store'
import { nowMs } from '../store/clock'

/** Records one state's starts (epoch ms, sorted) in Redis; undefined when the store cannot. */
export type RecordStarts<T> = ((target: T, policy: BucketPolicy, startsMs: number[]) => Promise<unknown>) | undefined

interface Entry<T> { target: T, policy: BucketPolicy, starts: number[] }

export class AwayStarts<T> {
  /** Starts (epoch ms, nowMs clock, one per unit) per state. */
  private readonly entries = new Map<string, Entry<T>>()

  constructor (private readonly recordStarts: RecordStarts<T>) {}

  get size (): number {
    return this.entries.size
  }

  /**
   * A start made without Redis in the state `key` names (`target` is what the recorder takes;
   * `policy` is the live one: its window and margin say how long a start counts). A state's list
   * is pruned of starts older than a window once it holds twice its limit.
   */
  note (key: string, target: T, policy: BucketPolicy, startMs: number, cost: number): void {
    let entry = this.entries.get(key)
    if (entry === undefined) {
      entry = { target, policy, starts: [] }
      this.entries.set(key, entry)
    }
    for (let i = 0; i < cost; i++) entry.starts.push(startMs)
    if (entry.starts.length > 2 * entry.policy.limit) entry.starts = withinWindow(entry.starts, entry.policy)
  }

  /**
   * Those of the last window (and margin) are recorded in Redis once, and forgotten here. Best effort:
   * on an error the failover's transition (a local share taken with every Redis booking) still holds.
   */
  record (): void {
    const record = this.recordStarts
    if (record !== undefined) {
      for (const { target, policy, starts } of this.entries.values()) {
        const recent = withinWindow(starts, policy).sort((x, y) => x - y)
        if (recent.length > 0) void record(target, policy, recent).catch(() => {})
      }
    }
    this.entries.clear()
  }

  /** Forget starts older than a window and its margin, and states left without any. */
  forgetOld (): void {
    for (const [key, entry] of this.entries) {
      const recent = withinWindow(entry.starts, entry.policy)
      if (recent.length === 0) this.entries.delete(key)
      else if (recent.length < entry.starts.length) entry.starts = recent
    }
  }
}

/** The starts (epoch ms, nowMs clock) a window and its margin could still hold. */
function withinWindow (starts: number[], policy: BucketPolicy): number[] {
  const since = nowMs() - policy.windowMs - policy.marginMs
  return starts.filter((at) => at > since)
}
