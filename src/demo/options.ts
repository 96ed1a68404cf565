// Options of `sluice demo`, their defaults, and flag parsing whose errors name the flag.
import { parseArgs } from 'node:util'
import { parseRedisUrl } from '../config/redis-url'
import { formatRate, parseRate, type Rate } from '../config/units'
import { ConfigError } from '../errors'

export interface DemoOptions {
  /** Result posts in the CI job's burst. Default 150. */
  requests: number
  /** The emulated API's limit, enforced by it and configured in Sluice. Default 30/10s (TestRail Cloud's 180/min scaled down). */
  limit: Rate
  /** Posts the CI job keeps in flight at once. Default 20. */
  concurrency: number
  /** redis:// URL: run two Sluice instances sharing one budget in it. Default none (one instance, memory store). */
  redis: string | undefined
  /** Keep Sluice and the emulated API running after the runs, until SIGINT/SIGTERM (or `stop`). Default false. */
  keep: boolean
  /** Sluice's port (a second instance takes port + 1); 0 picks free ports. Default 0. */
  port: number
}

export const DEMO_DEFAULTS: Readonly<DemoOptions> = Object.freeze({
  requests: 150,
  limit: Object.freeze({ count: 30, windowMs: 10_000 }),
  concurrency: 20,
  redis: undefined,
  keep: false,
  port: 0
})

/**
 * Longest theoretical run accepted, in ms. Sluice bounds a whole request to 10 min and the client
 * waits for answers on open sockets, so the demo stays well inside that.
 */
export const MAX_DEMO_MINIMUM_MS = 5 * 60_000

/** Windows the last request waits for at best: ceil(requests / limit) - 1. */
export function minimumWindows (requests: number, limit: Rate): number {
  return Math.max(0, Math.ceil(requests / limit.count) - 1)
}

function integer (flag: string, text: string, min: number, max: number): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(flag, `expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`)
  }
  return n
}

/** `sluice demo [--requests N] [--limit 30/10s] [--concurrency N] [--redis URL] [--keep] [--port N]` */
export function parseDemoArgs (argv: string[]): DemoOptions {
  let values: Record<string, string | boolean | undefined>
  try {
    const parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        requests: { type: 'string' },
        limit: { type: 'string' },
        concurrency: { type: 'string' },
        redis: { type: 'string' },
        keep: { type: 'boolean' },
        port: { type: 'string' }
      }
    })
    values = parsed.values
  } catch (err) {
    const message = (err as Error).message
    const flag = /'(--?[a-z-]+)/.exec(message)?.[1] ?? 'demo'
    throw new ConfigError(flag, `${message.replace(/\. To specify.*$/s, '')}; see sluice --help`)
  }
  const options: DemoOptions = { ...DEMO_DEFAULTS }
  if (typeof values.requests === 'string') options.requests = integer('--requests', values.requests, 1, 100_000)
  if (typeof values.concurrency === 'string') options.concurrency = integer('--concurrency', values.concurrency, 1, 1000)
  if (typeof values.port === 'string') options.port = integer('--port', values.port, 0, 65534)
  if (typeof values.limit === 'string') {
    try {
      options.limit = parseRate(values.limit)
    } catch (err) {
      throw new ConfigError('--limit', (err as Error).message)
    }
  }
  if (typeof values.redis === 'string') {
    parseRedisUrl(values.redis, '--redis')
    options.redis = values.redis
  }
  options.keep = values.keep === true
  checkDemoOptions(options)
  return options
}

/** Rejects a demo that could not finish inside the time bounds of Sluice and its client. */
export function checkDemoOptions (options: DemoOptions): void {
  const minimumMs = minimumWindows(options.requests, options.limit) * options.limit.windowMs
  if (minimumMs > MAX_DEMO_MINIMUM_MS) {
    throw new ConfigError('--requests', `${options.requests} requests at ${formatRate(options.limit)} take at least ${Math.round(minimumMs / 1000)} s; ` +
      `the demo is bounded to ${MAX_DEMO_MINIMUM_MS / 60_000} min: lower --requests or raise --limit`)
  }
}
