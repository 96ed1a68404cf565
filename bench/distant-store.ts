// Scenario 6, distant store: 2 Sluice instances share one Redis reached through a relay that holds every
// chunk a one-way delay in each direction (0 ms: loopback; 40 ms: another region; 150 ms: a laptop
// on a VPN, 300 ms round trip). Limit 20/s (sliding window), 200 requests at once over both instances,
// upstream an emulator enforcing the same limit exactly. Judged from the upstream's arrival log — the
// most arrivals in any 1 s window, utilization as the precision scenario defines it — with what the
// clients got back, and Redis round trips per admitted request (INFO commandstats). One more case at
// 0 ms empties Redis (FLUSHALL) halfway through: the budget's state is gone mid-burst.
import { request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { parsePrometheus } from '../test/helpers/prometheus'
import { burst } from './burst'
import { commandStats, sluiceCommands, startChild, startRedis, type Child } from './processes'
import { minimumDrainMs, printTable, round } from './table'

export interface DistantStoreCase {
  name: string
  oneWayMs: number
  /** FLUSHALL on Redis this many ms after the burst was sent. */
  flushAllAfterMs?: number
}

export interface DistantStoreOptions {
  instances: number
  limit: number
  windowMs: number
  requests: number
  maxWait: string
  cases: DistantStoreCase[]
}

export const DISTANT_STORE_DEFAULTS: DistantStoreOptions = {
  instances: 2,
  limit: 20,
  windowMs: 1000,
  requests: 200,
  maxWait: '30s',
  cases: [
    { name: 'loopback', oneWayMs: 0 },
    { name: 'another region', oneWayMs: 40 },
    { name: 'VPN laptop (300 ms round trip)', oneWayMs: 150 },
    // Halfway through the shortest drain, (200/20 − 1) s / 2.
    { name: 'loopback, FLUSHALL halfway', oneWayMs: 0, flushAllAfterMs: 4500 }
  ]
}

interface Arrival { t: number, outcome: string }

/** What the instances answered, by outcome and error code (their sluice_requests_total), store errors, and each one's store mode at the end. */
async function outcomes (instances: Child[]): Promise<{ byCode: Record<string, number>, storeErrors: number, storeModes: string[] }> {
  const byCode: Record<string, number> = {}
  let storeErrors = 0
  const storeModes: string[] = []
  for (const child of instances) {
    const res = await request(`${child.url}/_sluice/metrics`)
    const metrics = parsePrometheus(await res.body.text())
    for (const s of metrics.find('sluice_requests_total')) {
      const key = s.labels.code === undefined || s.labels.code === '' ? s.labels.outcome : `${s.labels.outcome} ${s.labels.code}`
      byCode[key] = (byCode[key] ?? 0) + s.value
    }
    storeErrors += metrics.value('sluice_store_errors_total')
    storeModes.push(metrics.find('sluice_store_mode').filter((m) => m.value === 1).map((m) => m.labels.mode).join('+'))
  }
  return { byCode, storeErrors, storeModes }
}

/** The benchmark's own commands on its admin connection, left out of Sluice's round trips. */
const BENCH_OWN = ['info', 'config|resetstat', 'flushall']

async function runCase (options: DistantStoreOptions, c: DistantStoreCase, index: number, redis: Awaited<ReturnType<typeof startRedis>>): Promise<Record<string, unknown>> {
  const children: Child[] = []
  try {
    const upstream = await startChild('child-upstream', { mode: 'emulator', limit: options.limit, windowMs: options.windowMs })
    children.push(upstream)
    const relay = await startChild('child-relay', { targetPort: Number(new URL(redis.url).port), oneWayMs: c.oneWayMs })
    children.push(relay)
    const route = { name: 'distant', upstream: upstream.url, limit: `${options.limit}/${options.windowMs / 1000}s`, algorithm: 'sliding-window', maxWait: options.maxWait, maxQueue: options.requests }
    const instances: Child[] = []
    for (let i = 0; i < options.instances; i++) {
      const child = await startChild('child-sluice', { route, redis: relay.url, keyPrefix: `bench-distant-${index}:` })
      children.push(child)
      instances.push(child)
    }
    await redis.client.config('RESETSTAT')
    for (const child of instances) await child.call('resetStats')
    const relayBefore = await relay.call<{ chunksUp: number }>('stats')
    const flush = c.flushAllAfterMs === undefined ? undefined : setTimeout(() => { void redis.client.flushall().catch(() => {}) }, c.flushAllAfterMs)
    const result = await burst(instances.map((child) => child.url), options.requests, `d${index}-`)
    clearTimeout(flush)
    const stats = await commandStats(redis.client)
    const relayAfter = await relay.call<{ chunksUp: number }>('stats')
    const arrivals = await upstream.call<Arrival[]>('arrivals')
    const answered = await outcomes(instances)
    let reservations = 0
    let releases = 0
    const scripts: Record<string, number> = {}
    const late = { lateRetries: 0, lateForwarded: 0 }
    for (const child of instances) {
      const s = await child.call<{ reservations: number, releases: number, scripts: Record<string, number>, late: typeof late }>('stats')
      reservations += s.reservations
      releases += s.releases
      for (const [name, n] of Object.entries(s.scripts)) scripts[name] = (scripts[name] ?? 0) + n
      late.lateRetries += s.late.lateRetries
      late.lateForwarded += s.late.lateForwarded
    }

    const times = arrivals.map((a) => a.t).sort((a, b) => a - b)
    const first = times[0]
    const drainMs = times.length > 1 ? times[times.length - 1] - first : NaN
    // As the precision scenario: the shortest span any client could achieve for the requests that
    // reached the upstream, over the actual span from the first to the last arrival.
    const minimumMs = minimumDrainMs(arrivals.length, options.limit, options.windowMs)
    const commands = sluiceCommands(stats, BENCH_OWN)
    const roundTrips = Object.values(commands).reduce((a, b) => a + b, 0)
    const perSecond = new Array<number>(Math.ceil((drainMs + 1) / 1000) || 0).fill(0)
    for (const t of times) perSecond[Math.floor((t - first) / 1000)]++
    return {
      case: c.name,
      oneWayMs: c.oneWayMs,
      ...(c.flushAllAfterMs === undefined ? {} : { flushAllAfterMs: c.flushAllAfterMs }),
      statuses: result.statuses,
      served: result.statuses['200'] ?? 0,
      refused: Object.fromEntries(Object.entries(result.statuses).filter(([code]) => code !== '200')),
      // Sluice's own count: forwarded, rejected with its error code, cancelled.
      outcomes: answered.byCode,
      storeErrors: answered.storeErrors,
      storeModesAtEnd: answered.storeModes,
      upstreamArrivals: arrivals.length,
      upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
      maxIn1s: maxInWindow(times, options.windowMs),
      limit: options.limit,
      drainMs: round(drainMs, 1),
      minimumMs,
      utilization: round(minimumMs / drainMs, 3),
      elapsedMs: round(result.elapsedMs, 1),
      // Redis reservations answered (late starts booked again and requests sent again after a 429 count
      // again; admissions the instances made without Redis, in a fallback mode, do not count).
      reservations,
      releases,
      // Starts that came late and were booked again, or forwarded late after the last retry.
      ...late,
      redis: {
        roundTrips,
        roundTripsPerAdmitted: round(roundTrips / arrivals.length, 3),
        byCommand: commands,
        // Sluice's script calls by command, counted in the instances (EVALSHA, or EVAL after NOSCRIPT).
        byScript: scripts,
        // Cross-check: chunks the relay carried towards Redis (a pipelined batch is one chunk).
        relayChunksUp: relayAfter.chunksUp - relayBefore.chunksUp
      },
      arrivalsPerSecond: perSecond
    }
  } finally {
    for (const child of children.reverse()) await child.stop()
  }
}

export async function distantStore (options: DistantStoreOptions = DISTANT_STORE_DEFAULTS): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const runs: Array<Record<string, unknown>> = []
  try {
    for (const [index, c] of options.cases.entries()) runs.push(await runCase(options, c, index, redis))
  } finally {
    await redis.stop()
  }
  printTable(`Distant store: ${options.instances} instances, one Redis through a delaying relay, limit ${options.limit}/${options.windowMs / 1000}s (sliding window), ${options.requests} requests at once`,
    ['case', 'one way ms', 'served', 'refused', 'Sluice outcomes', 'max in 1 s', 'limit', '429s upstream', 'drain s', 'minimum s', 'utilization', 'Redis reservations', 'late retries', 'store errors', 'Redis round trips / admitted', 'per second'],
    runs.map((r) => [r.case as string, r.oneWayMs as number, r.served as number, JSON.stringify(r.refused), JSON.stringify(r.outcomes), r.maxIn1s as number, r.limit as number, r.upstreamLimited as number, round(Number(r.drainMs) / 1000, 2), Number(r.minimumMs) / 1000, r.utilization as number, r.reservations as number, r.lateRetries as number, r.storeErrors as number, (r.redis as Record<string, number>).roundTripsPerAdmitted, (r.arrivalsPerSecond as number[]).join(' ')]))
  return { scenario: 'distant-store', options, targets: { maxIn1sAtMost: options.limit, utilizationAtLeast: 0.98 }, runs }
}
