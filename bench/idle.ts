// Scenario idle: what an instance costs when nothing happens. 3 Sluice instances share one Redis, a
// few requests each first (then the traffic stops), and after a settling pause nothing at all for
// IDLE_S: CPU seconds each instance spends (utime + stime from /proc/<pid>/stat) and the commands per
// second Redis receives from them (INFO commandstats, the scripts' inner commands left out).
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { request } from 'undici'
import { commandStats, schedSeconds, sluiceCommands, startChild, startRedis, type Child } from './processes'
import { printTable, round } from './table'

export interface IdleOptions {
  instances: number
  /** Seconds after the last request before measuring: the instances leave their busy pace. */
  settleS: number
  idleS: number
}

export const IDLE_DEFAULTS: IdleOptions = { instances: 3, settleS: 12, idleS: 15 }

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
function cpuSeconds (pid: number, ticksPerS: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may hold spaces), from its closing parenthesis on.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / ticksPerS
}

export async function idle (options: IdleOptions = IDLE_DEFAULTS): Promise<Record<string, unknown>> {
  const ticksPerS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  const redis = await startRedis()
  const upstream = await startChild('child-upstream', { mode: 'plain' })
  const route = { name: 'idle', upstream: upstream.url, limit: '20/s' }
  const instances: Child[] = []
  try {
    for (let i = 0; i < options.instances; i++) instances.push(await startChild('child-sluice', { route, redis: redis.url, keyPrefix: 'idle:', logLevel: 'warn' }))
    for (const s of instances) for (let i = 0; i < 3; i++) await (await request(`${s.url}/warm/${i}`)).body.text()
    await new Promise((resolve) => setTimeout(resolve, options.settleS * 1000))
    await redis.client.config('RESETSTAT')
    const before = instances.map((s) => cpuSeconds(s.pid, ticksPerS))
    const schedBefore = instances.map((s) => schedSeconds(s.pid))
    await new Promise((resolve) => setTimeout(resolve, options.idleS * 1000))
    const cpu = instances.map((s, i) => round(cpuSeconds(s.pid, ticksPerS) - before[i], 3))
    const sched = instances.map((s, i) => round(schedSeconds(s.pid) - schedBefore[i], 4))
    const stats = await commandStats(redis.client)
    // The benchmark's own CONFIG RESETSTAT is counted as config|resetstat.
    const commands = sluiceCommands(Object.fromEntries(Object.entries(stats).filter(([name]) => !name.startsWith('config'))), ['info'])
    const total = Object.values(commands).reduce((n, c) => n + c, 0)
    const perS = round(total / options.idleS, 2)
    printTable(`${options.instances} instances on one Redis, idle for ${options.idleS} s (after ${options.settleS} s of settling)`,
      ['instance', 'CPU s (stat)', 'CPU s (schedstat)', 'CPU ms/s (schedstat)'], cpu.map((c, i) => [`#${i + 1}`, c, sched[i], round(sched[i] * 1000 / options.idleS, 2)]))
    process.stdout.write(`Redis: ${total} commands in ${options.idleS} s (${perS}/s): ${JSON.stringify(commands)}\n`)
    return { options, cpuSeconds: cpu, cpuSecondsSchedstat: sched, redisCommands: commands, redisCommandsPerS: perS }
  } finally {
    for (const s of instances) await s.stop()
    await upstream.stop()
    await redis.stop()
  }
}
