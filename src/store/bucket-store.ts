// The one interface every budget store implements (memory, Redis), and the policy arithmetic they share.
// A store answers one question per request: "when may this request start?" (a reservation), so a
// waiting request sleeps on one local timer instead of polling the store.
import type { Algorithm } from '../config/schema'

export interface BucketPolicy {
  algorithm: Algorithm
  /** Requests allowed per window. */
  limit: number
  windowMs: number
  /** token-bucket: requests an idle bucket may start at once (1 = evenly paced). */
  burst: number
  /** Added to every window so network jitter cannot push two starts into one upstream window. */
  marginMs: number
}

export interface Reservation {
  admitted: boolean
  /** ms from now until the request may start; for a refusal, until it could have started. */
  waitMs: number
  /** Requests that could still start right now without waiting (for RateLimit headers). */
  remaining: number
  /** ms until the bucket has its whole budget back (for RateLimit / X-RateLimit-Reset). */
  resetMs: number
  /** The reserved start in the store's clock (epoch ms; Redis TIME for the Redis store); for a refusal, when it could have started. */
  startMs?: number
  /** Opaque handle that lets `release` give the reservation back; undefined when refused. */
  ticket: number | undefined
  /** Which incarnation of the bucket's state answered (GenerationWatch). */
  generation?: number
  /**
   * Nothing was booked: the bucket's state was lost (the generation is not the one the caller
   * expected) or is being gathered again after a loss; `waitMs` says when to book again.
   */
  stateLost?: boolean
}

/**
 * A bucket's state can vanish while the store stays up (FLUSHALL, eviction, a promoted replica that
 * missed writes). Each reservation tells the generation of the state it booked in; a caller that has
 * starts of the last window passes the generation it saw last, and when the state is another one,
 * nothing is booked: every instance records its starts again first (state-repair.ts).
 */
export interface GenerationWatch {
  /** The generation this instance last saw, when it has starts of the last window in the bucket. */
  expect?: number
  /** After a loss, nothing is booked in the bucket for this long, while every instance records its starts (ms). */
  gatherMs: number
}

export interface BucketStore {
  readonly kind: 'memory' | 'redis'
  /**
   * Reserve a start time for `cost` units in `bucket`, unless it would start more than `maxWaitMs`
   * from now, in which case nothing is reserved. One atomic step (one Redis round trip).
   */
  reserve (bucket: string, policy: BucketPolicy, cost: number, maxWaitMs: number, watch?: GenerationWatch): Promise<Reservation>
  /**
   * Give back a reservation whose request never left, where the algorithm allows it: a token bucket's
   * only while it is the newest (its state is the next start), a sliding window's wherever it is in
   * the list (release-sliding-window-1.lua: a list without a start is still within the limit).
   */
  release (bucket: string, policy: BucketPolicy, cost: number, ticket: number): Promise<boolean>
  /**
   * A sliding-window start that leaves late: record it `aheadMs` after the store's now instead of at
   * `ticket`, if no start booked since is counted against the later time (postponeInList). Returns
   * the new ticket, or undefined when it stays as it was (a token bucket always: its next start is
   * booked from the bucket, not from this one).
   */
  postpone (bucket: string, policy: BucketPolicy, cost: number, ticket: number, aheadMs: number): Promise<number | undefined>
  /**
   * A token-bucket start reached the upstream `byMs` later than the margin of the starts after it
   * covers: the bucket's next starts come that much later, and none sooner than one interval from
   * now (the upstream counted the late request when it arrived, which was before its response came
   * back). A bucket whose state is gone (idle past its TTL) gets that state. False for a sliding
   * window (its starts are a list: postpone moves a start that is not yet counted against).
   */
  pushBack (bucket: string, policy: BucketPolicy, byMs: number): Promise<boolean>
  /** No reservation of `bucket` may start before `delayMs` from now; a shorter pause never shortens a longer one. */
  pause (bucket: string, delayMs: number): Promise<number>
  /**
   * Take one of `limit` concurrency slots of `bucket` as a lease that expires after `ttlMs` unless
   * renewed; when none is free, `retryInMs` says when the earliest lease expires.
   */
  acquireLease (bucket: string, limit: number, leaseId: string, ttlMs: number): Promise<{ acquired: boolean, retryInMs: number }>
  /** Give a lease back; every instance's onLeaseFreed listener hears of it. */
  releaseLease (bucket: string, leaseId: string): Promise<void>
  /** Extend leases still held (long waits or long responses). */
  renewLeases (bucket: string, leaseIds: string[], ttlMs: number): Promise<void>
  /** `listener(bucket)` runs whenever any instance gives a lease of `bucket` back. */
  onLeaseFreed (listener: (bucket: string) => void): void
  /** `listener(bucket, delayMs)` runs whenever any instance sets a new or longer pause. */
  onPause (listener: (bucket: string, delayMs: number) => void): void
  /** Resolves when the store is reachable. */
  ping (): Promise<void>
  /** False while the store is known to be unreachable (no round trip: a cheap check per request). */
  available (): boolean
  /** Instances of the team that shared this store at the last heartbeat (1 when unknown). */
  instanceCount (): number
  close (): Promise<void>
}

