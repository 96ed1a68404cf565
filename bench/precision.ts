// Scenario 2, precision: 3 Sluice instances sharing one Redis, limit 50/s, 1,000 requests at once.
// Judged from the upstream's arrival log: the most arrivals in any 1 s window against the limit, the
// time to drain against the theoretical minimum (utilization), and how late each request reached the
// upstream after the start Sluice had reserved for it.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { defaultMarginMs } from '../src/config/schema'
import { parseDuration } from '../src/config/units'
import { maxInWindow } from '../src/emulator'
import { burst } from './burst'
import { startChild, startRedis, type Child } from './processes'
import { minimumDrainMs, percentile, printTable, round } from './table'

export interface PrecisionOptions {
  instances: number
  limit: number
  windowMs: number
  requests: number
  /** Variants to run, each with the whole burst. */
  variants: Array<{ name: string, algorithm: 'sliding-window' | 'token-bucket', margin?: string }>
  /**
   * A directory for one file per variant: every arrival at the upstream (its time, outcome and
   * request id), every reserved start by request id and the instance that admitted it. The summary
   * says how far above the limit a run went; this says which pair of requests did it.
   */
  dumpDir?: string
}

export const PRECISION_DEFAULTS: PrecisionOptions = {
  instances: 3,
  limit: 50,
  windowMs: 1000,
  requests: 1000,
  variants: [
    { name: 'sliding-window, default margin', algorithm: 'sliding-window' },
    { name: 'token-bucket, burst 1, default margin', algorithm: 'token-bucket' },
    { name: 'sliding-window, margin 50 ms', algorithm: 'sliding-window', margin: '50ms' },
    { name: 'sliding-window, margin 10 ms', algorithm: 'sliding-window', margin: '10ms' }
  ]
}

interface Arrival { t: number, outcome: string, id?: string }

/** One variant's arrivals and starts as JSON in `dir` (PrecisionOptions.dumpDir), named after the variant. */
function dump (dir: string, variant: string, data: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true })
  const name = variant.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '')
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ variant, ...data }))
}

