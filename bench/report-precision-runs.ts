// The repeated precision runs (`npm run bench -- precision --rates … --windows … --runs N`), kept as
// bench/results/precision-runs-<name>.json: one row per algorithm, limit and window, over the runs.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { RESULTS_DIR, showSpread, spread } from './table'

type Json = Record<string, any>

/**
 * A sliding window's best budget use once its first window went out as it did: the last arrival
 * comes at least a window after the one `limit` places before it, and so on back into the first
 * window, so the drain is at least the minimum plus how long after the first arrival that one came
 * (the first window's spread: admitting a burst of arrivals on cold connections). Undefined for a
 * token bucket (judged by its sustained rate) and for runs kept without arrivals.
 */
function firstWindowCeiling (r: Json): { spreadMs: number, ceiling: number } | undefined {
  const arrivals = r.arrivalsMs as number[] | undefined
  if (r.algorithm !== 'sliding-window' || arrivals === undefined || arrivals.length === 0) return undefined
  const n = arrivals.length
  const limit = Number(r.limit)
  const windows = Math.ceil(n / limit) - 1
  const spreadMs = arrivals[n - 1 - limit * windows]
  const minimumMs = Number(r.minimumMs)
  return { spreadMs, ceiling: minimumMs / (minimumMs + spreadMs) }
}

function command (flags: Record<string, string>): string {
  return `npm run bench -- precision ${Object.entries(flags).map(([k, v]) => `--${k} ${v}`).join(' ')}`
}

/** Markdown for every precision-runs-*.json in bench/results (none: nothing). */
export function precisionRunsSection (table: (header: string[], rows: Array<Array<string | number>>) => string, machineLine: (m: Json) => string): string[] {
  if (!existsSync(RESULTS_DIR)) return []
  const files = readdirSync(RESULTS_DIR).filter((f) => /^precision-runs-.+\.json$/.test(f)).sort()
  if (files.length === 0) return []
  const out: string[] = ['## 2b. Precision, repeated runs', '',
    'The precision scenario run N times: 3 instances on one Redis, the emulator counting the same limit in any window, all requests at once. "Budget use" is what the goals judge: minimum drain ÷ actual drain for a sliding window; for a token bucket of burst 1, which by design gives up the first window\'s burst, the sustained rate ÷ the limit. Each cell: median (least–most) over the runs.', '',
    'A sliding window\'s "first window spread" is how long after the first arrival at the upstream the one that heads its chain came (the `limit`-th when the requests fill whole windows): the last arrival is at least one window after the one `limit` places before it, and so on back to that one, so the drain is at least the minimum plus this spread, and "ceiling it sets" = minimum ÷ (minimum + spread) bounds budget use whatever the margins. The spread is how long the instances took to admit the burst and send its first window on new connections.', '']
  for (const file of files) {
    const result = JSON.parse(readFileSync(join(RESULTS_DIR, file), 'utf8')) as Json
    const groups = new Map<string, Json[]>()
    for (const r of result.runs as Json[]) {
      const key = `${String(r.algorithm)} ${String(r.limit)}/${Number(r.windowMs) / 1000}s`
      groups.set(key, [...(groups.get(key) ?? []), r])
    }
    out.push(`**\`${command(result.flags as Record<string, string>)}\`**${result.note === undefined ? '' : ` (${String(result.note)})`}. Machine: ${machineLine(result.machine)}.`, '',
      table(['algorithm, limit', 'runs', 'most in any window (limit)', 'upstream 429s (sum)', 'budget use', 'utilization', 'booked again (sum)', 'recorded again (sum)', 'pushed back (sum)', 'first window spread ms', 'ceiling it sets', 'late p99 ms', 'margin at end ms'],
        [...groups].map(([key, rs]) => [key, rs.length,
          `${Math.max(...rs.map((r) => Number(r.maxIn1s)))} (${String(rs[0].limit)})`,
          rs.reduce((n, r) => n + Number(r.upstreamLimited), 0),
          showSpread(spread(rs.map((r) => Number(r.budgetUse)))),
          showSpread(spread(rs.map((r) => Number(r.utilization)))),
          rs.reduce((n, r) => n + Number(r.rebooked), 0),
          // Runs before the count was kept have none: '–', not 0.
          rs.some((r) => r.lateStarts === undefined) ? '–' : rs.reduce((n, r) => n + Number(r.lateStarts.moved), 0),
          rs.some((r) => r.lateStarts === undefined) ? '–' : rs.reduce((n, r) => n + Number(r.lateStarts.pushedBack), 0),
          ...firstWindowCells(rs),
          showSpread(spread(rs.map((r) => Number(r.lateness.p99Ms)))),
          showSpread(spread(rs.flatMap((r) => (r.marginsAtEndMs as number[]).map(Number))))])), '')
  }
  return out
}

/** The first window's spread and the ceiling on budget use it sets, over the runs ('–' where undefined). */
function firstWindowCells (rs: Json[]): string[] {
  const firsts = rs.map(firstWindowCeiling)
  if (firsts.some((f) => f === undefined)) return ['–', '–']
  const known = firsts as Array<{ spreadMs: number, ceiling: number }>
  return [showSpread(spread(known.map((f) => Math.round(f.spreadMs)))), showSpread(spread(known.map((f) => Math.round(f.ceiling * 1000) / 1000)))]
}
