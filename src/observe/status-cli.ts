// `sluice status [--url URL] [--watch] [--interval DURATION] [--token TOKEN]`: the team-wide status of a running
// Sluice as a table in the terminal; --watch redraws it until interrupted. An unreachable Sluice is
// one clear line on stderr and exit status 2.
import { parseArgs } from 'node:util'
import { formatRate, parseDuration } from '../config/units'
import type { BucketStatus, SluiceStatus } from './status'
import { StatusUsageError, UnreachableError } from '../errors'

export const STATUS_DEFAULTS = { url: 'http://127.0.0.1:8080', intervalMs: 1000, timeoutMs: 3000 } as const

export interface StatusIo {
  out: (text: string) => void
  err: (text: string) => void
  /** Redraw in place (clear the screen) in watch mode; false prints one table after another. */
  tty: boolean
}

export interface StatusOptions {
  url: string
  watch: boolean
  intervalMs: number
  /** The admin token (--token, SLUICE_ADMIN_TOKEN), sent as a bearer token. */
  token?: string
}

export function parseStatusArgs (argv: string[], env: NodeJS.ProcessEnv): StatusOptions {
  let values: { url?: string, watch?: boolean, interval?: string, token?: string }
  try {
    const parsed = parseArgs({ args: argv, options: { url: { type: 'string' }, watch: { type: 'boolean', short: 'w' }, interval: { type: 'string' }, token: { type: 'string' } }, strict: true, allowPositionals: false })
    values = parsed.values
  } catch (err) {
    throw new StatusUsageError(`${(err as Error).message.replace(/\. To specify.*$/s, '')}; usage: sluice status [--url URL] [--watch] [--interval 1s] [--token TOKEN]`)
  }
  const url = (values.url ?? env.SLUICE_URL ?? STATUS_DEFAULTS.url).replace(/\/+$/, '')
  let parsedUrl: URL
  try {
    parsedUrl = new URL(url)
  } catch {
    throw new StatusUsageError(`--url: expected an http:// or https:// URL, got ${JSON.stringify(url)}`)
  }
  if (parsedUrl.protocol !== 'http:' && parsedUrl.protocol !== 'https:') throw new StatusUsageError(`--url: expected an http:// or https:// URL, got ${JSON.stringify(url)}`)
  let intervalMs: number = STATUS_DEFAULTS.intervalMs
  if (values.interval !== undefined) {
    try {
      intervalMs = parseDuration(values.interval)
    } catch (err) {
      throw new StatusUsageError(`--interval: ${(err as Error).message}`)
    }
    if (intervalMs < 100) throw new StatusUsageError(`--interval: expected at least 100ms, got ${values.interval}`)
  }
  const token = values.token ?? (env.SLUICE_ADMIN_TOKEN === '' ? undefined : env.SLUICE_ADMIN_TOKEN)
  return { url, watch: values.watch === true, intervalMs, ...(token === undefined ? {} : { token }) }
}

export async function fetchStatus (baseUrl: string, timeoutMs: number = STATUS_DEFAULTS.timeoutMs, token?: string): Promise<SluiceStatus> {
  const url = `${baseUrl}/_sluice/status`
  let res: Response
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) } })
  } catch (err) {
    const e = err as Error & { cause?: { code?: string, message?: string } }
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : e.cause?.code ?? e.cause?.message ?? e.message
    throw new UnreachableError(`cannot reach Sluice at ${url} (${why}); is it running? Pass its address with --url`)
  }
  const text = await res.text()
  if (res.status === 401) throw new UnreachableError(`${url} answered 401: this Sluice has an admin token; pass it with --token or SLUICE_ADMIN_TOKEN${token === undefined ? '' : ' (the one given was refused)'}`)
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  if (res.status !== 200 || body === null || typeof body !== 'object' || !Array.isArray((body as SluiceStatus).buckets)) {
    throw new UnreachableError(`${url} answered ${res.status} without a Sluice status; is --url the address of Sluice (not of the upstream)?`)
  }
  return body as SluiceStatus
}

function ms (n: number): string {
  return n >= 10_000 ? `${Math.round(n / 1000)}s` : n >= 1000 ? `${(n / 1000).toFixed(1)}s` : `${Math.round(n)}ms`
}

