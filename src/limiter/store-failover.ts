// Where a route's reservations are made: in the shared store while it answers, and while Redis is
// unreachable as the route's onStoreError says. The hand-overs keep both schedules within one budget:
// the local share starts a window after this instance's last start, and once Redis is back the
// starts made without it are recorded there, while for a window Redis bookings also take the local share.
import { setTimeout as sleep } from 'node:timers/promises'
import type { RouteConfig } from '../config/schema'
import { SluiceError } from '../errors'
import { hasStartRecorder, type BucketPolicy, type BucketStore, type Reservation } from '../store/bucket-store'
import { nowMs } from '../store/clock'
import { MemoryStore } from '../store/memory-store'
import { refusalDetails } from './refusal-details'
import { AwayStarts } from './away-starts'
import { StateRepair } from './state-repair'
import { StoreModeLog, type StoreMode } from './store-mode-log'

/** Gathers after a lost state a reservation waits out before the loss counts as a store fault. */
const MAX_GATHERS = 3

export type { StoreMode } from './store-mode-log'

export type LimiterLog = (level: 'info' | 'warn', fields: Record<string, unknown>, message: string) => void

export class StoreFailover {
  private readonly route: RouteConfig
  private readonly store: BucketStore
  /** The route's live policy (RouteLimiter.setLimit changes it in place). */
  private readonly policy: BucketPolicy
  /** Newest local start per bucket, epoch ms (admission keeps it). */
  private readonly lastStart: ReadonlyMap<string, number>
  private mode: StoreMode
  /** Until then (performance.now ms), reservations in Redis also take this instance's local share. */
  private transitionUntil = 0
  private fallbackStore: MemoryStore | undefined
  /** Which store made a reservation, so it is given back to the same one. */
  private readonly made = new WeakMap<Reservation, { store: BucketStore, policy: BucketPolicy }>()
  /** Buckets whose local share has been set up since the store became unreachable. */
  private readonly seeded = new Set<string>()
  /** Starts made without Redis (local share, or unshaped): told to Redis when it is back (away-starts.ts). */
  private readonly away: AwayStarts<string>
  /**
   * The newest reservation this instance made per bucket in the route's store. A token bucket gives
   * back only its newest (the store refuses the others), so for an older one the store is not even
   * asked: a burst's late starts would otherwise cost a second, useless round trip each. (A sliding
   * window's start is taken out of its list wherever it is.)
   */
  private readonly newest = new Map<string, Reservation>()
  /** How long a start counts: the window and margin (a route with several limits: the longest, limit-set.ts). */
  spanMs: () => number = () => this.policy.windowMs + this.policy.marginMs
  /** Why the route last left Redis, and the lines that say so. */
  private readonly modeLog: StoreModeLog
  /** Notices a bucket's state lost in Redis and records this instance's starts there again (Redis only). */
  private readonly repair: StateRepair | undefined

  constructor (route: RouteConfig, store: BucketStore, policy: BucketPolicy, lastStart: ReadonlyMap<string, number>, log: LimiterLog) {
    this.route = route
    this.store = store
    this.policy = policy
    this.lastStart = lastStart
    this.modeLog = new StoreModeLog(route.name, log)
    this.away = new AwayStarts(hasStartRecorder(store) ? store.recordStarts.bind(store) : undefined)
    this.mode = store.kind === 'memory' ? 'memory' : 'redis'
    this.repair = store.kind === 'redis' && hasStartRecorder(store) ? new StateRepair(route, store, policy, log) : undefined
  }

  /** Losses of a bucket's state in Redis repaired by this instance (state-repair.ts). */
  get stateRepairs (): Readonly<{ repairs: number, startsRecorded: number }> {
    return this.repair?.stats ?? { repairs: 0, startsRecorded: 0 }
  }

  /**
   * Where this route's reservations are made right now. The mode changes with a request (see book()),
   * so while Redis is not connected the route is in its onStoreError mode already, as its next request
   * will be, even before one comes (Redis unreachable from the start, or just gone).
   */
  get storeMode (): StoreMode {
    if (this.mode === 'redis' && !this.store.available()) return this.route.onStoreError
    return this.mode
  }

  /**
   * Where reservations are made and, when not where the route is configured to (Redis or the embedded
   * store), why: the store error that sent the route to its onStoreError mode (READONLY, MOVED, a timeout).
   */
  status (): { mode: StoreMode, reason?: string } {
    const mode = this.storeMode
    if (mode === 'redis' || mode === 'memory') return { mode }
    return { mode, reason: this.store.available() ? this.modeLog.reason ?? 'the shared store refused the last reservation' : 'the shared store is not connected' }
  }

  /** The route's store takes requests now (the embedded one always does). */
  answers (): boolean {
    return this.store.kind === 'memory' || this.store.available()
  }

