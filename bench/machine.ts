// The machine a result came from: figures mean little without it.
import { cpus, loadavg, totalmem } from 'node:os'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

export interface Machine {
  cpus: number
  cpuModel: string
  memoryGiB: number
  node: string
  platform: string
  date: string
  /** 1-minute load average when the run began: other work on the machine skews every figure. */
  loadAverage1m: number
  /** The commit measured (SLUICE_BENCH_COMMIT, else git's HEAD here, plus "+dirty" for local changes). */
  commit: string
}

function commit (): string {
  if (process.env.SLUICE_BENCH_COMMIT !== undefined) return process.env.SLUICE_BENCH_COMMIT
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' })
  if (head.status !== 0) return 'unknown'
  const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], { encoding: 'utf8' }).stdout.trim() !== ''
  return `${head.stdout.trim()}${dirty ? '+dirty' : ''}`
}

function cpuModel (): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'))
    if (line !== undefined) return line.split(':')[1].trim()
  } catch {}
  return cpus()[0]?.model ?? 'unknown'
}

export function machine (): Machine {
  return {
    cpus: cpus().length,
    cpuModel: cpuModel(),
    memoryGiB: Math.round(totalmem() / 2 ** 30 * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    date: new Date().toISOString(),
    loadAverage1m: Math.round(loadavg()[0] * 100) / 100,
    commit: commit()
  }
}
