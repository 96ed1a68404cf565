// Scenario "unknown limit": the upstream allows 10/s (Zulip-style 429 with Retry-After: 1) and
// publishes nothing; Sluice is configured at twice it, at it, and at four times it. 3 instances
// sharing one Redis, 300 POSTs at once. Judged from the upstream's arrival log: its 429s (beyond the
// first ones, already in flight when the first 429 came back), the clients' answers, and the time to
// drain against the real limit's minimum.
import { burst } from './burst'
import { startChild, startRedis, type Child } from './processes'
import { minimumDrainMs, printTable, round } from './table'

export interface UnknownLimitOptions {
  instances: number
  /** The upstream's real limit per window. */
  realLimit: number
  windowMs: number
  requests: number
  /** Sluice's configured limits per window, one run each. */
  configured: number[]
}

export const UNKNOWN_LIMIT_DEFAULTS: UnknownLimitOptions = { instances: 3, realLimit: 10, windowMs: 1000, requests: 300, configured: [20, 10, 40] }

interface Arrival { t: number, outcome: string }

export async function unknownLimit (options: UnknownLimitOptions = UNKNOWN_LIMIT_DEFAULTS): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const runs: Array<Record<string, unknown>> = []
  try {
    for (const [v, configured] of options.configured.entries()) {
      const children: Child[] = []
      try {
        const upstream = await startChild('child-upstream', { mode: 'emulator', profile: 'zulip', limit: options.realLimit, windowMs: options.windowMs })
        children.push(upstream)
        const route = { name: 'unknown', upstream: upstream.url, limit: `${configured}/${options.windowMs / 1000}s`, profile: 'zulip', maxWait: '120s', maxQueue: options.requests }
        const instances: Child[] = []
        for (let i = 0; i < options.instances; i++) {
          const c = await startChild('child-sluice', { route, redis: redis.url, keyPrefix: `bench-unknown-${v}:`, logLevel: 'warn' })
          children.push(c)
          instances.push(c)
        }
        const result = await burst(instances.map((c) => c.url), options.requests, `u${v}-`, 0, 'POST')
        const arrivals = await upstream.call<Arrival[]>('arrivals')
        const limits = await instances[0].call<Array<{ limit: number, learned?: number, learnedKind?: string }>>('limits')
        const times = arrivals.map((a) => a.t)
        const first = Math.min(...times)
        const limitedTimes = arrivals.filter((a) => a.outcome !== 'ok').map((a) => a.t).sort((a, b) => a - b)
        // Already in flight when the first 429 came back: sent within a few ms of it (its answer is at once).
        const inFlight = limitedTimes.length === 0 ? 0 : limitedTimes.filter((t) => t - limitedTimes[0] <= 5).length
        const okTimes = arrivals.filter((a) => a.outcome === 'ok').map((a) => a.t)
        const drainMs = Math.max(...okTimes) - first
        const minimumMs = minimumDrainMs(options.requests, options.realLimit, options.windowMs)
        runs.push({
          configured,
          realLimit: options.realLimit,
          statuses: result.statuses,
          upstreamArrivals: arrivals.length,
          upstreamLimited: limitedTimes.length,
          firstInFlight: inFlight,
          limitedAfterFirst: limitedTimes.length - inFlight,
          drainMs: round(drainMs, 1),
          minimumMs,
          ofMinimum: round(drainMs / minimumMs, 3),
          limitAtEnd: limits[0]?.limit,
          learnedAtEnd: limits[0]?.learned ?? null,
          // When the upstream answered 429, s after the first arrival.
          limitedAtS: limitedTimes.map((t) => round((t - first) / 1000, 2))
        })
      } finally {
        for (const c of children.reverse()) await c.stop()
      }
    }
  } finally {
    await redis.stop()
  }
  printTable(`Unknown limit: upstream ${options.realLimit}/${options.windowMs / 1000}s (429, Retry-After: 1), ${options.instances} instances, one Redis, ${options.requests} POSTs at once`,
    ['configured', 'real', 'client statuses', '429s upstream', 'first in flight', '429s after', 'drain s', 'minimum s', 'drain / minimum', 'limit at end', '429s at s'],
    runs.map((r) => [r.configured as number, r.realLimit as number, JSON.stringify(r.statuses), r.upstreamLimited as number, r.firstInFlight as number, r.limitedAfterFirst as number,
      round(Number(r.drainMs) / 1000, 2), Number(r.minimumMs) / 1000, r.ofMinimum as number, r.limitAtEnd as number, (r.limitedAtS as number[]).join(' ')]))
  return { scenario: 'unknown-limit', options, targets: { limitedAfterFirstAtMost: 5, ofMinimumAtMost: 1.2, allClientsSucceed: true }, runs }
}
