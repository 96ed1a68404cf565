// Scenario 2b, precision with two limits: 2 Sluice instances sharing one Redis, limit [10/s, 25/5s],
// 60 requests at once (and a larger burst). Judged from the upstream's arrival log: the most arrivals
// in any window of each length against its limit, the drain against the shortest the two limits allow
// (the binding limit's utilization), and store round trips per admitted request (reserveLimits calls).
import { maxInWindow } from '../src/emulator'
import { burst } from './burst'
import { startChild, startRedis, type Child } from './processes'
import { printTable, round } from './table'

interface Arrival { t: number, outcome: string }

export interface TwoLimitOptions {
  instances: number
  /** Request counts, one run each. */
  bursts: number[]
}

export const TWO_LIMIT_DEFAULTS: TwoLimitOptions = { instances: 2, bursts: [60, 120] }

/** Limits with their windows plus the default margin (100 ms for both): 10 per 1.1 s, 25 per 5.1 s. */
const LIMITS = [{ count: 10, windowMs: 1000, marginMs: 100 }, { count: 25, windowMs: 5000, marginMs: 100 }]

/**
 * The shortest drain both limits allow for n requests started at once, ms: each start is at least one
 * window (plus margin) after the start `count` places before it, in every limit; the earliest schedule
 * meeting all of them, computed start by start.
 */
export function shortestDrainMs (n: number): number {
  const starts: number[] = []
  for (let i = 0; i < n; i++) {
    let at = 0
    for (const l of LIMITS) if (i >= l.count) at = Math.max(at, starts[i - l.count] + l.windowMs + l.marginMs)
    starts.push(at)
  }
  return starts[n - 1]
}

export async function precisionTwoLimits (options: TwoLimitOptions = TWO_LIMIT_DEFAULTS): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const runs: Array<Record<string, unknown>> = []
  try {
    for (const [v, requests] of options.bursts.entries()) {
      const children: Child[] = []
      try {
        // The upstream enforces the 1 s limit itself (429 above it); the 5 s one is judged from its log.
        const upstream = await startChild('child-upstream', { mode: 'emulator', limit: 10, windowMs: 1000 })
        children.push(upstream)
        const route = { name: 'two', upstream: upstream.url, limit: ['10/s', '25/5s'], algorithm: 'sliding-window', maxWait: '60s', maxQueue: requests }
        const instances: Child[] = []
        for (let i = 0; i < options.instances; i++) {
          const c = await startChild('child-sluice', { route, redis: redis.url, keyPrefix: `bench-two-${v}:` })
          children.push(c)
          instances.push(c)
        }
        const result = await burst(instances.map((c) => c.url), requests, `t${v}-`)
        const arrivals = await upstream.call<Arrival[]>('arrivals')
        let calls = 0
        for (const c of instances) calls += (await c.call<{ multiReservations: number }>('stats')).multiReservations
        const times = arrivals.map((a) => a.t).sort((a, b) => a - b)
        const drainMs = times[times.length - 1] - times[0]
        const minimumMs = shortestDrainMs(requests)
        const admitted = arrivals.filter((a) => a.outcome === 'ok').length
        runs.push({
          requests,
          statuses: result.statuses,
          upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
          maxIn1s: maxInWindow(times, 1000),
          maxIn5s: maxInWindow(times, 5000),
          drainMs: round(drainMs, 1),
          minimumMs,
          utilization: round(minimumMs / drainMs, 3),
          roundTripsPerAdmitted: round(calls / Math.max(1, admitted), 3)
        })
      } finally {
        for (const c of children.reverse()) await c.stop()
      }
    }
  } finally {
    await redis.stop()
  }
  printTable(`Precision, two limits: ${options.instances} instances, one Redis, limit [10/s, 25/5s]`,
    ['requests', 'max in 1 s', 'max in 5 s', '429s upstream', 'drain s', 'shortest s', 'utilization', 'round trips / admitted', 'statuses'],
    runs.map((r) => [r.requests as number, r.maxIn1s as number, r.maxIn5s as number, r.upstreamLimited as number, round(Number(r.drainMs) / 1000, 2), Number(r.minimumMs) / 1000, r.utilization as number, r.roundTripsPerAdmitted as number, JSON.stringify(r.statuses)]))
  return { scenario: 'precision-limits', options, targets: { maxIn1sAtMost: 10, maxIn5sAtMost: 25, utilizationAtLeast: 0.87, roundTripsPerAdmitted: 1 }, runs }
}