  /**
   * Redis answers again: switch back before booking, so that no request can book in Redis without
   * the local share first (book() would switch too, but only after its reservation).
   */
  resumeIfBack (): void {
    if (this.store.kind === 'redis' && this.mode !== 'redis' && this.store.available()) this.setMode('redis')
  }

  /** Just after an outage (see setMode): a booking in Redis first waits for a slot of the local share. */
  handingOver (): boolean {
    return this.store.kind === 'redis' && performance.now() < this.transitionUntil
  }

  /** The local share's store and policy, as reservations in it are made now. */
  localShare (): { store: MemoryStore, policy: BucketPolicy } {
    return { store: this.local(), policy: this.localPolicy() }
  }

  /** The store is unreachable: enter the route's onStoreError mode; throws STORE_UNAVAILABLE when it is closed. */
  enterOutage (bucket: string, err: unknown): 'local' | 'open' {
    const mode = this.route.onStoreError
    this.setMode(mode, err)
    if (mode === 'closed') {
      throw new SluiceError('STORE_UNAVAILABLE', 503, 'the budget store is unreachable, so the request was not forwarded (onStoreError: closed)',
        refusalDetails(this.route.name, this.policy, bucket, { store: this.store.kind, store_mode: 'closed' }), 1, { cause: err })
    }
    return mode
  }

  /** The newest local start of `bucket` (epoch ms), if any. */
  lastStartOf (bucket: string): number | undefined {
    return this.lastStart.get(bucket)
  }

  /** This instance's part of `amount` among the team's live instances, at least 1. */
  share (amount: number): number {
    return Math.max(1, Math.floor(amount / Math.max(1, this.store.instanceCount())))
  }

  /** The store of the local share (created on first use). */
  local (): MemoryStore {
    this.fallbackStore ??= new MemoryStore()
    return this.fallbackStore
  }

  /** One reservation: in the shared store when it answers, else as the route's onStoreError says. */
  async book (bucket: string, cost: number, maxWaitMs: number): Promise<Reservation> {
    if (this.answers()) {
      let reservation: Reservation | undefined
      let fault: unknown
      try {
        reservation = await this.reserveWatched(bucket, cost, maxWaitMs)
      } catch (err) {
        fault = err
      }
      if (reservation !== undefined) {
        if (reservation.admitted) this.newest.set(bucket, reservation)
        if (this.store.kind === 'memory') return reservation
        this.setMode('redis')
        this.made.set(reservation, { store: this.store, policy: this.policy })
        return reservation
      }
      if (this.store.kind === 'memory') throw fault
      return await this.fallback(bucket, cost, maxWaitMs, fault)
    }
    return await this.fallback(bucket, cost, maxWaitMs, undefined)
  }

  /**
   * A reservation in the route's store. After a loss of the bucket's state there (state-repair.ts),
   * only once this instance's starts are recorded again and the gather for the others' is over.
   */
  private async reserveWatched (bucket: string, cost: number, maxWaitMs: number): Promise<Reservation> {
    const repair = this.repair
    if (repair === undefined) return await this.store.reserve(bucket, this.policy, cost, maxWaitMs)
    const began = performance.now()
    for (let gathers = 0; ; gathers++) {
      const r = await this.store.reserve(bucket, this.policy, cost, Math.max(0, maxWaitMs - (performance.now() - began)), repair.watch(bucket))
      if (r.stateLost !== true) {
        repair.note(bucket, r, cost)
        return r
      }
      if (gathers >= MAX_GATHERS) throw new Error(`the state of bucket ${bucket} keeps being lost in Redis`)
      if (r.generation !== undefined) await repair.repair(bucket, r.generation)
      await sleep(r.waitMs)
    }
  }

  /** A start `inMs` from now: remembered when it was made without Redis, for Redis once it is back (away-starts.ts). */
  noteStart (bucket: string, reservation: Reservation, inMs: number, cost: number): void {
    if (this.store.kind !== 'redis' || this.fromSharedStore(reservation)) return
    this.away.note(bucket, bucket, this.policy, nowMs() + inMs, cost)
    // Booked locally just before another request switched back (the local store answers after a turn
    // of the event loop): recorded now rather than at the next outage's end.
    if (this.mode === 'redis') this.away.record()
  }

  /**
   * Made by the route's Redis store, with a start in Redis's clock (not by the local fallback of an
   * outage). The memory store's clock is this process's: the slot counted from receipt says it all.
   */
  fromSharedStore (reservation: Reservation): reservation is Reservation & { startMs: number } {
    return reservation.startMs !== undefined && this.store.kind === 'redis' && this.made.get(reservation)?.store === this.store
  }