/** Token bucket as GCRA, all in integer microseconds: emission interval and burst tolerance. */
export function tokenBucketParams (policy: BucketPolicy): { intervalUs: number, tauUs: number } {
  // The sustained rate is lowered by the burst, so that burst + rate × window never exceeds the limit:
  // any window of (windowMs + marginMs) holds at most `limit` starts.
  const intervalUs = Math.ceil(((policy.windowMs + policy.marginMs) * 1000) / (policy.limit - policy.burst + 1))
  return { intervalUs, tauUs: (policy.burst - 1) * intervalUs }
}

export function slidingWindowParams (policy: BucketPolicy): { windowUs: number, keep: number, padUs: number } {
  // Keep a few more than `limit` starts so a given-back newest reservation never loses the start
  // `limit` places back that the next reservation must be measured against (the list is trimmed back
  // to `keep` once it holds 32 more; when given-back starts leave it shorter than `limit`, the newest
  // start trimmed stands in for the missing one).
  // A start the window had room for (a burst from an idle bucket, or the first after a pause) is
  // recorded one margin later than it is made: such requests often open new upstream connections
  // and reach the upstream later than requests that waited for a slot, on connections that are warm.
  return { windowUs: (policy.windowMs + policy.marginMs) * 1000, keep: policy.limit + 32, padUs: policy.marginMs * 1000 }
}

/**
 * Where one limit of a route with several lives: `tag` is the Redis Cluster hash tag every key of one
 * reservation shares, `state` names the limit's keys under it ('' = the tag's own keys: `{tag}:part`).
 */
export interface LimitRef { tag: string, state: string }

/** One limit of a reservation over several: its state, its live policy, and what the request costs in it (0 = untouched). */
export interface LimitBooking { ref: LimitRef, policy: BucketPolicy, cost: number }

/** What one reservation over several limits did in each of them. */
export interface LimitOutcome {
  /** What `releaseLimit` needs to give it back; 0 when nothing was booked (cost 0, or refused). */
  ticket: number
  remaining: number
  resetMs: number
}

/** A reservation over several limits: the one start all allow, `binding` the limit that set it (or has the least left). */
export interface MultiReservation extends Reservation {
  limits: LimitOutcome[]
  binding: number
}

