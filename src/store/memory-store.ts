// The embedded default: buckets in this process's memory. The same arithmetic as the Lua scripts
// in ./lua, step for step, so one contract suite holds for both stores.
import { EventEmitter } from 'node:events'
import { nowUs } from './clock'
import { slidingWindowParams, tokenBucketParams, type BucketPeek, type BucketPolicy, type BucketStore, type GenerationWatch, type LearnedChange, type LearnedRecord, type LimitBooking, type LimitMemory, type LimitRef, type MultiLimitStore, type MultiReservation, type Reservation, type StateLossNotice, type TeamBoard } from './bucket-store'
import { LearnedMemory } from './learned-memory'
import { MemoryLeases } from './memory-leases'
import { postponeInList, pushStarts, reserveLimitsIn, used } from './memory-limits'

interface Bucket {
  /** token-bucket theoretical arrival time, µs */
  tat: number
  /** sliding-window reserved starts, µs, non-decreasing, from index `head` on */
  starts: number[]
  head: number
  /** the newest start trimmed off `starts`, µs (0: none): it may still be ahead (see the script) */
  floor: number
  /** no start before this, µs */
  pausedUntil: number
  /** when the bucket holds nothing worth keeping, µs */
  expiresAt: number
  /** which incarnation of the bucket this is (µs when it was made), and the end of a gather after a loss, µs */
  generation: number
  gatherUntil: number
}

/** How often buckets that hold nothing worth keeping (past their window, unpaused) are dropped, ms. */
const SWEEP_EVERY_MS = 60_000

function emptyBucket (): Bucket {
  return { tat: 0, starts: [], head: 0, floor: 0, pausedUntil: 0, expiresAt: 0, generation: nowUs(), gatherUntil: 0 }
}

/** A limit's bucket name: the tag's own for state '' (so `pause(tag)` pauses it), else under it. */
function limitName (ref: LimitRef): string {
  return ref.state === '' ? ref.tag : `${ref.tag}|${ref.state}`
}

export class MemoryStore implements BucketStore, TeamBoard, MultiLimitStore, LimitMemory, StateLossNotice {
  readonly kind = 'memory' as const
  private readonly buckets = new Map<string, Bucket>()
  /** Heartbeats: id -> snapshot and its expiry (ms since epoch); in memory only this process beats. */
  private readonly beats = new Map<string, { snapshot: string, expiresAt: number }>()
  private readonly sweeper: NodeJS.Timeout
  /** 'paused' and 'lost': what the Redis store hears on its channels, here from this process only. */
  private readonly announced = new EventEmitter()

  /** `sweepEveryMs`: how often idle buckets are dropped (tests use a short one). */
  constructor (options: { sweepEveryMs?: number } = {}) {
    // Idle buckets (one per credential with key: header:…) must not accumulate forever.
    this.sweeper = setInterval(() => this.sweep(), options.sweepEveryMs ?? SWEEP_EVERY_MS)
    this.sweeper.unref()
    this.announced.setMaxListeners(0)
  }

  /** Buckets held now (bounded-state tests). */
  get bucketCount (): number {
    return this.buckets.size
  }

  private bucket (name: string): Bucket {
    let b = this.buckets.get(name)
    if (b === undefined) {
      b = emptyBucket()
      this.buckets.set(name, b)
    }
    return b
  }

  private sweep (): void {
    const now = nowUs()
    for (const [name, b] of this.buckets) if (b.expiresAt < now && b.pausedUntil < now) this.buckets.delete(name)
  }

  /** As the scripts (includes/generation.lua): a reservation that books nothing while the state is another than expected, or gathered again. */
  private lost (name: string, b: Bucket, now: number, watch: GenerationWatch | undefined): Reservation | undefined {
    if (watch?.expect !== undefined && watch.expect !== b.generation && b.gatherUntil <= now) {
      b.gatherUntil = now + Math.round(watch.gatherMs * 1000)
      this.announced.emit('lost', name, b.generation)
    }
    if (b.gatherUntil <= now) return undefined
    return { ...refusal(b.gatherUntil - now, 0, b.gatherUntil), generation: b.generation, stateLost: true }
  }

