// A bucket's state lost in Redis while the connection stays up (FLUSHALL, eviction, a promoted replica
// that missed writes): each reservation tells the generation of the state it booked in, and an instance
// that has starts of the last window sends the one it saw last (includes/generation.lua). When Redis
// has another, nothing is booked: the instance records its starts of the last window (and those still
// ahead) again, as after an outage (store-failover.ts recordAway), waits out the short gather in which
// every other instance does the same (they hear of the loss on the pause channel), and books again.
// So what is booked after a loss is measured against every instance's starts, not against nothing.
import type { RouteConfig } from '../config/schema'
import { hasStateLossNotice, hasStoreClock, hasStoreDistance, type BucketPolicy, type BucketStore, type GenerationWatch, type Reservation, type StartRecorder } from '../store/bucket-store'
import { nowMs } from '../store/clock'

/** The gather after a loss: this much beyond two round trips (ms), for the others to hear of it and record. */
const GATHER_SLACK_MS = 50
/** A route logs a loss at most once in this long (ms): a FLUSHALL loses every bucket of a keyed route at once. */
const LOG_EVERY_MS = 60_000

/** As store-failover.ts's RepairLog (not imported: that module builds this one). */
type RepairLog = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void

interface Known {
  /** The generation of the bucket's state this instance booked in last. */
  generation: number
  /** This instance's starts (store clock, epoch ms, one per unit), oldest first: those of the last window and those ahead. */
  starts: number[]
  /** The latest of `starts` (store clock): whether any is recent is one comparison, not a scan. */
  newest: number
  /** Recording them again after a loss (one at a time per bucket). */
  repairing?: Promise<void>
}

export class StateRepair {
  private readonly route: RouteConfig
  private readonly store: BucketStore & StartRecorder
  private readonly policy: BucketPolicy
  private readonly log: RepairLog
  private readonly known = new Map<string, Known>()
  private loggedAt = -Infinity
  private readonly lost = { repairs: 0, startsRecorded: 0 }

  constructor (route: RouteConfig, store: BucketStore & StartRecorder, policy: BucketPolicy, log: RepairLog) {
    this.route = route
    this.store = store
    this.policy = policy
    this.log = log
    // Another instance found the state lost: record this one's starts now, not at its next reservation
    // (its requests may all be booked already, and would start unrecorded).
    if (hasStateLossNotice(store)) {
      store.onStateLost((bucket, generation) => {
        if (this.known.has(bucket)) void this.repair(bucket, generation).catch(() => {})
      })
    }
  }

  /** Losses repaired and starts recorded again, for tests and metrics. */
  get stats (): Readonly<{ repairs: number, startsRecorded: number }> {
    return this.lost
  }

  /** What a reservation in `bucket` sends: the generation expected when this instance has starts there. */
  watch (bucket: string): GenerationWatch {
    const distance = hasStoreDistance(this.store) ? this.store.reserveRoundTrips()?.medianMs ?? 0 : 0
    const gatherMs = 2 * distance + GATHER_SLACK_MS
    const k = this.known.get(bucket)
    return k !== undefined && k.newest > this.since() ? { expect: k.generation, gatherMs } : { gatherMs }
  }

  /** A reservation the shared store admitted: its start is remembered (bounded: the last window's and those ahead). */
  note (bucket: string, reservation: Reservation, cost: number): void {
    const generation = reservation.generation
    if (!reservation.admitted || generation === undefined || reservation.startMs === undefined) return
    let k = this.known.get(bucket)
    if (k === undefined) {
      k = { generation, starts: [], newest: -Infinity }
      this.known.set(bucket, k)
    }
    if (generation < k.generation) {
      // Booked before the loss, answered after this instance recorded its starts again: not among them.
      void this.record(bucket, Array<number>(cost).fill(reservation.startMs)).catch(() => {})
    } else {
      k.generation = generation
    }
    for (let i = 0; i < cost; i++) k.starts.push(reservation.startMs)
    if (reservation.startMs > k.newest) k.newest = reservation.startMs
    if (k.starts.length > 2 * this.policy.limit + 64) k.starts = this.recent(k)
  }

  /** The state Redis answered from is `generation`, not the one this instance booked in: record its starts there again. */
  async repair (bucket: string, generation: number): Promise<void> {
    const k = this.known.get(bucket)
    if (k === undefined) return
    if (k.generation >= generation) {
      await k.repairing
      return
    }
    k.generation = generation
    const starts = this.recent(k)
    k.starts = starts
    if (starts.length === 0) return
    k.repairing = this.record(bucket, starts).finally(() => { k.repairing = undefined })
    this.lost.repairs++
    this.lost.startsRecorded += starts.length
    const now = performance.now()
    if (now - this.loggedAt >= LOG_EVERY_MS) {
      this.loggedAt = now
      this.log('warn', { route: this.route.name, bucket, starts: starts.length },
        `route ${this.route.name}: bucket state lost in Redis (flushed, evicted, or a replica promoted without it); re-recorded ${starts.length} starts of this instance`)
    }
    await k.repairing
  }

  /** Forget buckets admission no longer remembers (its sweep of idle buckets). */
  forgetBeyond (remembered: ReadonlyMap<string, unknown>): void {
    for (const name of this.known.keys()) if (!remembered.has(name)) this.known.delete(name)
  }

  /** Starts (store clock) in a window and margin back from now, or still ahead. */
  private recent (k: Known): number[] {
    const since = this.since()
    return k.starts.filter((at) => at > since)
  }

  /** The store-clock time before which a start no longer counts: a window and margin back from now. */
  private since (): number {
    const skewMs = hasStoreClock(this.store) ? this.store.clockOffset()?.skewMs ?? 0 : 0
    return nowMs() + skewMs - this.policy.windowMs - this.policy.marginMs
  }

  /** Starts in the store's clock, recorded by recordStarts (which takes this process's clock). */
  private async record (bucket: string, starts: number[]): Promise<void> {
    if (starts.length === 0) return
    const skewMs = hasStoreClock(this.store) ? this.store.clockOffset()?.skewMs ?? 0 : 0
    await this.store.recordStarts(bucket, this.policy, starts.map((at) => at - skewMs).sort((x, y) => x - y))
  }
}