/** A store that books one start in several limits at once (one atomic step, one round trip). */
export interface MultiLimitStore {
  /** The earliest start every limit allows and `pause` (the request's bucket's) permits, booked in all of them, or in none beyond `maxWaitMs`. */
  reserveLimits (bookings: readonly LimitBooking[], pause: LimitRef, maxWaitMs: number): Promise<MultiReservation>
  /** Give one limit's part back (as release). */
  releaseLimit (booking: LimitBooking, ticket: number): Promise<boolean>
  /** Pause `ref` (a request bucket's pause, see reserveLimits); the announcement names `bucket`. */
  pauseLimit (ref: LimitRef, bucket: string, delayMs: number): Promise<number>
  peekLimit (ref: LimitRef, pause: LimitRef, policy: BucketPolicy): Promise<BucketPeek>
  /** A shared store: one limit's starts made without it (the outage's local share; see StartRecorder). */
  recordLimitStarts?: (ref: LimitRef, policy: BucketPolicy, startsMs: number[]) => Promise<void>
}

export function isMultiLimitStore (store: BucketStore): store is BucketStore & MultiLimitStore {
  return typeof (store as Partial<MultiLimitStore>).reserveLimits === 'function'
}

/** A read-only look at one bucket, for status pages (never on the admission path). */
export interface BucketPeek {
  /** Requests that could start right now. */
  remaining: number
  /**
   * Starts booked in the current window: made, or reserved and still waiting. A sliding-window backlog
   * longer than the store keeps (limit + 32 to + 64 starts) is counted from the chains of the starts
   * it keeps: exact for a backlog without gaps (a pause, starts given back, which it counts as booked)
   * once its first start is a margin old.
   */
  booked: number
  /** ms until the whole budget is back */
  resetMs: number
  /** ms until a pause (upstream pushback) ends; 0 when there is none */
  pausedForMs: number
}

/**
 * What every instance of a team can see of the others: buckets read without reserving, and a
 * heartbeat through which each instance publishes its own figures (queue depth, in flight, rates).
 */
export interface TeamBoard {
  peek (bucket: string, policy: BucketPolicy): Promise<BucketPeek>
  /** Say `id` is alive for `ttlMs` and publish its snapshot (opaque JSON); resolves to the live instance count. */
  heartbeat (id: string, snapshot: string, ttlMs: number): Promise<number>
  /** Snapshots of every instance whose heartbeat has not expired, by id. */
  liveInstances (): Promise<Map<string, string>>
  /** Remove `id` at once (on shutdown). */
  leave (id: string): Promise<void>
}

/** Stores shared by instances (Redis) tell fair share in how many instances a client is active. */
export interface ClientPresence {
  /** Say `clients` of `bucket` are active in `instance` for `ttlMs`; resolves to, per client, its number of instances (≥ 1). */
  clientPresence (bucket: string, instance: string, clients: string[], ttlMs: number): Promise<number[]>
}

/** A store with a clock of its own (Redis TIME) tells how it differs from this process's (clock.ts). */
export interface StoreClock {
  /**
   * The store's clock less this process's (ms), as a lower bound: the store read its clock at most
   * `rttMs` before this process got the answer. From the fastest round trip (TIME on each
   * (re)connection, then reservations); one older than 30 s gives way to the next, as clocks drift.
   */
  clockOffset (): { skewMs: number, rttMs: number } | undefined
}

export function hasStoreClock (store: BucketStore): store is BucketStore & StoreClock {
  return typeof (store as Partial<StoreClock>).clockOffset === 'function'
}

/** A store reached over a network tells how long its reservations take (round-trips.ts). */
export interface StoreDistance {
  /**
   * This instance's recent reservation round trips (ms): the fastest (how far the store is) and the
   * median (what a reservation takes, this machine's stalls included); before any, the fastest TIME
   * on connection for both; undefined when nothing is known.
   */
  reserveRoundTrips (): { fastestMs: number, medianMs: number } | undefined
}

export function hasStoreDistance (store: BucketStore): store is BucketStore & StoreDistance {
  return typeof (store as Partial<StoreDistance>).reserveRoundTrips === 'function'
}

/** A shared store that can be told of starts made without it (an instance's local share during an outage). */
export interface StartRecorder {
  /** `startsMs`: epoch ms in this process's clock, oldest first. */
  recordStarts (bucket: string, policy: BucketPolicy, startsMs: number[]): Promise<void>
}

