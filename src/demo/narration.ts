// The demo's prose around the table: what is about to run, why maxWait was set as it was, and the verdict.
import { maskRedisUrl } from '../config/redis-url'
import { defaultMarginMs } from '../config/schema'
import type { Rate } from '../config/units'
import { DEMO_DEFAULTS, minimumWindows } from './options'
import { formatSeconds } from './progress'
import type { DemoSummary } from './summary'

/** What the demo runs, worked out from its options (demo.ts). */
export interface DemoPlan {
  limit: Rate
  requests: number
  concurrency: number
  /** The limit as the config writes it ("30/s"). */
  rate: string
  marginMs: number
  maxWaitMs: number
  /** Best possible duration of the burst against this limit, ms. */
  minimumMs: number
  /** Sluice instances in run 2 (2 with --redis, sharing one budget). */
  instances: number
  redis: string | undefined
}

/** Most requests of a burst whose slots all lie within `maxWaitMs` of the first. */
function fittingBurst (maxWaitMs: number, limit: { count: number, windowMs: number }, marginMs: number): number {
  return limit.count * (Math.floor(maxWaitMs / (limit.windowMs + marginMs)) + 1)
}

/** Requests of the burst whose slot lies beyond `maxWaitMs` (Sluice would refuse them at once). */
function refusedBeyond (maxWaitMs: number, requests: number, limit: { count: number, windowMs: number }, marginMs: number): number {
  return Math.max(0, requests - fittingBurst(maxWaitMs, limit, marginMs))
}

export function introText (plan: DemoPlan, emulatorUrl: string, sluiceUrls: string[]): string {
  const { limit, rate, marginMs } = plan
  const store = plan.redis === undefined ? 'memory store' : `Redis ${maskRedisUrl(plan.redis)}, shared by both`
  const scaled = limit.count === DEMO_DEFAULTS.limit.count && limit.windowMs === DEMO_DEFAULTS.limit.windowMs
    ? '; scaled down here so the demo takes seconds, not minutes'
    : ''
  const defaultMs = defaultMarginMs(limit.windowMs)
  const raised = marginMs > defaultMs
    ? `  (Sluice's default margin here is ${defaultMs} ms; more in the demo: client, Sluice and API share one process, where a busy CPU delays forwarding)\n`
    : ''
  return `sluice demo: a CI job posts ${plan.requests} test results, ${plan.concurrency} at a time, to an emulated TestRail that allows ${rate}\n` +
    `(TestRail Cloud allows 180/min${scaled}).\n\n` +
    `  emulated API  ${emulatorUrl}   answers 429 {"error": ...} with Retry-After above ${limit.count} per ${limit.windowMs / 1000} s\n` +
    `  Sluice        ${sluiceUrls.join(', ')}   sliding-window ${rate}, ${store}, margin ${marginMs} ms\n${raised}\n`
}

/** Why the demo's maxWait is what it is, against Sluice's default `defaultMaxWaitMs`. */
export function maxWaitText (plan: DemoPlan, defaultMaxWaitMs: number): string {
  const { limit, requests, marginMs } = plan
  const lastSlotMs = minimumWindows(requests, limit) * (limit.windowMs + marginMs)
  const refusedByDefault = refusedBeyond(defaultMaxWaitMs, requests, limit, marginMs)
  const why = 'Sluice refuses at once (429 RATE_LIMITED with Retry-After) any request whose slot is further away than maxWait'
  return refusedByDefault === 0
    ? `maxWait: the last post's slot is ${formatSeconds(lastSlotMs)} after the first, within Sluice's default maxWait of ${formatSeconds(defaultMaxWaitMs)}.\n` +
      `${why}, so a longer burst (here more than ${fittingBurst(defaultMaxWaitMs, limit, marginMs)} posts) needs --max-wait raised to fit it; the demo then does that itself.\n\n`
    : `maxWait: the last post's slot is ${formatSeconds(lastSlotMs)} after the first, beyond Sluice's default maxWait of ${formatSeconds(defaultMaxWaitMs)}.\n` +
      `${why}, so with the default the last ${refusedByDefault} posts would have been refused. The demo set maxWait to ${formatSeconds(plan.maxWaitMs)};\n` +
      'give --max-wait the same room for your own longest burst.\n\n'
}

export function verdictText (summary: DemoSummary): string {
  const s = summary.sluice
  if (summary.ok) {
    return `OK: through Sluice ${s.ok} of ${summary.requests} posts succeeded, the API answered no 429, and no ${summary.limit.windowMs / 1000} s window held more than ${s.peakInWindow} (limit ${summary.limit.count}).\n`
  }
  return `FAILED: through Sluice ${s.failures} posts failed and the API answered ${s.upstream429s} 429s (answers by status: ${JSON.stringify(s.statuses)}).\n`
}
