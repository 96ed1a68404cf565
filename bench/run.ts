// `npm run bench [-- scenario…]`: runs the scenarios (all by default), prints a table for each and
// writes bench/results/<scenario>.json with the machine it ran on. `npm run bench:report` renders them.
import { loadavg } from 'node:os'
import { distantStore } from './distant-store'
import { fairness } from './fairness'
import { idle } from './idle'
import { machine } from './machine'
import { nginxReference } from './nginx'
import { overheadFromFlags } from './overhead'
import { peersFromFlags } from './peers'
import { precisionTwoLimits } from './precision-limits'
import { precisionFromFlags } from './precision-flags'
import { scale } from './scale'
import { unknownLimit } from './unknown-limit'
import { writeResult } from './table'

/** `--name value` pairs after the scenario names (e.g. precision --rates 20,50 --windows 1s,10s --runs 10). */
type Flags = Record<string, string>

const SCENARIOS: Record<string, (flags: Flags) => Promise<Record<string, unknown> | undefined>> = {
  overhead: async (flags) => await overheadFromFlags(flags),
  precision: async (flags) => await precisionFromFlags(flags),
  'precision-limits': async () => await precisionTwoLimits(),
  scale: async () => await scale(),
  fairness: async () => await fairness(),
  nginx: async () => await nginxReference(),
  'distant-store': async () => await distantStore(),
  idle: async () => await idle(),
  'unknown-limit': async () => await unknownLimit(),
  peers: async (flags) => await peersFromFlags(flags)
}

async function main (): Promise<void> {
  const args = process.argv.slice(2)
  const firstFlag = args.findIndex((a) => a.startsWith('--'))
  const asked = firstFlag < 0 ? args : args.slice(0, firstFlag)
  const flags: Flags = {}
  const flagArgs = firstFlag < 0 ? [] : args.slice(firstFlag)
  for (let i = 0; i < flagArgs.length; i += 2) flags[flagArgs[i].slice(2)] = flagArgs[i + 1] ?? ''
  const unknown = asked.filter((s) => !(s in SCENARIOS))
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown scenario ${unknown.join(', ')}; known: ${Object.keys(SCENARIOS).join(', ')}\n`)
    process.exit(2)
  }
  const names = asked.length > 0 ? asked : Object.keys(SCENARIOS)
  for (const name of names) {
    const m = machine()
    process.stdout.write(`\n${name} on ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}, load average ${m.loadAverage1m}\n`)
    const began = Date.now()
    const result = await SCENARIOS[name](flags)
    if (result === undefined) continue
    const path = writeResult(name, { ...result, machine: { ...m, loadAverage1mAfter: Math.round(loadavg()[0] * 100) / 100 }, elapsedS: Math.round((Date.now() - began) / 100) / 10 })
    process.stdout.write(`→ ${path}\n`)
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
