// One reservation over several limits in process memory: reserve-limits.lua step for step (the
// earliest start every limit allows, booked in all or none), on the memory store's per-limit state.
import { slidingWindowParams, tokenBucketParams, type LimitBooking, type LimitOutcome, type MultiReservation } from './bucket-store'

/** The part of a memory bucket a limit uses (see memory-store.ts). */
export interface LimitState {
  tat: number
  starts: number[]
  head: number
  floor: number
  expiresAt: number
}

/**
 * Record `cost` starts at `at` in a sliding window, trimmed in batches to its newest `keep` (the
 * newest trimmed is the floor), as the scripts do; the array is compacted now and then.
 */
export function pushStarts (s: LimitState, at: number, cost: number, keep: number): void {
  for (let i = 0; i < cost; i++) s.starts.push(at)
  if (s.starts.length - s.head > keep + 32) {
    s.head = s.starts.length - keep
    s.floor = s.starts[s.head - 1]
  }
  if (s.head > 4096) {
    s.starts = s.starts.slice(s.head)
    s.head = 0
  }
}

/**
 * Starts of a sliding window inside the window ending at `at` (its newest `limit` at most). Starts are
 * recorded never before the newest, so the list is sorted: a binary search, as the script does, not a
 * scan of every start in the window (thousands per reservation on a busy route).
 */
export function used (s: LimitState, limit: number, windowUs: number, at: number): number {
  const after = at - windowUs
  return s.starts.length - partitionPoint(s.starts, Math.max(s.head, s.starts.length - limit), s.starts.length, (v) => v <= after)
}

/** The first index in [lo, hi) of a sorted list whose value is not `before` (hi when all are): a binary search. */
function partitionPoint (list: readonly number[], lo: number, hi: number, before: (v: number) => boolean): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (before(list[mid])) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * postpone-sliding-window-2.lua on a list (sorted µs, from `head`): move `cost` entries at `ticket` to
 * `at` unless a window of `windowUs` that holds `at` and not `ticket` would hold more than `limit`.
 * Returns whether it moved them.
 */
export function postponeInList (s: LimitState, limit: number, windowUs: number, cost: number, ticket: number, at: number): boolean {
  if (at <= ticket) return false
  const kept: number[] = []
  let removed = 0
  for (let i = s.head; i < s.starts.length; i++) {
    const v = s.starts[i]
    if (v === ticket && removed < cost) removed++
    else kept.push(v)
  }
  if (removed < cost) return false
  let place = kept.findIndex((v) => v > at)
  if (place < 0) place = kept.length
  const list = [...kept.slice(0, place), ...Array<number>(cost).fill(at), ...kept.slice(place)]
  // As the script: only the windows [w, w + window) holding `at` and not the ticket gain entries.
  const from = (x: number): number => partitionPoint(list, 0, list.length, (v) => v < x)
  const tooFull = (w: number): boolean => from(w + windowUs) - from(w) > limit
  if (tooFull(ticket + 1)) return false
  for (let i = from(ticket + windowUs + 1); i < from(at + windowUs); i++) if (tooFull(list[i] - windowUs + 1)) return false
  s.starts = list
  s.head = 0
  return true
}

function newest (s: LimitState): number | undefined {
  return s.starts.length > s.head ? s.starts[s.starts.length - 1] : undefined
}

/** The earliest start `b` allows, at or after `from` (µs). */
function earliest (s: LimitState, b: LimitBooking, from: number, now: number): number {
  if (b.cost === 0) return from
  if (b.policy.algorithm === 'token-bucket') {
    const { intervalUs, tauUs } = tokenBucketParams(b.policy)
    return Math.max(from, Math.max(s.tat, now) + intervalUs * (b.cost - 1) - tauUs)
  }
  const { windowUs } = slidingWindowParams(b.policy)
  const len = s.starts.length - s.head
  const back = b.policy.limit - b.cost + 1
  const ref = len >= back ? s.starts[s.starts.length - back] + windowUs : s.floor > 0 ? s.floor + windowUs : 0
  return Math.max(from, ref)
}

/** Whether a sliding window holds a start `limit` − cost + 1 places back (or the floor for it). */
function hasReference (s: LimitState, b: LimitBooking): boolean {
  return s.starts.length - s.head >= b.policy.limit - b.cost + 1 || s.floor > 0
}

/**
 * Book `b` at `start` (as the script: a roomy start is padded when its window held no start `limit`
 * places back or a pause ended, never recorded before the newest).
 */
function book (s: LimitState, b: LimitBooking, start: number, roomy: boolean, afterPause: boolean, now: number): LimitOutcome {
  const p = b.policy
  if (p.algorithm === 'token-bucket') {
    const { intervalUs, tauUs } = tokenBucketParams(p)
    if (b.cost > 0) {
      s.tat = Math.max(s.tat, start) + intervalUs * b.cost
      s.expiresAt = s.tat + 1_000_000
    }
    const remaining = Math.max(0, Math.floor((now + tauUs + intervalUs - Math.max(s.tat, now)) / intervalUs))
    return { ticket: b.cost > 0 ? s.tat : 0, remaining, resetMs: Math.max(0, s.tat - now) / 1000 }
  }
  const { windowUs, keep, padUs } = slidingWindowParams(p)
  let ticket = 0
  if (b.cost > 0) {
    ticket = Math.max(roomy && (afterPause || !hasReference(s, b)) ? start + padUs : start, newest(s) ?? 0)
    pushStarts(s, ticket, b.cost, keep)
    s.expiresAt = ticket + windowUs + 1_000_000
  }
  const remaining = start <= now ? Math.max(0, p.limit - used(s, p.limit, windowUs, now)) : 0
  const last = newest(s)
  return { ticket, remaining, resetMs: last === undefined ? 0 : Math.max(0, last + windowUs - now) / 1000 }
}

/** Reset of a limit that was not booked (a refusal), ms. */
function resetOf (s: LimitState, b: LimitBooking, now: number): number {
  if (b.policy.algorithm === 'token-bucket') return Math.max(0, s.tat - now) / 1000
  const last = newest(s)
  return last === undefined ? 0 : Math.max(0, last + slidingWindowParams(b.policy).windowUs - now) / 1000
}

/** reserve-limits.lua on `states` (one per booking, in order); `pausedUntil` and `now` in µs. */
export function reserveLimitsIn (states: LimitState[], bookings: readonly LimitBooking[], pausedUntil: number, maxWaitMs: number, now: number): MultiReservation {
  const floorStart = Math.max(now, pausedUntil)
  let start = floorStart
  let binding = 0
  bookings.forEach((b, i) => {
    const at = earliest(states[i], b, floorStart, now)
    if (at > start) {
      start = at
      binding = i
    }
  })
  const wait = start - now
  if (wait > Math.round(maxWaitMs * 1000)) {
    const limits = bookings.map((b, i) => ({ ticket: 0, remaining: 0, resetMs: resetOf(states[i], b, now) }))
    return { admitted: false, waitMs: wait / 1000, remaining: 0, resetMs: limits[binding].resetMs, startMs: start / 1000, ticket: undefined, limits, binding }
  }
  const roomy = start === floorStart
  const limits = bookings.map((b, i) => book(states[i], b, start, roomy, pausedUntil > now, now))
  if (start > now) for (const l of limits) l.remaining = 0
  let least = 0
  limits.forEach((l, i) => { if (l.remaining < limits[least].remaining) least = i })
  if (start <= now) binding = least
  return { admitted: true, waitMs: wait / 1000, remaining: limits[least].remaining, resetMs: limits[binding].resetMs, startMs: start / 1000, ticket: start, limits, binding }
}
