// `sluice demo`: the whole product at work, offline. An emulated TestRail enforces a strict limit on
// loopback; a CI job's burst of result posts hits it directly (run 1), then through Sluice (run 2);
// a table compares what the API and the client saw.
import { randomUUID } from 'node:crypto'
import type { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'
import { maskRedisUrl } from '../config/redis-url'
import { DEFAULTS, defaultMarginMs, type SluiceConfig } from '../config/schema'
import { checkRoutes, parseRoute } from '../config/route'
import { parseDuration, formatRate } from '../config/units'
import { maxInWindow, startEmulator, type Emulator } from '../emulator'
import { createSluice, type SluiceServer } from '../http/app'
import { REDACT_PATHS } from '../http/redact'
import { runBurst, resultPost, type BurstResult } from './ci-burst'
import { checkDemoOptions, minimumWindows, type DemoOptions } from './options'
import { Progress } from './progress'
import { formatSummary, type DemoSummary, type RunSummary } from './summary'
import { introText, maxWaitText, verdictText, type DemoPlan } from './narration'
import { ConfigError } from '../errors'

export { DEMO_DEFAULTS, parseDemoArgs, type DemoOptions } from './options'
export type { DemoSummary, RunSummary } from './summary'

export interface DemoControls {
  /** With `keep`: stop when this fires, besides SIGINT and SIGTERM. */
  stop?: AbortSignal
}

const DEFAULT_MAX_WAIT_MS = parseDuration(DEFAULTS.route.maxWait)
/**
 * Smallest margin the demo gives Sluice, in ms. Client, Sluice and API share one process here, so on a
 * busy machine part of a batch can reach the API later after its slot than the default margin of a
 * short window allows, enough for the API to count one too many.
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
      throw new ConfigError('--redis', `Sluice could not reach Redis at ${maskRedisUrl(redis)} within ${READY_WAIT_MS} ms (is redis-server running there?)`)
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

/** What the demo will do, worked out from its options. */
function demoPlan (options: DemoOptions): DemoPlan {
  const { limit, requests } = options
  const marginMs = Math.max(defaultMarginMs(limit.windowMs), DEMO_MIN_MARGIN_MS)
  return {
    limit,
    requests,
    concurrency: options.concurrency,
    rate: formatRate(limit),
    marginMs,
    maxWaitMs: demoMaxWaitMs(requests, limit, marginMs),
    minimumMs: minimumWindows(requests, limit) * limit.windowMs,
    instances: options.redis === undefined ? 1 : 2,
    redis: options.redis
  }
}

/** Start the demo's Sluice instances (pushed to `sluices` as they start, for the caller to close); resolves to their URLs once ready. */
async function startSluices (plan: DemoPlan, options: DemoOptions, upstream: string, logger: Logger, sluices: SluiceServer[]): Promise<string[]> {
  const route = parseRoute({
    name: 'testrail',
    upstream,
    limit: plan.rate,
    algorithm: 'sliding-window',
    profile: 'testrail',
    maxWait: plan.maxWaitMs,
    margin: plan.marginMs,
    // Every post of the burst may wait at once in one instance.
    maxQueue: Math.max(DEFAULTS.route.maxQueue, plan.requests)
  }, 'route')
  checkRoutes([route])
  const sluiceUrls: string[] = []
  // A fresh key prefix: the demo never draws on (or leaves keys in) a real team's budget.
  const keyPrefix = options.redis === undefined ? DEFAULTS.keyPrefix : `sluice-demo:${randomUUID().slice(0, 8)}:`
  for (let i = 0; i < plan.instances; i++) {
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
  return sluiceUrls
}

/** With --keep: leave everything running, told how to use it, until a signal (or `stop`) ends it. */
async function keepRunning (output: Writable, emulator: Emulator, sluices: SluiceServer[], sluiceUrls: string[], stop: AbortSignal | undefined): Promise<void> {
  emulator.reset()
  for (const s of sluices) s.app.log.level = 'info'
  const example = resultPost(0)
  output.write('\nKept running until Ctrl-C (SIGINT) or SIGTERM; request log lines go to stderr. Point your own client at Sluice:\n' +
    `  curl -X POST -H 'content-type: application/json' -d '${example.body}' '${sluiceUrls[0]!}${example.path}'\n` +
    `The emulated API (its window emptied) is at ${emulator.url}.\n`)
  const reason = await waitForStop(stop)
  output.write(`\n${reason}: stopping.\n`)
}

/**
 * Run the demo, writing its report to `output`; resolves with what it measured once everything it
 * started is stopped (with `keep`: after SIGINT, SIGTERM or `controls.stop`).
 */
export async function runDemo (options: DemoOptions, output: Writable, controls: DemoControls = {}): Promise<DemoSummary> {
  checkDemoOptions(options)
  const plan = demoPlan(options)
  const { limit, requests } = plan
  // Request log lines (only shown with --keep) go to stderr: stdout carries the report.
  const logger = pino({ level: 'silent', redact: { paths: REDACT_PATHS, remove: true }, base: { name: 'sluice' } }, process.stderr)

  let emulator: Emulator | undefined
  const sluices: SluiceServer[] = []
  try {
    emulator = await startEmulator({ profile: 'testrail', limit: limit.count, windowMs: limit.windowMs })
    const sluiceUrls = await startSluices(plan, options, emulator.url, logger, sluices)
    output.write(introText(plan, emulator.url, sluiceUrls))

    const answerTimeoutMs = plan.maxWaitMs + 30_000
    const direct = await playBurst('Run 1: straight at the API. Like a plain CI script, the client sends each post once and counts a 429 as a failed post (no retry).\n',
      output, [emulator.url], options, answerTimeoutMs)
    const directSummary = runSummary(direct, emulator, limit.windowMs)

    // Run 2 starts on an empty window, as run 1 did.
    emulator.reset()
    const split = plan.instances === 1 ? '' : ` (posts alternate between the ${plan.instances} instances)`
    const throughSluice = await playBurst(`\nRun 2: the same burst through Sluice${split}, which holds each post until the budget has room.\n`,
      output, sluiceUrls, options, answerTimeoutMs)
    const sluiceSummary = runSummary(throughSluice, emulator, limit.windowMs)

    const summary: DemoSummary = {
      requests,
      concurrency: options.concurrency,
      limit,
      instances: plan.instances,
      store: options.redis === undefined ? 'memory' : 'redis',
      minimumMs: plan.minimumMs,
      maxWaitMs: plan.maxWaitMs,
      marginMs: plan.marginMs,
      direct: directSummary,
      sluice: sluiceSummary,
      sluiceUrls,
      emulatorUrl: emulator.url,
      ok: sluiceSummary.failures === 0 && sluiceSummary.upstream429s === 0 && sluiceSummary.sent === requests
    }
    output.write(`\n${formatSummary(summary)}\n`)
    output.write(maxWaitText(plan, DEFAULT_MAX_WAIT_MS))
    output.write(verdictText(summary))

    const pages = await adminPages(sluiceUrls[0]!, emulator)
    if (pages.length > 0) {
      for (const page of pages) output.write(`${page.name.padEnd(9)} ${page.url}\n`)
    } else {
      output.write(`health    ${sluiceUrls.map((u) => `${u}/_sluice/health`).join(', ')}\n`)
    }

    if (options.keep) await keepRunning(output, emulator, sluices, sluiceUrls, controls.stop)
    return summary
  } finally {
    for (const s of sluices) await s.close().catch(() => {})
    await emulator?.close()
  }
}