export async function precision (options: PrecisionOptions = PRECISION_DEFAULTS): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const runs: Array<Record<string, unknown>> = []
  try {
    for (const [v, variant] of options.variants.entries()) {
      const children: Child[] = []
      try {
        // The upstream enforces the real limit (no margin) and answers 429 above it.
        const upstream = await startChild('child-upstream', { mode: 'emulator', limit: options.limit, windowMs: options.windowMs })
        children.push(upstream)
        const route = { name: 'precision', upstream: upstream.url, limit: `${options.limit}/${options.windowMs / 1000}s`, algorithm: variant.algorithm, maxWait: '60s', maxQueue: options.requests, ...(variant.margin === undefined ? {} : { margin: variant.margin }) }
        const instances: Child[] = []
        for (let i = 0; i < options.instances; i++) {
          const c = await startChild('child-sluice', { route, redis: redis.url, keyPrefix: `bench-precision-${v}:`, record: true })
          children.push(c)
          instances.push(c)
        }
        const result = await burst(instances.map((c) => c.url), options.requests, `p${v}-`)
        const arrivals = await upstream.call<Arrival[]>('arrivals')
        let reservations = 0
        const marginsMs: number[] = []
        const lateStarts = { retries: 0, forwarded: 0, moved: 0, pushedBack: 0 }
        for (const c of instances) {
          const stats = await c.call<{ reservations: number, marginsMs?: number[], late: { lateRetries: number, lateForwarded: number, lateMoved: number, pushedBack: number } }>('stats')
          reservations += stats.reservations
          marginsMs.push(...(stats.marginsMs ?? []))
          lateStarts.retries += stats.late.lateRetries
          lateStarts.forwarded += stats.late.lateForwarded
          lateStarts.moved += stats.late.lateMoved
          lateStarts.pushedBack += stats.late.pushedBack
        }
        const starts: Record<string, number> = {}
        const instanceOf: Record<string, number> = {}
        for (const [i, c] of instances.entries()) {
          const own = await c.call<Record<string, number>>('starts')
          Object.assign(starts, own)
          for (const id of Object.keys(own)) instanceOf[id] = i
        }
        if (options.dumpDir !== undefined) dump(options.dumpDir, variant.name, { limit: options.limit, windowMs: options.windowMs, arrivals, starts, instanceOf })

        const times = arrivals.map((a) => a.t).sort((a, b) => a - b)
        const first = times[0]
        const drainMs = times[times.length - 1] - first
        const minimumMs = minimumDrainMs(options.requests, options.limit, options.windowMs)
        // Each arrival against the start reserved for its request (joined by x-request-id). `starts`
        // holds a request's first admission; one sent again after an upstream 429 went out on a later
        // one, so only requests that arrived once are counted (one that slept into the pause a 429 set
        // is admitted again too, and still counted: then "late" overstates).
        const arrivalsById = new Map<string, number[]>()
        for (const a of arrivals) if (a.id !== undefined) arrivalsById.set(a.id, [...(arrivalsById.get(a.id) ?? []), a.t])
        const late = [...arrivalsById].filter(([id, ts]) => ts.length === 1 && starts[id] !== undefined).map(([id, ts]) => ts[0] - starts[id])
        // The sustained rate over the drain, against the limit and against what the margin allows: a
        // route books at most `limit` starts per window plus margin, so that rate is its ceiling (the
        // utilization above also counts the first window's burst as free, which smoothing gives up).
        const marginMs = variant.margin === undefined ? defaultMarginMs(options.windowMs) : parseDuration(variant.margin)
        const perWindow = (arrivals.filter((a) => a.outcome === 'ok').length - 1) / drainMs * options.windowMs
        runs.push({
          variant: variant.name,
          algorithm: variant.algorithm,
          margin: variant.margin ?? `adaptive, cap ${defaultMarginMs(options.windowMs)}ms (default)`,
          statuses: result.statuses,
          upstreamArrivals: arrivals.length,
          upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
          // store.reserve calls beyond one per request: late starts booked again (each left its slot unused
          // unless it could be given back) and requests sent again after an upstream 429.
          rebooked: reservations - options.requests,
          // Late starts (route-limiter.ts): booked again, recorded again at when they left (a sliding
          // window's), sent late after the retries ran out, and sent later than the margin covered (the
          // bucket's next starts pushed back: a token bucket's).
          lateStarts,
          maxIn1s: maxInWindow(times, options.windowMs),
          limit: options.limit,
          drainMs: round(drainMs, 1),
          minimumMs,
          utilization: round(minimumMs / drainMs, 3),
          // What the target judges: the drain against the minimum for a sliding window; for a token
          // bucket of burst 1, which by design gives up the first window's burst, the sustained rate
          // against the limit (its minimum/drain ceiling is (⌈n/limit⌉ − 1) × limit / (n − 1)).
          budgetUse: round(variant.algorithm === 'token-bucket' ? perWindow / options.limit : minimumMs / drainMs, 3),
          // The margin each instance had in force at the end (adaptive unless `margin: … fixed`).
          marginsAtEndMs: marginsMs.map((m) => round(m, 1)),
          sustained: {
            perWindow: round(perWindow, 2),
            ofLimit: round(perWindow / options.limit, 3),
            ofMarginCeiling: round(perWindow / (options.limit * options.windowMs / (options.windowMs + marginMs)), 3)
          },
          lateness: {
            matched: late.length,
            p50Ms: round(percentile(late, 50), 2),
            p99Ms: round(percentile(late, 99), 2),
            maxMs: round(percentile(late, 100), 2),
            minMs: round(Math.min(...late), 2)
          },
          // Arrival times, ms after the first, for the report's chart.
          arrivalsMs: times.map((t) => round(t - first, 1))
        })
      } finally {
        for (const c of children.reverse()) await c.stop()
      }
    }
  } finally {
    await redis.stop()
  }
  printTable(`Precision: ${options.instances} instances, one Redis, limit ${options.limit}/${options.windowMs / 1000}s, ${options.requests} requests at once`,
    ['variant', 'margin', 'max in a window', 'limit', '429s upstream', 'booked again', 'drain s', 'minimum s', 'utilization', 'sustained / limit', 'budget use', 'margin at end ms', 'late p50 ms', 'late p99 ms', 'statuses'],
    runs.map((r) => {
      const l = r.lateness as Record<string, number>
      return [r.variant as string, r.margin as string, r.maxIn1s as number, r.limit as number, r.upstreamLimited as number, r.rebooked as number, round(Number(r.drainMs) / 1000, 2), Number(r.minimumMs) / 1000, r.utilization as number, (r.sustained as Record<string, number>).ofLimit, r.budgetUse as number, (r.marginsAtEndMs as number[]).join('/'), l.p50Ms, l.p99Ms, JSON.stringify(r.statuses)]
    }))
  return { scenario: 'precision', options, targets: { maxIn1sAtMost: options.limit, utilizationAtLeast: 0.98 }, runs }
}
