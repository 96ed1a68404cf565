// Child process: one Sluice instance (createSluice, as the CLI starts it, logging at info to a discarded
// stdout), plus what the benchmarks measure from inside: event-loop delay, peak RSS, requests open,
// and optionally the reserved start of every forwarded request, by request id.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { DEFAULTS, type SluiceConfig } from '../src/config/schema'
import { checkRoutes, parseRoute } from '../src/config/route'
import { createSluice } from '../src/http/app'
import { createLogger } from '../src/http/logger'
import type { MultiLimitStore, MultiReservation, Reservation } from '../src/store/bucket-store'
import { serveCalls } from './processes'

interface Options {
  route: Record<string, unknown>
  redis?: string
  keyPrefix?: string
  /** Record the reserved start (store clock, epoch ms) of every forwarded request, by x-request-id. */
  record?: boolean
  /** Count the requests open in the process, sample RSS and event-loop delay (scale). */
  countOpen?: boolean
  logLevel?: string
}

async function main (): Promise<void> {
  const options = JSON.parse(process.argv[2]) as Options
  const routes = [parseRoute(options.route, 'route')]
  checkRoutes(routes)
  const config: SluiceConfig = {
    ...DEFAULTS,
    host: '127.0.0.1',
    port: 0,
    redis: options.redis,
    keyPrefix: options.keyPrefix ?? DEFAULTS.keyPrefix,
    hashSecret: 'bench',
    logLevel: options.logLevel ?? 'info',
    routes
  } as SluiceConfig
  const sluice = await createSluice(config, { logger: createLogger(config.logLevel) })
  const store = sluice.store as unknown as { client?: { status: string, connect: () => Promise<void>, ping: () => Promise<unknown> } }
  if (store.client !== undefined) {
    // The first reservations must not race the connection (enableOfflineQueue is off): wait for Redis.
    if (store.client.status === 'wait') await store.client.connect().catch(() => {})
    for (let i = 0; ; i++) {
      try {
        await store.client.ping()
        break
      } catch (err) {
        if (i >= 100) throw err
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }

  let reservations = 0
  let releases = 0
  let waited = 0
  const reserve = sluice.store.reserve.bind(sluice.store)
  sluice.store.reserve = async (...args): Promise<Reservation> => {
    const r = await reserve(...args)
    reservations++
    if (r.admitted && r.waitMs > 0) waited++
    return r
  }
  // A route with several limits books through reserveLimits: one script, one round trip, per call.
  let multiReservations = 0
  const multi = sluice.store as Partial<MultiLimitStore>
  if (multi.reserveLimits !== undefined) {
    const reserveLimits = multi.reserveLimits.bind(sluice.store)
    multi.reserveLimits = async (...args: Parameters<MultiLimitStore['reserveLimits']>): Promise<MultiReservation> => {
      const r = await reserveLimits(...args)
      multiReservations++
      if (r.admitted && r.waitMs > 0) waited++
      return r
    }
  }
  // Reservations given back (a late start the store still holds as its newest, a client gone).
  const release = sluice.store.release.bind(sluice.store)
  sluice.store.release = async (...args): Promise<boolean> => {
    releases++
    return await release(...args)
  }
  // The store's calls by method (reserve, clientPresence, heartbeat, …; one script or command each):
  // which of Sluice's round trips to Redis serve admissions and which serve something else.
  const scripts: Record<string, number> = {}
  const storeObject = sluice.store as unknown as Record<string, unknown>
  if (sluice.store.kind === 'redis') {
    for (const name of ['reserve', 'release', 'recordStarts', 'pause', 'peek', 'heartbeat', 'liveInstances', 'clientPresence', 'leave', 'acquireLease', 'releaseLease', 'renewLeases', 'ping']) {
      const fn = storeObject[name]
      if (typeof fn !== 'function') continue
      storeObject[name] = async (...args: unknown[]): Promise<unknown> => {
        scripts[name] = (scripts[name] ?? 0) + 1
        return await (fn as (...a: unknown[]) => Promise<unknown>).apply(storeObject, args)
      }
    }
  }
  // The reserved start of each forwarded request, by request id: Sluice reports every admission (the
  // final reservation, after any re-reservation of a late start) to its observer, with the reply.
  const starts: Record<string, number> = {}
  type Observer = { admitted: (state: unknown, admission: { reservation: Reservation }, reply: { request: { id: string } }) => void }
  const observer = (sluice.app as unknown as { observer?: Observer }).observer
  if (options.record === true && observer !== undefined) {
    const admitted = observer.admitted.bind(observer)
    observer.admitted = (state, admission, reply) => {
      const r = admission.reservation
      if (r.startMs !== undefined) starts[reply.request.id] = r.startMs
      admitted(state, admission, reply)
    }
  }

  // Requests open in this process (arrived, not yet answered): independent of how the limiter queues.
  // Only where a scenario needs it, so the overhead runs measure Sluice alone.
  let open = 0
  const lateAtReset = new Map<unknown, { lateRetries: number, lateForwarded: number, lateMoved: number, pushedBack: number }>()
  if (options.countOpen === true) {
    sluice.app.server.prependListener('request', (_req, res) => {
      open++
      res.once('close', () => { open-- })
    })
  }

  const url = await sluice.listen()
  // The sampler and the event-loop monitor only where a scenario reads them (scale): the overhead runs
  // measure Sluice with nothing of the benchmark's own in the process.
  const eld = monitorEventLoopDelay({ resolution: 10 })
  let peakRss = process.memoryUsage.rss()
  let peakOpen = 0
  if (options.countOpen === true) {
    eld.enable()
    const sampler = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage.rss())
      peakOpen = Math.max(peakOpen, open)
    }, 20)
    sampler.unref()
  }

  serveCalls(url, {
    resetStats: () => {
      eld.reset()
      peakRss = process.memoryUsage.rss()
      peakOpen = 0
      reservations = 0
      multiReservations = 0
      releases = 0
      waited = 0
      for (const name of Object.keys(scripts)) delete scripts[name]
      for (const limiter of sluice.limiters.values()) lateAtReset.set(limiter, { ...limiter.stats })
    },
    stats: () => ({
      peakRssMiB: Math.round(peakRss / 2 ** 20 * 10) / 10,
      rssMiB: Math.round(process.memoryUsage.rss() / 2 ** 20 * 10) / 10,
      eventLoopDelayMs: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 },
      peakOpen,
      reservations,
      multiReservations,
      releases,
      waited,
      marginsMs: [...sluice.limiters.values()].map((l) => l.policy.marginMs),
      scripts,
      late: [...sluice.limiters.values()].reduce((sum, limiter) => {
        const before = lateAtReset.get(limiter) ?? { lateRetries: 0, lateForwarded: 0, lateMoved: 0, pushedBack: 0 }
        const { lateRetries, lateForwarded, lateMoved, pushedBack } = limiter.stats
        return {
          lateRetries: sum.lateRetries + lateRetries - before.lateRetries,
          lateForwarded: sum.lateForwarded + lateForwarded - before.lateForwarded,
          lateMoved: sum.lateMoved + lateMoved - before.lateMoved,
          pushedBack: sum.pushedBack + pushedBack - before.pushedBack
        }
      }, { lateRetries: 0, lateForwarded: 0, lateMoved: 0, pushedBack: 0 })
    }),
    starts: () => starts,
    // The limit in force per route and its sources (configured, announced, learned: unknown-limit).
    limits: () => [...sluice.limiters.values()].map((l) => l.sources.view()),
    cpu: () => process.cpuUsage()
  })
  process.on('SIGTERM', () => { sluice.close().finally(() => process.exit(0)) })
}

void main()
