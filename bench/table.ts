// Plain-text tables for the terminal, and the JSON result files.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const RESULTS_DIR = join(__dirname, '..', '..', 'bench', 'results')

export function printTable (title: string, header: string[], rows: Array<Array<string | number>>): void {
  const cells = [header, ...rows.map((r) => r.map(String))]
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')
  process.stdout.write(`\n${title}\n${line(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n${cells.slice(1).map(line).join('\n')}\n`)
}

export function writeResult (scenario: string, result: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const path = join(RESULTS_DIR, `${scenario}.json`)
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`)
  return path
}

export function percentile (values: number[], p: number): number {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}

export function round (n: number, digits = 2): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/**
 * The shortest span from the first to the last of `n` requests under `limit` per window, all sent at
 * once: the first window's `limit` at once, then one window per `limit` more (what utilization counts against).
 */
export function minimumDrainMs (n: number, limit: number, windowMs: number): number {
  return (Math.ceil(n / limit) - 1) * windowMs
}

/** Median, least and most of a figure over rounds. */
export interface Spread { median: number, min: number, max: number }

export function spread (values: Array<number | undefined>): Spread | undefined {
  const xs = values.filter((v): v is number => v !== undefined && !Number.isNaN(v))
  if (xs.length === 0) return undefined
  return { median: percentile(xs, 50), min: Math.min(...xs), max: Math.max(...xs) }
}

/** "median (least–most)", or the one value when every round gave it. */
export function showSpread (s: Spread | undefined): string {
  if (s === undefined) return '–'
  return s.min === s.max ? String(s.median) : `${s.median} (${s.min}–${s.max})`
}
