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
  /** Give a reservation back where the algorithm allows it (only the newest one, so no guarantee is broken). */
  release (bucket: string, policy: BucketPolicy, cost: number, ticket: number): Promise<boolean>
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
