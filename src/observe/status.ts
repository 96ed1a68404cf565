// The team-wide status of every bucket: what the shared store holds (remaining, paused until) plus
// what every live instance published in its heartbeat (queue depth, in flight, requests per second).
import type { RouteConfig } from '../config/schema'
import type { BucketPeek } from '../store/bucket-store'
import { SERIES_S, type SecondCounts, type WaitPercentiles } from './activity'
import type { ClientStats } from '../limiter/client-stats'

/** What one instance publishes with each heartbeat (JSON in the store). */
export interface InstanceSnapshot {
  v: 1
  id: string
  host: string
  pid: number
  /** ISO time */
  startedAt: string
  store: string
  buckets: Record<string, {
    /** route */
    r: string
    /** queue depth */
    q: number
    /** in flight */
    f: number
    /** forwarded in the last budget window */
    u: number
    /** per-second counts of the last minute */
    s: SecondCounts[]
  }>
}

export interface BucketStatus {
  bucket: string
  route: string
  mode: 'enforce' | 'shadow'
  algorithm: string
  /** requests per window: the limit in force */
  limit: number
  windowS: number
  /** where it comes from: the route's config (null for limit: auto), the upstream's headers, its pushback (null: says nothing) */
  limitSources: { configured: number | null, announced: number | null, learned: number | null }
  /** where the route reserves now: redis, memory; local, open or closed while Redis is unreachable */
  store: string
  /** requests that could start now (from the store; null when the store could not be read) */
  remaining: number | null
  /** starts booked in the current window, waiting ones included (from the store) */
  booked: number | null
  /** seconds until the whole budget is back */
  resetS: number | null
  /** ISO time a pause after upstream pushback ends; null when not paused */
  pausedUntil: string | null
  /** requests forwarded in the last window, all instances */
  usedInWindow: number
  /** usedInWindow / limit, 0..1 */
  used: number
  requestsLastMinute: number
  rejectedLastMinute: number
  queueDepth: number
  inFlight: number
  /** live instances that serve this bucket */
  liveInstances: number
  /**
   * A route with several limits: each one, in order (the top-level limit, windowS and used are the
   * first's; remaining is the least any limit has, resetS the longest); null for a route with one.
   */
  limits: LimitStatus[] | null
  /** mode: shadow only: what enforcement would have done in the last minute */
  shadow: { wouldDelayLastMinute: number, wouldRejectLastMinute: number } | null
  /** this instance alone */
  local: { queueDepth: number, inFlight: number, requestsLastMinute: number, waitMs: WaitPercentiles }
}

/** One limit of a bucket of a route with several: its live figure and its state in the store. */
export interface LimitStatus {
  name: string
  /** requests per window, in force (an announced limit may lower it) */
  limit: number
  windowS: number
  algorithm: string
  /** one budget per credential (the route's key), or one for everybody (`key: instance`) */
  perCredential: boolean
  /** from the store, null when it could not be read */
  remaining: number | null
  booked: number | null
  resetS: number | null
  /** booked / limit, 0..1; null when not read */
  used: number | null
}

/** A limit as the observer knows it: from its route's limiter (live) and config. */
export interface LocalLimit { name: string, limit: number, windowMs: number, algorithm: string, perCredential: boolean }

export interface SluiceStatus {
  /** ISO time */
  generatedAt: string
  instance: { id: string, store: string, storeReachable: boolean }
  instances: Array<{ id: string, host: string, pid: number, startedAt: string }>
  buckets: BucketStatus[]
  /** Fair-share clients seen by this instance (hashed ids): usage and waits. */
  clients: ClientUsage[]
}

/** A client's figures (client-stats.ts) as status shows them: with its route, waits summarized. */
export interface ClientUsage extends Pick<ClientStats, 'bucket' | 'client' | 'weight' | 'admitted' | 'units' | 'rejected' | 'cancelled'> {
  route: string
  meanWaitMs: number
  maxWaitMs: number
  /** held in the fair queue or reserved and not yet started */
  waiting: number
}

export interface LocalBucket {
  route: RouteConfig
  bucket: string
  /** The route's budget now (its limiter's: the limit may follow the upstream's announcements). */
  limit: number
  windowMs: number
  /** The limit's sources (limit-sources.ts); undefined: only the configured limit is known. */
  sources?: { configured: number | undefined, announced: number | undefined, learned: number | undefined }
  storeMode: string
  waitMs: WaitPercentiles
  requestsLastMinute: number
  /** A route with several limits: each, in order. */
  limits?: LocalLimit[]
}

function sumSeries (series: SecondCounts[], column: 1 | 2 | 3 | 4, nowS: number): number {
  let n = 0
  for (const s of series) if (s[0] > nowS - SERIES_S && s[0] <= nowS) n += s[column]
  return n
}