  /**
   * Give a reservation whose request never left back (best effort: a token bucket's only while it is
   * the newest, a sliding window's wherever it is; a store error is ignored).
   */
  async giveBack (bucket: string, reservation: Reservation, cost: number): Promise<boolean> {
    if (reservation.ticket === undefined) return false
    const made = this.made.get(reservation) ?? { store: this.store, policy: this.policy }
    const newest = this.newest.get(bucket)
    // A later reservation of this instance exists: this one is not the token bucket's newest.
    if (made.policy.algorithm === 'token-bucket' && made.store === this.store && newest !== undefined && newest !== reservation) return false
    try {
      const released = await made.store.release(bucket, made.policy, cost, reservation.ticket)
      // Which reservation is newest now is not known here (maybe another instance's): ask next time.
      if (released && newest === reservation) this.newest.delete(bucket)
      return released
    } catch {
      return false
    }
  }

  /**
   * A late sliding-window start recorded again at when it leaves (BucketStore.postpone), in the store
   * that booked it; the reservation's ticket follows. False when it stays as it was (or on an error).
   */
  async postpone (bucket: string, reservation: Reservation, cost: number, aheadMs: number): Promise<boolean> {
    if (reservation.ticket === undefined) return false
    const made = this.made.get(reservation) ?? { store: this.store, policy: this.policy }
    try {
      const at = await made.store.postpone(bucket, made.policy, cost, reservation.ticket, aheadMs)
      if (at === undefined) return false
      reservation.ticket = at
      return true
    } catch {
      return false
    }
  }

  /**
   * A token-bucket start left `byMs` later than its margin covers (BucketStore.pushBack), in the store
   * reservations are made in now. False when nothing moved (an unshaped outage, or a store error: the
   * margin has widened for the next starts anyway).
   */
  async pushBack (bucket: string, byMs: number): Promise<boolean> {
    const mode = this.storeMode
    if (mode === 'open' || mode === 'closed') return false
    const [store, policy] = mode === 'local' ? [this.local(), this.localPolicy()] : [this.store, this.policy]
    try {
      return await store.pushBack(bucket, policy, byMs)
    } catch {
      return false
    }
  }

  /**
   * Forget what is kept of buckets admission no longer remembers (its sweep of idle buckets): their
   * newest reservations and local-share set-up, and starts made without Redis older than a window.
   */
  forgetBeyond (remembered: ReadonlyMap<string, unknown>): void {
    for (const name of this.newest.keys()) if (!remembered.has(name)) this.newest.delete(name)
    for (const name of this.seeded) if (!remembered.has(name)) this.seeded.delete(name)
    this.away.forgetOld()
    this.repair?.forgetBeyond(remembered)
  }

  stateSizes (): { newest: number, seeded: number, startsAway: number } {
    return { newest: this.newest.size, seeded: this.seeded.size, startsAway: this.away.size }
  }

  private setMode (mode: StoreMode, err?: unknown): void {
    if (mode !== 'redis') this.modeLog.fault(err, this.store.available())
    if (mode === this.mode) return
    const from = this.mode
    this.mode = mode
    if (mode === 'redis') {
      this.seeded.clear()
      // Redis knows nothing of the starts booked locally during the outage, some of them still ahead
      // (waiting requests): until the last of them is a window old, a reservation in Redis also takes
      // this instance's local share, so the two schedules together stay within the budget.
      const lastLocalStartMs = Math.max(Date.now(), ...this.lastStart.values())
      this.transitionUntil = performance.now() + (lastLocalStartMs - Date.now()) + this.spanMs()
      // The other instances book in Redis, which has not seen this instance's starts of the outage
      // (another may have been back on Redis for a while): those of the last window are recorded there.
      this.away.record()
      this.modeLog.back(from)
    } else {
      this.modeLog.left(mode, from, this.store.available(), mode === 'local' ? ` with 1/${this.store.instanceCount()} of the budget` : '')
    }
  }

  /** This instance's share of the budget while the shared store is unreachable. */
  private localPolicy (): BucketPolicy {
    const limit = this.share(this.policy.limit)
    const burst = Math.min(limit, this.share(this.policy.burst))
    return { ...this.policy, limit, burst }
  }

  private async fallback (bucket: string, cost: number, maxWaitMs: number, err: unknown): Promise<Reservation> {
    if (this.enterOutage(bucket, err) === 'open') return { admitted: true, waitMs: 0, remaining: 0, resetMs: 0, ticket: undefined }
    const policy = this.localPolicy()
    if (!this.seeded.has(bucket)) {
      // Starts booked in Redis before the outage still happen; the local share begins only a window
      // after this instance's last one, so no window holds both (the budget is not spent twice).
      this.seeded.add(bucket)
      const sinceLastMs = Date.now() - (this.lastStart.get(bucket) ?? 0)
      const holdMs = this.policy.windowMs + this.policy.marginMs - sinceLastMs
      if (holdMs > 0) await this.local().pause(bucket, holdMs)
    }
    // A cost above the share is charged the whole share (as each limit of a route with several).
    const reservation = await this.local().reserve(bucket, policy, Math.min(cost, policy.limit), maxWaitMs)
    this.made.set(reservation, { store: this.local(), policy })
    return reservation
  }
}
