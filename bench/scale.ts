// Scenario 3, scale: 10,000 requests waiting at once in one Sluice instance with Redis. Peak RSS and
// event-loop delay of the Sluice process, and Redis round trips per admitted request (INFO commandstats).
import { request } from 'undici'
import { burst } from './burst'
import { commandStats, sluiceCommands, startChild, startRedis, type Child } from './processes'
import { printTable, round } from './table'

export interface ScaleOptions {
  requests: number
  /** One run per limit: the first saturates this 2-vCPU machine (Sluice's own peak is about 2,400 req/s here), the second is half of it. */
  limits: string[]
  /** The upstream answers the first request 429 with this Retry-After: the bucket is paused that long, so every request of the burst waits. */
  holdS: number
  /** The burst's connections are opened over this many ms. */
  spreadMs: number
}

export const SCALE_DEFAULTS: ScaleOptions = { requests: 10_000, limits: ['2000/s', '1000/s'], holdS: 5, spreadMs: 1500 }

interface SluiceStats {
  peakRssMiB: number
  rssMiB: number
  eventLoopDelayMs: { p50: number, p99: number, max: number }
  peakOpen: number
  reservations: number
  releases: number
  waited: number
}

export async function scale (options: ScaleOptions = SCALE_DEFAULTS): Promise<Record<string, unknown>> {
  const runs: Array<Record<string, unknown>> = []
  for (const limit of options.limits) runs.push(await scaleRun(options, limit))
  printTable(`Scale: ${options.requests} requests into one Sluice (Redis store), bucket held ${options.holdS} s first`,
    ['limit', 'statuses', 'pause left at burst ms', 'peak open requests', 'drain s', 'RSS idle MiB', 'RSS peak MiB', 'loop delay p99 ms', 'max ms', 'round trips / admitted', 'admission round trips / admitted', 'late starts booked again'],
    runs.map((r) => {
      const eld = r.eventLoopDelayMs as Record<string, number>
      return [r.limit as string, JSON.stringify(r.statuses), r.pauseLeftAtBurstMs as number, r.peakOpen as number, r.drainS as number, r.idleRssMiB as number, r.peakRssMiB as number, eld.p99, eld.max, r.roundTripsPerAdmitted as number, r.admissionRoundTripsPerAdmitted as number, r.rebooked as number]
    }))
  return { scenario: 'scale', options, targets: { roundTripsPerAdmitted: 1 }, runs }
}

async function scaleRun (options: ScaleOptions, limit: string): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const children: Child[] = []
  try {
    const upstream = await startChild('child-upstream', { mode: 'plain', firstRetryAfterS: options.holdS })
    children.push(upstream)
    const route = { name: 'scale', upstream: upstream.url, limit, maxWait: '60s', maxQueue: options.requests }
    const keyPrefix = 'bench-scale:'
    const sluice = await startChild('child-sluice', { route, redis: redis.url, keyPrefix, countOpen: true })
    children.push(sluice)
    const idle = await sluice.call<SluiceStats>('stats')
    await sluice.call('resetStats')
    await redis.client.config('RESETSTAT')
    // One request, answered 429 with Retry-After: Sluice pauses the bucket, and the burst queues behind
    // it. Not awaited: Sluice sends it again once the pause is over and only then answers it, so the
    // burst goes out as soon as the pause is in Redis (bounded wait), while it still holds.
    // The key the Redis store pauses the route's bucket under (redis-store.ts: prefix, {bucket}, part).
    const pauseKey = `${keyPrefix}{${route.name}}:pause`
    const prime = request(`${sluice.url}/prime`)
    for (let i = 0; i < 250 && await redis.client.exists(pauseKey) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    const pauseLeftMs = await redis.client.pttl(pauseKey)
    const result = await burst([sluice.url], options.requests, 's-', options.spreadMs)
    const primed = await prime
    await primed.body.dump()
    const stats = await sluice.call<SluiceStats>('stats')
    // INFO, CONFIG and the pause check (EXISTS, PTTL) are this benchmark's own.
    const own = ['info', 'config|resetstat', 'exists', 'pttl']
    const all = await commandStats(redis.client)
    const topLevel = sluiceCommands(all, own)
    // The burst and the primed request (answered once, after the pause).
    const admitted = (result.statuses['200'] ?? 0) + (primed.statusCode === 200 ? 1 : 0)
    const roundTrips = Object.values(topLevel).reduce((a, b) => a + b, 0)
    // Admission is a reservation each, plus one more and a release for a late start; the rest are the
    // instance's heartbeats, client presence and the 429's pause, which come with time, not requests.
    const admissionRoundTrips = stats.reservations + stats.releases
    process.stdout.write(`Redis round trips at ${limit}: ${JSON.stringify(topLevel)}\n`)
    return {
      limit,
      primeStatus: primed.statusCode,
      // How long the pause still held when the burst began (ms; negative: no pause was seen).
      pauseLeftAtBurstMs: pauseLeftMs,
      statuses: result.statuses,
      drainS: round(result.elapsedMs / 1000, 2),
      idleRssMiB: idle.rssMiB,
      peakRssMiB: stats.peakRssMiB,
      peakOpen: stats.peakOpen,
      eventLoopDelayMs: { p50: round(stats.eventLoopDelayMs.p50, 2), p99: round(stats.eventLoopDelayMs.p99, 2), max: round(stats.eventLoopDelayMs.max, 2) },
      // store.reserve calls (one EVALSHA each): above the admitted count when late starts were re-reserved.
      reservations: stats.reservations,
      releases: stats.releases,
      // Less the primed request's second reservation: the upstream answered its first one 429.
      rebooked: stats.reservations - admitted - 1,
      redisCommandsTopLevel: topLevel,
      redisCommandsInsideScripts: Object.fromEntries(Object.entries(all).filter(([name]) => !(name in topLevel) && !own.includes(name))),
      roundTripsPerAdmitted: round(roundTrips / admitted, 4),
      admissionRoundTripsPerAdmitted: round(admissionRoundTrips / admitted, 4),
      backgroundRoundTrips: roundTrips - admissionRoundTrips,
      reservationsPerAdmitted: round(stats.reservations / admitted, 4)
    }
  } finally {
    for (const c of children.reverse()) await c.stop()
    await redis.stop()
  }
}
