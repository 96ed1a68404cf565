// `sluice demo`: the whole product at work, offline. An emulated TestRail enforces a strict limit on
// loopback; a CI job's burst of result posts hits it directly (run 1), then through Sluice (run 2);
// a table compares what the API and the client saw.
import { randomUUID } from 'node:crypto'
import type { Writable } from 'node:stream'
import pino from 'pino'
import { DEFAULTS, checkRoutes, defaultMarginMs, parseRoute, type SluiceConfig } from '../config/schema'
import { parseDuration, formatRate } from '../config/units'
import { maxInWindow, startEmulator, type Emulator } from '../emulator'
import { createSluice, type SluiceServer } from '../http/app'
import { REDACT_PATHS } from '../http/redact'
import { runBurst, resultPost, type BurstResult } from './ci-burst'
import { DEMO_DEFAULTS, checkDemoOptions, minimumWindows, type DemoOptions } from './options'
import { Progress, formatSeconds } from './progress'
import { formatSummary, type DemoSummary, type RunSummary } from './summary'
import { ConfigError } from '../errors'

export { DEMO_DEFAULTS, parseDemoArgs, type DemoOptions } from './options'
export type { DemoSummary, RunSummary } from './summary'

export interface DemoControls {
  /** With `keep`: stop when this fires, besides SIGINT and SIGTERM. */
  stop?: AbortSignal
}

const DEFAULT_MAX_WAIT_MS = parseDuration(DEFAULTS.route.maxWait)
/**
 * Smallest margin the demo gives Sluice, in ms. Client, Sluice and API share one process here, and on a
 * busy machine (2 cores, load 5) part of a batch was measured reaching the API 75 ms after its slot:
 * more than the default margin of a 1 s window (50 ms), enough for the API to count one too many.
 */
export const DEMO_MIN_MARGIN_MS = 250
/** How long the demo waits for a Sluice instance (and its Redis) to be ready, in ms. */
const READY_WAIT_MS = 5000

/**
 * maxWait for the demo: Sluice refuses at once a request whose slot is further than maxWait away, so
 * the whole burst must fit. The last request's slot is `windows` windows (each stretched by the margin)
 * after the first; one more window of slack covers a loaded machine. Never below Sluice's default.
 */
export function demoMaxWaitMs (requests: number, limit: { count: number, windowMs: number }, marginMs: number): number {
  const lastSlotMs = minimumWindows(requests, limit) * (limit.windowMs + marginMs)
  return Math.max(DEFAULT_MAX_WAIT_MS, Math.ceil((lastSlotMs + limit.windowMs) / 1000) * 1000)
}

/** Most requests of a burst whose slots all lie within `maxWaitMs` of the first. */
function fittingBurst (maxWaitMs: number, limit: { count: number, windowMs: number }, marginMs: number): number {
  return limit.count * (Math.floor(maxWaitMs / (limit.windowMs + marginMs)) + 1)
}

/** Requests of the burst whose slot lies beyond `maxWaitMs` (Sluice would refuse them at once). */
function refusedBeyond (maxWaitMs: number, requests: number, limit: { count: number, windowMs: number }, marginMs: number): number {
  return Math.max(0, requests - fittingBurst(maxWaitMs, limit, marginMs))
}

/** The Redis URL without its password, for printing. */
function redactRedisUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return 'an invalid URL'
  }
}

