// Scenario 1, overhead: one loopback upstream reached directly, through a bare @fastify/http-proxy,
// through Sluice with the memory store and through Sluice with Redis — in one run, with a budget so high
// that nothing waits. Peak throughput with autocannon; then latency at half the bare proxy's peak.
import autocannon from 'autocannon'
import { commandStats, startChild, startRedis, type Child } from './processes'
import { pacedLoad, type PacedResult } from './paced-load'
import { printTable, round } from './table'

export interface OverheadOptions {
  /** Seconds of load per peak measurement (≤ 10). */
  durationS: number
  /** Seconds of load per half-load latency measurement. */
  halfLoadS: number
  connections: number
}

export const OVERHEAD_DEFAULTS: OverheadOptions = { durationS: 8, halfLoadS: 6, connections: 64 }

// 1,000,000 per second with a burst of 100,000: no request of the run can wait.
const NO_WAIT_ROUTE = { name: 'bench', limit: '1000000/s', burst: 100_000, maxWait: '1s' }

interface Target { name: string, url: string, sluice?: Child }

export async function overhead (options: OverheadOptions = OVERHEAD_DEFAULTS): Promise<Record<string, unknown>> {
  const children: Child[] = []
  const redis = await startRedis()
  try {
    const upstream = await startChild('child-upstream', { mode: 'plain' })
    children.push(upstream)
    const bare = await startChild('child-bare-proxy', { upstream: upstream.url })
    children.push(bare)
    const memory = await startChild('child-sluice', { route: { ...NO_WAIT_ROUTE, upstream: upstream.url } })
    children.push(memory)
    const viaRedis = await startChild('child-sluice', { route: { ...NO_WAIT_ROUTE, upstream: upstream.url }, redis: redis.url, keyPrefix: 'bench:' })
    children.push(viaRedis)
    const targets: Target[] = [
      { name: 'direct upstream', url: upstream.url },
      { name: 'bare @fastify/http-proxy', url: bare.url },
      { name: 'Sluice, memory store', url: memory.url, sluice: memory },
      { name: 'Sluice, Redis store', url: viaRedis.url, sluice: viaRedis }
    ]

    const peak: Array<Record<string, number | string>> = []
    let redisCommands: Record<string, number> = {}
    for (const target of targets) {
      await autocannon({ url: `${target.url}/items/1`, connections: options.connections, duration: 2 }) // warm-up, discarded
      await target.sluice?.call('resetStats')
      if (target.sluice === viaRedis) await redis.client.config('RESETSTAT')
      const r = await autocannon({ url: `${target.url}/items/1`, connections: options.connections, duration: options.durationS })
      const stats = target.sluice === undefined ? undefined : await target.sluice.call<{ reservations: number, waited: number }>('stats')
      if (target.sluice === viaRedis) redisCommands = await commandStats(redis.client)
      peak.push({
        target: target.name,
        requestsPerS: round(r.requests.average, 0),
        p50Ms: r.latency.p50,
        p99Ms: r.latency.p99,
        errors: r.errors + r.timeouts,
        non2xx: r.non2xx,
        total: r.requests.total,
        waited: stats?.waited ?? 0
      })
    }
    const bareRps = Number(peak[1].requestsPerS)
    for (const row of peak) row.ratioToBare = round(Number(row.requestsPerS) / bareRps, 3)

    // Latency at half the bare proxy's peak: what a moderately loaded Sluice adds, in microseconds.
    const rate = Math.round(bareRps / 2)
    const half: Array<{ target: string } & PacedResult> = []
    for (const target of targets.slice(1)) {
      await pacedLoad(`${target.url}/items/1`, rate, 1) // warm-up, discarded
      half.push({ target: target.name, ...(await pacedLoad(`${target.url}/items/1`, rate, options.halfLoadS)) })
    }
    const bareP99 = half[0].latencyMs.p99
    const halfRows = half.map((h) => ({
      target: h.target,
      rate: h.rate,
      sent: h.sent,
      errors: h.errors,
      p50Ms: round(h.latencyMs.p50, 3),
      p99Ms: round(h.latencyMs.p99, 3),
      addedP99Ms: round(h.latencyMs.p99 - bareP99, 3)
    }))

    const redisReservations = Number(peak[3].total)
    const result = {
      scenario: 'overhead',
      options,
      route: NO_WAIT_ROUTE,
      peak,
      halfLoad: halfRows,
      redis: { commands: redisCommands, reservationCommandsPerRequest: round((redisCommands.evalsha ?? 0) / redisReservations, 3) },
      targets: {
        memoryRatio: peak[2].ratioToBare,
        memoryRatioTarget: 0.9,
        redisRatio: peak[3].ratioToBare,
        redisRatioTarget: 0.8,
        memoryAddedP99Ms: halfRows[1].addedP99Ms,
        redisAddedP99Ms: halfRows[2].addedP99Ms,
        addedP99TargetMs: 1
      }
    }
    printTable(`Overhead: peak throughput (autocannon, ${options.connections} connections, ${options.durationS} s each)`,
      ['target', 'req/s', 'ratio to bare', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'waited'],
      peak.map((p) => [p.target, p.requestsPerS, p.ratioToBare, p.p50Ms, p.p99Ms, p.errors, p.non2xx, p.waited]))
    printTable(`Overhead: latency at half the bare proxy's peak (${rate} req/s, ${options.halfLoadS} s each)`,
      ['target', 'sent', 'errors', 'p50 ms', 'p99 ms', 'p99 added ms'],
      halfRows.map((h) => [h.target, h.sent, h.errors, h.p50Ms, h.p99Ms, h.addedP99Ms]))
    return result
  } finally {
    for (const c of children.reverse()) await c.stop()
    await redis.stop()
  }
}
