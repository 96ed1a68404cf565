// What the demo measured, and the table that compares the two runs.
import { formatRate, type Rate } from '../config/units'
import { formatSeconds } from './progress'

export interface RunSummary {
  /** Requests the client sent. */
  sent: number
  /** Answers the client counted as successful (2xx). */
  ok: number
  /** 429 answers the emulated API gave (its own count). */
  upstream429s: number
  /** Requests the client saw fail: any answer other than 2xx, or no answer. */
  failures: number
  /** Client answers by HTTP status (0: no answer). */
  statuses: Record<number, number>
  /** From the first request sent to the last answer, in ms. */
  durationMs: number
  /** Most arrivals at the emulated API (accepted or not) in any window of the limit's length. */
  peakInWindow: number
}

export interface DemoSummary {
  requests: number
  concurrency: number
  limit: Rate
  /** Sluice instances in run 2 (2 with --redis, sharing one budget). */
  instances: number
  store: 'memory' | 'redis'
  /** Best possible duration of the burst against this limit: (ceil(requests / limit) - 1) windows, in ms. */
  minimumMs: number
  /** maxWait the demo gave Sluice, in ms. */
  maxWaitMs: number
  marginMs: number
  direct: RunSummary
  sluice: RunSummary
  /** Base URLs of the Sluice instances and of the emulated API. */
  sluiceUrls: string[]
  emulatorUrl: string
  /** True when Sluice's run had no client-visible failure and no upstream 429. */
  ok: boolean
}

function table (rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)))
  return rows.map((r) => r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)).join('   ').trimEnd()).join('\n')
}

export function formatSummary (s: DemoSummary): string {
  const windowS = s.limit.windowMs / 1000
  const through = s.instances === 1 ? 'through Sluice' : `through ${s.instances} Sluices`
  const rows = [
    ['', 'direct to API', through],
    ['requests sent', String(s.direct.sent), String(s.sluice.sent)],
    ['upstream 429s', String(s.direct.upstream429s), String(s.sluice.upstream429s)],
    ['client-visible failures', String(s.direct.failures), String(s.sluice.failures)],
    [`total time (minimum ${formatSeconds(s.minimumMs)})`, formatSeconds(s.direct.durationMs), formatSeconds(s.sluice.durationMs)],
    [`peak in any ${windowS} s window (limit ${s.limit.count})`, String(s.direct.peakInWindow), String(s.sluice.peakInWindow)]
  ]
  const windows = Math.round(s.minimumMs / s.limit.windowMs)
  return `${table(rows)}\n\n` +
    `minimum: ${s.requests} requests at ${formatRate(s.limit)} need ceil(${s.requests}/${s.limit.count}) - 1 = ${windows} full window${windows === 1 ? '' : 's'} of ${windowS} s\n` +
    `peak: arrivals at the API, accepted or not, in the busiest ${windowS} s window\n`
}