async function waitReady (url: string, redis: string | undefined): Promise<void> {
  const deadline = Date.now() + READY_WAIT_MS
  for (;;) {
    try {
      const res = await fetch(`${url}/_sluice/ready`)
      await res.body?.cancel()
      if (res.status === 200) return
    } catch {}
    if (Date.now() > deadline) {
      if (redis === undefined) throw new Error(`Sluice at ${url} did not become ready within ${READY_WAIT_MS} ms`)
      throw new ConfigError('--redis', `Sluice could not reach Redis at ${redactRedisUrl(redis)} within ${READY_WAIT_MS} ms (is redis-server running there?)`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Admin pages another part of Sluice may serve; listed only when they answer 200 from Sluice itself. */
async function adminPages (url: string, emulator: Emulator): Promise<Array<{ name: string, url: string }>> {
  const found: Array<{ name: string, url: string }> = []
  for (const [name, path] of [['dashboard', '/_sluice/'], ['metrics', '/_sluice/metrics']] as const) {
    const before = emulator.arrivals.length
    try {
      // Should the page be proxied rather than served, `wait=0` keeps the probe from queueing for the budget.
      const res = await fetch(`${url}${path}`, { headers: { prefer: 'wait=0' } })
      await res.body?.cancel()
      // An answer that came from the API (the page proxied, not served) does not count.
      if (res.status === 200 && emulator.arrivals.length === before) found.push({ name, url: `${url}${path}` })
    } catch {}
  }
  return found
}

function waitForStop (signal: AbortSignal | undefined): Promise<string> {
  return new Promise((resolve) => {
    const done = (why: string): void => {
      process.off('SIGINT', onInt)
      process.off('SIGTERM', onTerm)
      signal?.removeEventListener('abort', onAbort)
      resolve(why)
    }
    const onInt = (): void => done('SIGINT')
    const onTerm = (): void => done('SIGTERM')
    const onAbort = (): void => done('stop')
    process.once('SIGINT', onInt)
    process.once('SIGTERM', onTerm)
    if (signal?.aborted === true) return done('stop')
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

async function playBurst (label: string, output: Writable, targets: string[], options: DemoOptions, answerTimeoutMs: number): Promise<BurstResult> {
  output.write(label)
  const progress = new Progress(output, options.requests)
  try {
    return await runBurst({ targets, requests: options.requests, concurrency: options.concurrency, answerTimeoutMs, onAnswer: (tally) => progress.update(tally) })
  } finally {
    progress.finish()
  }
}

function runSummary (burst: BurstResult, emulator: Emulator, windowMs: number): RunSummary {
  return {
    sent: burst.sent,
    ok: burst.ok,
    upstream429s: emulator.stats().limited,
    failures: burst.failed,
    statuses: burst.statuses,
    durationMs: burst.durationMs,
    peakInWindow: maxInWindow(emulator.arrivals.map((a) => a.t), windowMs)
  }
}

/**
 * Run the demo, writing its report to `output`; resolves with what it measured once everything it
 * started is stopped (with `keep`: after SIGINT, SIGTERM or `controls.stop`).
 */
export async function runDemo (options: DemoOptions, output: Writable, controls: DemoControls = {}): Promise<DemoSummary> {
  checkDemoOptions(options)
  const { limit, requests } = options
  const rate = formatRate(limit)
  const windowS = limit.windowMs / 1000
  const marginMs = Math.max(defaultMarginMs(limit.windowMs), DEMO_MIN_MARGIN_MS)
  const maxWaitMs = demoMaxWaitMs(requests, limit, marginMs)
  const minimumMs = minimumWindows(requests, limit) * limit.windowMs
  const instances = options.redis === undefined ? 1 : 2
  // Request log lines (only shown with --keep) go to stderr: stdout carries the report.
  const logger = pino({ level: 'silent', redact: { paths: REDACT_PATHS, remove: true }, base: { name: 'sluice' } }, process.stderr)

  let emulator: Emulator | undefined
  const sluices: SluiceServer[] = []
  try {
    emulator = await startEmulator({ profile: 'testrail', limit: limit.count, windowMs: limit.windowMs })
    const route = parseRoute({
      name: 'testrail',
      upstream: emulator.url,
      limit: rate,
      algorithm: 'sliding-window',
      profile: 'testrail',
      maxWait: maxWaitMs,
      margin: marginMs,
      // Every post of the burst may wait at once in one instance.
      maxQueue: Math.max(DEFAULTS.route.maxQueue, requests)
    }, 'route')
    checkRoutes([route])
    const sluiceUrls: string[] = []
    // A fresh key prefix: the demo never draws on (or leaves keys in) a real team's budget.
    const keyPrefix = options.redis === undefined ? DEFAULTS.keyPrefix : `sluice-demo:${randomUUID().slice(0, 8)}:`
    for (let i = 0; i < instances; i++) {
      const config: SluiceConfig = {
        host: '127.0.0.1',
        port: options.port === 0 ? 0 : options.port + i,
        redis: options.redis,
        keyPrefix,
        hashSecret: DEFAULTS.hashSecret,
        logLevel: 'silent',
        routes: [route]
      }
      const sluice = await createSluice(config, { logger })
      sluices.push(sluice)
      const url = await sluice.listen()
      await waitReady(url, options.redis)
      sluiceUrls.push(url)
    }

    const store = options.redis === undefined ? 'memory store' : `Redis ${redactRedisUrl(options.redis)}, shared by both`
    const scaled = limit.count === DEMO_DEFAULTS.limit.count && limit.windowMs === DEMO_DEFAULTS.limit.windowMs
      ? '; scaled down here so the demo takes seconds, not minutes'
      : ''
    const defaultMs = defaultMarginMs(limit.windowMs)
    const raised = marginMs > defaultMs
      ? `  (Sluice's default margin here is ${defaultMs} ms; more in the demo: client, Sluice and API share one process, where a busy CPU delays forwarding)\n`
      : ''
    output.write(`sluice demo: a CI job posts ${requests} test results, ${options.concurrency} at a time, to an emulated TestRail that allows ${rate}\n` +
      `(TestRail Cloud allows 180/min${scaled}).\n\n` +
      `  emulated API  ${emulator.url}   answers 429 {"error": ...} with Retry-After above ${limit.count} per ${windowS} s\n` +
      `  Sluice        ${sluiceUrls.join(', ')}   sliding-window ${rate}, ${store}, margin ${marginMs} ms\n${raised}\n`)

    const answerTimeoutMs = maxWaitMs + 30_000
    const direct = await playBurst('Run 1: straight at the API. Like a plain CI script, the client sends each post once and counts a 429 as a failed post (no retry).\n',
      output, [emulator.url], options, answerTimeoutMs)
    const directSummary = runSummary(direct, emulator, limit.windowMs)

    // Run 2 starts on an empty window, as run 1 did.
    emulator.reset()
    const split = instances === 1 ? '' : ` (posts alternate between the ${instances} instances)`
    const throughSluice = await playBurst(`\nRun 2: the same burst through Sluice${split}, which holds each post until the budget has room.\n`,
      output, sluiceUrls, options, answerTimeoutMs)
    const sluiceSummary = runSummary(throughSluice, emulator, limit.windowMs)

    const summary: DemoSummary = {
      requests,
      concurrency: options.concurrency,
      limit,
      instances,
      store: options.redis === undefined ? 'memory' : 'redis',
      minimumMs,
      maxWaitMs,
      marginMs,
      direct: directSummary,
      sluice: sluiceSummary,
      sluiceUrls,
      emulatorUrl: emulator.url,
      ok: sluiceSummary.failures === 0 && sluiceSummary.upstream429s === 0 && sluiceSummary.sent === requests
    }
    output.write(`\n${formatSummary(summary)}\n`)

    const lastSlotMs = minimumWindows(requests, limit) * (limit.windowMs + marginMs)
    const refusedByDefault = refusedBeyond(DEFAULT_MAX_WAIT_MS, requests, limit, marginMs)
    const why = 'Sluice refuses at once (429 RATE_LIMITED with Retry-After) any request whose slot is further away than maxWait'
    output.write(refusedByDefault === 0
      ? `maxWait: the last post's slot is ${formatSeconds(lastSlotMs)} after the first, within Sluice's default maxWait of ${formatSeconds(DEFAULT_MAX_WAIT_MS)}.\n` +
        `${why}, so a longer burst (here more than ${fittingBurst(DEFAULT_MAX_WAIT_MS, limit, marginMs)} posts) needs --max-wait raised to fit it; the demo then does that itself.\n\n`
      : `maxWait: the last post's slot is ${formatSeconds(lastSlotMs)} after the first, beyond Sluice's default maxWait of ${formatSeconds(DEFAULT_MAX_WAIT_MS)}.\n` +
        `${why}, so with the default the last ${refusedByDefault} posts would have been refused. The demo set maxWait to ${formatSeconds(maxWaitMs)};\n` +
        'give --max-wait the same room for your own longest burst.\n\n')

    if (summary.ok) {
      output.write(`OK: through Sluice ${sluiceSummary.ok} of ${requests} posts succeeded, the API answered no 429, and no ${windowS} s window held more than ${sluiceSummary.peakInWindow} (limit ${limit.count}).\n`)
    } else {
      output.write(`FAILED: through Sluice ${sluiceSummary.failures} posts failed and the API answered ${sluiceSummary.upstream429s} 429s (answers by status: ${JSON.stringify(sluiceSummary.statuses)}).\n`)
    }

    const pages = await adminPages(sluiceUrls[0]!, emulator)
    if (pages.length > 0) {
      for (const page of pages) output.write(`${page.name.padEnd(9)} ${page.url}\n`)
    } else {
      output.write(`health    ${sluiceUrls.map((u) => `${u}/_sluice/health`).join(', ')}\n`)
    }

    if (options.keep) {
      emulator.reset()
      for (const s of sluices) s.app.log.level = 'info'
      const example = resultPost(0)
      output.write('\nKept running until Ctrl-C (SIGINT) or SIGTERM; request log lines go to stderr. Point your own client at Sluice:\n' +
        `  curl -X POST -H 'content-type: application/json' -d '${example.body}' '${sluiceUrls[0]!}${example.path}'\n` +
        `The emulated API (its window emptied) is at ${emulator.url}.\n`)
      const reason = await waitForStop(controls.stop)
      output.write(`\n${reason}: stopping.\n`)
    }
    return summary
  } finally {
    for (const s of sluices) await s.close().catch(() => {})
    await emulator?.close()
  }
}