/** Where a limit in force comes from, when not (only) from the config: " (learned; configured 20)". */
export function limitSource (b: BucketStatus): string {
  const src = b.limitSources as BucketStatus['limitSources'] | undefined
  if (src === undefined) return ''
  const from = src.learned === b.limit ? 'learned' : src.announced === b.limit ? 'announced' : undefined
  if (from === undefined || src.configured === b.limit) return ''
  return src.configured === null ? ` (${from}; auto)` : ` (${from}; configured ${src.configured})`
}

function row (b: BucketStatus, now: number): string[] {
  const paused = b.pausedUntil === null ? '-' : `${Math.max(0, Math.ceil((Date.parse(b.pausedUntil) - now) / 1000))}s`
  const shadow = b.shadow === null ? '' : ` (would delay ${b.shadow.wouldDelayLastMinute}, refuse ${b.shadow.wouldRejectLastMinute})`
  return [
    b.bucket,
    b.mode,
    formatRate({ count: b.limit, windowMs: b.windowS * 1000 }) + limitSource(b),
    `${Math.round(b.used * 100)}%`,
    b.remaining === null ? '?' : String(b.remaining),
    String(b.requestsLastMinute),
    String(b.rejectedLastMinute),
    String(b.queueDepth),
    String(b.inFlight),
    b.local.waitMs.count === 0 ? '-' : `${ms(b.local.waitMs.p50)} ${ms(b.local.waitMs.p90)} ${ms(b.local.waitMs.p99)}`,
    paused,
    String(b.liveInstances),
    b.store + shadow
  ]
}

/**
 * A route with several limits: one line per limit under its bucket's (name, rate, used = booked of
 * the limit, left), the other columns blank; the bucket's own line has the least left of them.
 */
function limitLines (b: BucketStatus): string[][] {
  return (b.limits ?? []).map((l) => [
    `  ${l.name}`,
    '',
    formatRate({ count: l.limit, windowMs: l.windowS * 1000 }),
    l.used === null ? '?' : `${Math.round(l.used * 100)}%`,
    l.remaining === null ? '?' : String(l.remaining),
    ...Array.from({ length: HEADER.length - 5 }, () => '')
  ])
}

const HEADER = ['BUCKET', 'MODE', 'LIMIT', 'USED', 'LEFT', 'REQ/MIN', 'REFUSED/MIN', 'QUEUE', 'IN FLIGHT', 'WAIT p50 p90 p99', 'PAUSED', 'INSTANCES', 'STORE']

/** The status as a plain-text table (no colours: it must read the same in a log). */
export function formatStatus (status: SluiceStatus, url: string, now = Date.now()): string {
  const rows = [HEADER, ...status.buckets.flatMap((b) => [row(b, now), ...limitLines(b)])]
  const widths = HEADER.map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  const lines = rows.map((r) => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd(widths[i])).join('  ').trimEnd())
  const n = status.instances.length
  const head = `Sluice at ${url}: ${n} live instance${n === 1 ? '' : 's'}, store ${status.instance.store}${status.instance.storeReachable ? '' : ' (UNREACHABLE: local figures only)'}, ${status.generatedAt.slice(11, 19)} UTC`
  const foot = status.buckets.length === 0 ? ['(no buckets yet)'] : []
  return [head, '', ...lines, ...foot, ''].join('\n')
}

/** Run the command; resolves to the exit status (in watch mode when `signal` fires). */
export async function runStatus (argv: string[], io: StatusIo, env: NodeJS.ProcessEnv = process.env, signal?: AbortSignal): Promise<number> {
  let options: StatusOptions
  try {
    options = parseStatusArgs(argv, env)
  } catch (err) {
    io.err(`sluice: status: ${(err as Error).message}\n`)
    return 2
  }
  try {
    io.out((options.watch && io.tty ? '\x1b[2J\x1b[H' : '') + formatStatus(await fetchStatus(options.url, STATUS_DEFAULTS.timeoutMs, options.token), options.url))
  } catch (err) {
    io.err(`sluice: status: ${(err as Error).message}\n`)
    return 2
  }
  if (!options.watch) return 0
  const stopped = (): boolean => signal?.aborted === true
  while (!stopped()) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, options.intervalMs)
      signal?.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
    })
    if (stopped()) break
    let text: string
    try {
      text = formatStatus(await fetchStatus(options.url, STATUS_DEFAULTS.timeoutMs, options.token), options.url)
    } catch (err) {
      // Keep watching: Sluice may be restarting.
      text = `sluice: status: ${(err as Error).message}; retrying every ${ms(options.intervalMs)}\n`
    }
    io.out(io.tty ? `\x1b[2J\x1b[H${text}` : `\n${text}`)
  }
  return 0
}
