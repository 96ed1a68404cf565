// precision's command-line options: `npm run bench -- precision --rates 20,50 --windows 1s,10s
// --runs 10 [--requests 300] [--algorithms sliding-window,token-bucket] [--margin 100ms] [--instances 3]
// [--dump DIR]` (DIR: each run's arrivals and starts, request by request: PrecisionOptions.dumpDir).
// Without any, the scenario's defaults (PRECISION_DEFAULTS). Every run is written to the results JSON.
import { parseDuration } from '../src/config/units'
import { checkFlags } from './flags'
import { PRECISION_DEFAULTS, precision, type PrecisionOptions } from './precision'

const ALGORITHMS = ['sliding-window', 'token-bucket'] as const

export async function precisionFromFlags (flags: Record<string, string>): Promise<Record<string, unknown>> {
  checkFlags('precision', flags, ['rates', 'windows', 'runs', 'requests', 'algorithms', 'margin', 'instances', 'dump'])
  if (Object.keys(flags).length === 0) return await precision()
  const list = (name: string, fallback: string): string[] => (flags[name] ?? fallback).split(',').map((s) => s.trim()).filter((s) => s !== '')
  const rates = list('rates', String(PRECISION_DEFAULTS.limit)).map(Number)
  const windows = list('windows', '1s').map((w) => parseDuration(w))
  const algorithms = list('algorithms', ALGORITHMS.join(','))
  for (const a of algorithms) if (!(ALGORITHMS as readonly string[]).includes(a)) throw new Error(`precision: --algorithms takes ${ALGORITHMS.join(', ')}; got ${a}`)
  const runs = Number(flags.runs ?? 1)
  const requests = Number(flags.requests ?? 300)
  if (![...rates, runs, requests].every((n) => Number.isInteger(n) && n > 0)) throw new Error('precision: --rates, --runs and --requests take positive integers')
  const instances = Number(flags.instances ?? PRECISION_DEFAULTS.instances)
  if (flags.dump === '') throw new Error('precision: --dump takes a directory')
  const results: Array<Record<string, unknown>> = []
  for (let run = 1; run <= runs; run++) {
    for (const limit of rates) {
      for (const windowMs of windows) {
        const options: PrecisionOptions = {
          instances,
          limit,
          windowMs,
          requests,
          ...(flags.dump === undefined ? {} : { dumpDir: flags.dump }),
          variants: algorithms.map((algorithm) => ({
            name: `${algorithm}${algorithm === 'token-bucket' ? ', burst 1' : ''}, ${limit}/${windowMs / 1000}s, run ${run}`,
            algorithm: algorithm as typeof ALGORITHMS[number],
            ...(flags.margin === undefined ? {} : { margin: flags.margin })
          }))
        }
        const r = await precision(options)
        for (const one of r.runs as Array<Record<string, unknown>>) results.push({ ...one, run, windowMs })
      }
    }
  }
  return { scenario: 'precision', flags, targets: { maxInWindowAtMost: 'limit', utilizationAtLeast: { '1s': 0.95, '10s': 0.99 } }, runs: results }
}