export function hasStartRecorder (store: BucketStore): store is BucketStore & StartRecorder {
  return typeof (store as Partial<StartRecorder>).recordStarts === 'function'
}

/** A shared store that can be asked, without touching any budget, whether it takes writes (readiness). */
export interface WriteProbe {
  /** Resolves when a write succeeds; rejects with the store's error (READONLY from a replica, OOM, MOVED …). */
  probeWrite (): Promise<void>
}

export function hasWriteProbe (store: BucketStore): store is BucketStore & WriteProbe {
  return typeof (store as Partial<WriteProbe>).probeWrite === 'function'
}

/** A shared store announces a bucket's lost state to every instance (GenerationWatch). */
export interface StateLossNotice {
  /** `listener(bucket, generation)` runs when any instance finds `bucket`'s state lost; `generation` is the new one. */
  onStateLost (listener: (bucket: string, generation: number) => void): void
}

export function hasStateLossNotice (store: BucketStore): store is BucketStore & StateLossNotice {
  return typeof (store as Partial<StateLossNotice>).onStateLost === 'function'
}

export function hasClientPresence (store: BucketStore): store is BucketStore & ClientPresence {
  return typeof (store as Partial<ClientPresence>).clientPresence === 'function'
}

export function isTeamBoard (store: BucketStore): store is BucketStore & TeamBoard {
  const s = store as Partial<TeamBoard>
  return typeof s.peek === 'function' && typeof s.heartbeat === 'function' && typeof s.liveInstances === 'function'
}

/** A bucket's learned limit as the store keeps it (learned-limit.ts decides what to keep). */
export interface LearnedRecord {
  /** Requests per window the upstream was seen to accept (or, kind climb, climbed to). */
  limit: number
  windowMs: number
  /** learned: pushed back with room left in Sluice's budget; shared: with the budget spent; climb: limit: auto going up. */
  kind: 'learned' | 'shared' | 'climb'
  /** ms since the limit last changed, and since the last pushback (store clock). */
  sinceChangeMs: number
  sincePushbackMs: number
  /** Probes up that were pushed back soon after (each one makes the next wait longer). */
  failedProbes: number
}

/** A change of a learned limit, made atomically in the store against what every instance did. */
export type LearnedChange =
  /** Pushback: keep the lower of the kept limit and `limit`; a raise `probeMs` or less ago counts as a failed probe. */
  | { op: 'lower', limit: number, windowMs: number, kind: LearnedRecord['kind'], probeMs: number }
  /** A probe up from `from` to `to` (undefined: forget, back to the others), if the limit is still `from` and nothing changed or pushed back for `quietMs`. */
  | { op: 'raise', from: number, to: number | undefined, windowMs: number, kind: LearnedRecord['kind'], quietMs: number }

/**
 * What a store keeps of the upstream's real limit, shared by every instance (and across restarts,
 * for `ttlMs` after the last change): the learned limit per bucket, and a short log of the times
 * (store clock, epoch ms) at which attempts were sent, accepted or pushed back.
 */
export interface LimitMemory {
  learnedLimit (bucket: string): Promise<LearnedRecord | undefined>
  changeLearned (bucket: string, change: LearnedChange, ttlMs: number): Promise<LearnedRecord | undefined>
  /** `listener(bucket)` runs whenever any instance changes a bucket's learned limit. */
  onLearned (listener: (bucket: string) => void): void
  /** Record attempts' send times (store clock ms), and forget those older than `keepMs`. */
  noteAnswers (bucket: string, answers: ReadonlyArray<{ atMs: number, accepted: boolean }>, keepMs: number): Promise<void>
  /** Attempts sent in [fromMs, toMs) (store clock) that were accepted, and that were pushed back. */
  countAnswers (bucket: string, fromMs: number, toMs: number): Promise<{ accepted: number, rejected: number }>
}

export function hasLimitMemory (store: BucketStore): store is BucketStore & LimitMemory {
  return typeof (store as Partial<LimitMemory>).changeLearned === 'function'
}
