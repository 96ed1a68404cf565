// `npm run bench [-- scenario…]`: runs the scenarios (all by default), prints a table for each and
// writes bench/results/<scenario>.json with the machine it ran on. `npm run bench:report` renders them.
import { loadavg } from 'node:os'
import { distantStore } from './distant-store'
import { fairness } from './fairness'
import { machine } from './machine'
import { nginxReference } from './nginx'
import { overhead } from './overhead'
import { precision } from './precision'
import { scale } from './scale'
import { unknownLimit } from './unknown-limit'
import { writeResult } from './table'

const SCENARIOS: Record<string, () => Promise<Record<string, unknown> | undefined>> = {
  overhead: async () => await overhead(),
  precision: async () => await precision(),
  scale: async () => await scale(),
  fairness: async () => await fairness(),
  nginx: async () => await nginxReference(),
  'distant-store': async () => await distantStore(),
  'unknown-limit': async () => await unknownLimit()
}

async function main (): Promise<void> {
  const asked = process.argv.slice(2)
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
    const result = await SCENARIOS[name]()
    if (result === undefined) continue
    const path = writeResult(name, { ...result, machine: { ...m, loadAverage1mAfter: Math.round(loadavg()[0] * 100) / 100 }, elapsedS: Math.round((Date.now() - began) / 100) / 10 })
    process.stdout.write(`→ ${path}\n`)
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