  async reserve (name: string, policy: BucketPolicy, cost: number, maxWaitMs: number, watch?: GenerationWatch): Promise<Reservation> {
    const now = nowUs()
    const b = this.bucket(name)
    const lost = this.lost(name, b, now, watch)
    if (lost !== undefined) return lost
    const reservation = this.book(b, policy, cost, Math.round(maxWaitMs * 1000), now)
    reservation.generation = b.generation
    return reservation
  }

  private book (b: Bucket, policy: BucketPolicy, cost: number, maxWait: number, now: number): Reservation {
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      const base = Math.max(b.tat, now, b.pausedUntil)
      const newTat = base + intervalUs * cost
      const start = Math.max(now, b.pausedUntil, newTat - intervalUs - tauUs)
      const wait = start - now
      if (wait > maxWait) return refusal(wait, Math.max(0, b.tat - now), start)
      b.tat = newTat
      // As the script's generation: kept a window after the start.
      b.expiresAt = Math.max(newTat, start + (policy.windowMs + policy.marginMs) * 1000) + 1_000_000
      const remaining = Math.max(0, Math.floor((now + tauUs + intervalUs - newTat) / intervalUs))
      return admitted(wait, remaining, newTat - now, newTat, start)
    }
    const { windowUs, keep, padUs } = slidingWindowParams(policy)
    const len = b.starts.length - b.head
    let start = Math.max(now, b.pausedUntil)
    const back = policy.limit - cost + 1
    // As the script: a start the window had room for is recorded one pad later, never before the last,
    // when nothing `back` places back stood in its way (a first window) or a pause ended; with fewer
    // entries than `back` (some given back), the newest start trimmed stands in.
    let roomy = true
    const ref = len >= back ? b.starts[b.starts.length - back] + windowUs : b.floor > 0 ? b.floor + windowUs : 0
    if (ref > start) {
      start = ref
      roomy = false
    }
    const wait = start - now
    if (wait > maxWait) {
      const last = len > 0 ? b.starts[b.starts.length - 1] : now
      return refusal(wait, Math.max(0, last + windowUs - now), start)
    }
    let recorded = roomy && (ref === 0 || b.pausedUntil > now) ? start + padUs : start
    if (len > 0) recorded = Math.max(recorded, b.starts[b.starts.length - 1])
    pushStarts(b, recorded, cost, keep)
    b.expiresAt = recorded + windowUs + 1_000_000
    let remaining = 0
    if (start <= now) remaining = Math.max(0, policy.limit - used(b, policy.limit, windowUs, now))
    return admitted(wait, remaining, recorded + windowUs - now, recorded, start)
  }

  async reserveLimits (bookings: readonly LimitBooking[], pause: LimitRef, maxWaitMs: number): Promise<MultiReservation> {
    const states = bookings.map((b) => this.bucket(limitName(b.ref)))
    return reserveLimitsIn(states, bookings, this.buckets.get(limitName(pause))?.pausedUntil ?? 0, maxWaitMs, nowUs())
  }

  async releaseLimit (booking: LimitBooking, ticket: number): Promise<boolean> {
    return ticket !== 0 && await this.release(limitName(booking.ref), booking.policy, booking.cost, ticket)
  }

  async pauseLimit (ref: LimitRef, bucket: string, delayMs: number): Promise<number> {
    return await this.pauseNamed(limitName(ref), bucket, delayMs)
  }

  /**
   * No start of limit `ref` before `delayMs` from now, in its own state (not a pause, which holds every
   * limit of a reservation): a token bucket's arrival time moves there, a sliding window is filled
   * with `limit` starts a window before it. A shorter hold never shortens a longer one.
   */
  holdLimit (ref: LimitRef, policy: BucketPolicy, delayMs: number): void {
    const b = this.bucket(limitName(ref))
    const until = nowUs() + Math.round(delayMs * 1000)
    if (policy.algorithm === 'token-bucket') {
      b.tat = Math.max(b.tat, until + tokenBucketParams(policy).tauUs)
      b.expiresAt = Math.max(b.expiresAt, b.tat + 1_000_000)
      return
    }
    const { windowUs, keep } = slidingWindowParams(policy)
    const newest = b.starts.length > b.head ? b.starts[b.starts.length - 1] : 0
    pushStarts(b, Math.max(until - windowUs, newest), policy.limit, keep)
    b.expiresAt = Math.max(b.expiresAt, until + 1_000_000)
  }

  async peekLimit (ref: LimitRef, pause: LimitRef, policy: BucketPolicy): Promise<BucketPeek> {
    const peek = await this.peek(limitName(ref), policy)
    const pausedForMs = Math.max(0, (this.buckets.get(limitName(pause))?.pausedUntil ?? 0) - nowUs()) / 1000
    return pausedForMs > 0 ? { ...peek, remaining: 0, pausedForMs } : peek
  }

  async release (name: string, policy: BucketPolicy, cost: number, ticket: number): Promise<boolean> {
    const b = this.buckets.get(name)
    if (b === undefined) return false
    if (policy.algorithm === 'token-bucket') {
      if (b.tat !== ticket) return false
      b.tat = ticket - tokenBucketParams(policy).intervalUs * cost
      return true
    }
    // As the script: the entries are taken out wherever they are (the request never left).
    // Equal entries sit together (the list is sorted): the last `cost` of them, the newest first.
    const last = b.starts.lastIndexOf(ticket)
    if (last < b.head || last - cost + 1 < b.head || b.starts[last - cost + 1] !== ticket) return false
    b.starts.splice(last - cost + 1, cost)
    return true
  }

  async postpone (name: string, policy: BucketPolicy, cost: number, ticket: number, aheadMs: number): Promise<number | undefined> {
    const b = this.buckets.get(name)
    if (b === undefined || policy.algorithm !== 'sliding-window') return undefined
    const at = nowUs() + Math.round(aheadMs * 1000)
    const { windowUs } = slidingWindowParams(policy)
    if (!postponeInList(b, policy.limit, windowUs, cost, ticket, at)) return undefined
    b.expiresAt = Math.max(b.expiresAt, at + windowUs + 1_000_000)
    return at
  }

  async pushBack (name: string, policy: BucketPolicy, byMs: number): Promise<boolean> {
    if (policy.algorithm !== 'token-bucket') return false
    // As push-back-token-bucket-1.lua: a bucket swept since its late start is held again.
    const b = this.bucket(name)
    b.tat = Math.max(b.tat + Math.round(byMs * 1000), nowUs() + tokenBucketParams(policy).intervalUs)
    b.expiresAt = Math.max(b.expiresAt, b.tat + 1_000_000)
    return true
  }

  async pause (name: string, delayMs: number): Promise<number> {
    return await this.pauseNamed(name, name, delayMs)
  }

  /** Pause bucket `name`; the announcement names `bucket` (a request's bucket, for a limit's pause). */
  private async pauseNamed (name: string, bucket: string, delayMs: number): Promise<number> {
    const now = nowUs()
    const b = this.bucket(name)
    const untilUs = now + Math.round(delayMs * 1000)
    if (b.pausedUntil < untilUs && delayMs > 0) {
      b.pausedUntil = untilUs
      this.announced.emit('paused', bucket, delayMs)
    }
    return Math.max(0, b.pausedUntil - now) / 1000
  }

  async peek (name: string, policy: BucketPolicy): Promise<BucketPeek> {
    const now = nowUs()
    const b = this.buckets.get(name) ?? emptyBucket()
    const pausedForMs = Math.max(0, b.pausedUntil - now) / 1000
    if (policy.algorithm === 'token-bucket') {
      const { intervalUs, tauUs } = tokenBucketParams(policy)
      const ahead = Math.max(0, b.tat - now)
      const remaining = pausedForMs > 0 ? 0 : Math.max(0, Math.floor((tauUs + intervalUs - ahead) / intervalUs))
      return { remaining, booked: Math.ceil(ahead / intervalUs), resetMs: ahead / 1000, pausedForMs }
    }
    const { windowUs } = slidingWindowParams(policy)
    let booked = used(b, Infinity, windowUs, now)
    if (booked > 0 && booked === b.starts.length - b.head && b.floor > now - windowUs) {
      // As the script: starts trimmed off the list and still in the window, counted by the chains of
      // the list's `limit` oldest entries (each start is a window after the one `limit` before it).
      for (let i = b.head; i < Math.min(b.starts.length, b.head + policy.limit); i++) {
        booked += Math.max(0, Math.ceil((b.starts[i] - now) / windowUs))
      }
    }
    const last = b.starts.length > b.head ? b.starts[b.starts.length - 1] : undefined
    const resetMs = last === undefined ? 0 : Math.max(0, last + windowUs - now) / 1000
    return { remaining: pausedForMs > 0 ? 0 : Math.max(0, policy.limit - booked), booked, resetMs, pausedForMs }
  }

  async heartbeat (id: string, snapshot: string, ttlMs: number): Promise<number> {
    const now = Date.now()
    for (const [other, beat] of this.beats) if (beat.expiresAt <= now) this.beats.delete(other)
    this.beats.set(id, { snapshot, expiresAt: now + ttlMs })
    return this.beats.size
  }

  async liveInstances (): Promise<Map<string, string>> {
    const now = Date.now()
    const live = new Map<string, string>()
    for (const [id, beat] of this.beats) if (beat.expiresAt > now) live.set(id, beat.snapshot)
    return live
  }

  async leave (id: string): Promise<void> {
    this.beats.delete(id)
  }

  onPause (listener: (bucket: string, delayMs: number) => void): void {
    this.announced.on('paused', listener)
  }

  onStateLost (listener: (bucket: string, generation: number) => void): void {
    this.announced.on('lost', listener)
  }

  private readonly leases = new MemoryLeases()
  async acquireLease (bucket: string, limit: number, leaseId: string, ttlMs: number): Promise<{ acquired: boolean, retryInMs: number }> { return await this.leases.acquireLease(bucket, limit, leaseId, ttlMs) }
  async releaseLease (bucket: string, leaseId: string): Promise<void> { await this.leases.releaseLease(bucket, leaseId) }
  async renewLeases (bucket: string, leaseIds: string[], ttlMs: number): Promise<void> { await this.leases.renewLeases(bucket, leaseIds, ttlMs) }
  onLeaseFreed (listener: (bucket: string) => void): void { this.leases.onLeaseFreed(listener) }

  private readonly learned = new LearnedMemory()
  async learnedLimit (bucket: string): Promise<LearnedRecord | undefined> { return await this.learned.learnedLimit(bucket) }
  async changeLearned (bucket: string, change: LearnedChange, ttlMs: number): Promise<LearnedRecord | undefined> { return await this.learned.changeLearned(bucket, change, ttlMs) }
  onLearned (listener: (bucket: string) => void): void { this.learned.onLearned(listener) }
  async noteAnswers (bucket: string, answers: ReadonlyArray<{ atMs: number, accepted: boolean }>, keepMs: number): Promise<void> { await this.learned.noteAnswers(bucket, answers, keepMs) }
  async countAnswers (bucket: string, fromMs: number, toMs: number): Promise<{ accepted: number, rejected: number }> { return await this.learned.countAnswers(bucket, fromMs, toMs) }

  async ping (): Promise<void> {}

  available (): boolean {
    return true
  }

  instanceCount (): number {
    return 1
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    this.buckets.clear()
  }
}

function refusal (waitUs: number, resetUs: number, startUs: number): Reservation {
  return { admitted: false, waitMs: waitUs / 1000, remaining: 0, resetMs: resetUs / 1000, startMs: startUs / 1000, ticket: undefined }
}

function admitted (waitUs: number, remaining: number, resetUs: number, ticket: number, startUs: number): Reservation {
  return { admitted: true, waitMs: waitUs / 1000, remaining, resetMs: resetUs / 1000, startMs: startUs / 1000, ticket }
}

export { refusal as refusalFromUs, admitted as admittedFromUs }
