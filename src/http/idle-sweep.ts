// State keyed by what a caller controls (a bucket per credential, a client id) is released once idle:
// one unref'd timer per server asks each route's limiter and fair scheduler, and the observer, to
// forget what has been idle. Their own bounds (a cap, a sweep beyond a size) hold between sweeps.
import type { FairScheduler } from '../limiter/fair-scheduler'
import type { RouteLimiter } from '../limiter/route-limiter'
import type { Observer } from '../observe/observer'

/** How long per-client and per-bucket figures stay once idle, ms (default). */
export const IDLE_MS = 10 * 60_000
/** The sweep runs at least this often, ms (a bucket's budget state goes a window after its last start). */
const SWEEP_EVERY_MAX_MS = 60_000

export interface Sweepable {
  limiters: ReadonlyMap<string, RouteLimiter>
  schedulers: ReadonlyMap<string, FairScheduler>
  observer: Observer
}

/** Sweep every min(idleMs / 2, a minute); returns the stop. The maps are read at each sweep (a reload replaces their contents). */
export function startIdleSweep (parts: Sweepable, idleMs: number): () => void {
  const timer = setInterval(() => sweepIdle(parts, idleMs, Date.now()), Math.max(10, Math.min(SWEEP_EVERY_MAX_MS, idleMs / 2)))
  timer.unref()
  return () => clearInterval(timer)
}

export function sweepIdle (parts: Sweepable, idleMs: number, now: number): void {
  for (const limiter of parts.limiters.values()) limiter.forgetIdle(now)
  for (const scheduler of parts.schedulers.values()) scheduler.forgetIdle(now, idleMs)
  parts.observer.forgetIdle(now)
}
