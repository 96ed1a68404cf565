// Child process: one Sluice instance (createSluice, as the CLI starts it, logging at info to a discarded
// stdout), plus what the benchmarks measure from inside: event-loop delay, peak RSS, requests waiting,
// and optionally every reservation's start keyed by request id.
import { AsyncLocalStorage } from 'node:async_hooks'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { checkRoutes, DEFAULTS, parseRoute, type SluiceConfig } from '../src/config/schema'
import { createLogger, createSluice } from '../src/http/app'
import type { Reservation } from '../src/store/bucket-store'
import { serveCalls } from './processes'

interface Options {
  route: Record<string, unknown>
  redis?: string
  keyPrefix?: string
  /** Record the reserved start (store clock, epoch ms) of every request, keyed by x-request-id. */
  record?: boolean
  /** Count the requests open in the process (peakOpen). */
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

  // Which request a reservation belongs to: the request id, carried through the async chain of the
  // request from the moment the HTTP server emits it.
  const requestIds = new AsyncLocalStorage<string>()
  const starts: Record<string, number> = {}
  let reservations = 0
  let waited = 0
  const reserve = sluice.store.reserve.bind(sluice.store)
  sluice.store.reserve = async (...args): Promise<Reservation> => {
    const r = await reserve(...args)
    reservations++
    if (r.admitted && r.waitMs > 0) waited++
    const id = requestIds.getStore()
    if (options.record === true && id !== undefined && r.admitted) starts[id] = r.startMs ?? Date.now() + r.waitMs
    return r
  }
  // Requests open in this process (arrived, not yet answered): independent of how the limiter queues.
  // Only where a scenario needs it, so the overhead runs measure Sluice alone.
  let open = 0
  if (options.record === true || options.countOpen === true) {
    sluice.app.server.prependListener('request', (req, res) => {
      open++
      res.once('close', () => { open-- })
      const id = req.headers['x-request-id']
      if (options.record === true && typeof id === 'string') requestIds.enterWith(id)
    })
  }

  const url = await sluice.listen()
  const eld = monitorEventLoopDelay({ resolution: 10 })
  eld.enable()
  let peakRss = process.memoryUsage.rss()
  let peakOpen = 0
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss())
    peakOpen = Math.max(peakOpen, open)
  }, 20)
  sampler.unref()

  serveCalls(url, {
    resetStats: () => {
      eld.reset()
      peakRss = process.memoryUsage.rss()
      peakOpen = 0
      reservations = 0
      waited = 0
    },
    stats: () => ({
      peakRssMiB: Math.round(peakRss / 2 ** 20 * 10) / 10,
      rssMiB: Math.round(process.memoryUsage.rss() / 2 ** 20 * 10) / 10,
      eventLoopDelayMs: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 },
      peakOpen,
      reservations,
      waited
    }),
    starts: () => starts
  })
  process.on('SIGTERM', () => { sluice.close().finally(() => process.exit(0)) })
}

void main()