/** Sum the per-second counts of every instance: epoch second -> [forwarded, rejected, would delay, would reject]. */
export function teamSeries (snapshots: InstanceSnapshot[], bucket: string): Map<number, [number, number, number, number]> {
  const out = new Map<number, [number, number, number, number]>()
  for (const snap of snapshots) {
    for (const s of snap.buckets[bucket]?.s ?? []) {
      const row = out.get(s[0]) ?? [0, 0, 0, 0]
      for (let i = 0; i < 4; i++) row[i] += s[i + 1]
      out.set(s[0], row)
    }
  }
  return out
}

function resetSOf (peek: BucketPeek): number {
  return Math.ceil(peek.resetMs / 100) / 10
}

/** Each limit's row; `peeks` per limit in order, undefined when the store was not read. */
function limitRows (limits: LocalLimit[], peeks: BucketPeek[] | undefined): LimitStatus[] {
  return limits.map((l, i) => {
    const p = peeks?.[i]
    return {
      name: l.name,
      limit: l.limit,
      windowS: l.windowMs / 1000,
      algorithm: l.algorithm,
      perCredential: l.perCredential,
      remaining: p === undefined ? null : p.remaining,
      booked: p === undefined ? null : p.booked,
      resetS: p === undefined ? null : resetSOf(p),
      used: p === undefined ? null : Math.min(1, p.booked / l.limit)
    }
  })
}

/**
 * The bucket's store figures: one peek, or one per limit (then what could start now is the least any
 * limit has, the whole budget is back when the longest is, and `booked` is the first limit's).
 */
function storeFigures (peek: BucketPeek | BucketPeek[] | undefined): BucketPeek | undefined {
  if (!Array.isArray(peek)) return peek
  if (peek.length === 0) return undefined
  return {
    remaining: Math.min(...peek.map((p) => p.remaining)),
    booked: peek[0].booked,
    resetMs: Math.max(...peek.map((p) => p.resetMs)),
    pausedForMs: Math.max(...peek.map((p) => p.pausedForMs))
  }
}

export function bucketStatus (local: LocalBucket, snapshots: InstanceSnapshot[], ownId: string, peeked: BucketPeek | BucketPeek[] | undefined, nowMs: number): BucketStatus {
  const peek = storeFigures(peeked)
  const { route, bucket } = local
  const nowS = Math.floor(nowMs / 1000)
  let requests = 0
  let rejected = 0
  let wouldDelay = 0
  let wouldReject = 0
  let queue = 0
  let inFlight = 0
  let usedInWindow = 0
  let instances = 0
  let own = { q: 0, f: 0 }
  for (const snap of snapshots) {
    const b = snap.buckets[bucket]
    if (b === undefined) continue
    instances++
    if (snap.id === ownId) own = b
    requests += sumSeries(b.s, 1, nowS)
    rejected += sumSeries(b.s, 2, nowS)
    wouldDelay += sumSeries(b.s, 3, nowS)
    wouldReject += sumSeries(b.s, 4, nowS)
    queue += b.q
    inFlight += b.f
    usedInWindow += b.u
  }
  const limit = local.limit
  return {
    bucket,
    route: route.name,
    mode: route.mode,
    algorithm: route.algorithm,
    limit,
    windowS: local.windowMs / 1000,
    limitSources: {
      configured: local.sources === undefined ? (route.limitAuto ? null : route.limit.count) : local.sources.configured ?? null,
      announced: local.sources?.announced ?? null,
      learned: local.sources?.learned ?? null
    },
    store: local.storeMode,
    remaining: peek === undefined ? null : peek.remaining,
    booked: peek === undefined ? null : peek.booked,
    resetS: peek === undefined ? null : resetSOf(peek),
    pausedUntil: peek === undefined || peek.pausedForMs <= 0 ? null : new Date(nowMs + peek.pausedForMs).toISOString(),
    usedInWindow,
    used: Math.min(1, usedInWindow / limit),
    requestsLastMinute: requests,
    rejectedLastMinute: rejected,
    queueDepth: queue,
    inFlight,
    liveInstances: instances,
    limits: local.limits === undefined ? null : limitRows(local.limits, Array.isArray(peeked) ? peeked : undefined),
    shadow: route.mode === 'shadow' ? { wouldDelayLastMinute: wouldDelay, wouldRejectLastMinute: wouldReject } : null,
    local: { queueDepth: own.q, inFlight: own.f, requestsLastMinute: local.requestsLastMinute, waitMs: local.waitMs }
  }
}

export function parseSnapshot (text: string): InstanceSnapshot | undefined {
  try {
    const s = JSON.parse(text) as InstanceSnapshot
    return s !== null && typeof s === 'object' && s.v === 1 && typeof s.buckets === 'object' ? s : undefined
  } catch {
    return undefined
  }
}
