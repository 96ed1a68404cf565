// The Prometheus metrics of one Sluice instance, in a registry of its own (not prom-client's global
// one), so several instances in one process never collide. Times are in seconds, as Prometheus wants.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { StoreMode } from '../limiter/store-failover'

/** Wait in Sluice, s: from "no wait" up to the longest sensible maxWait. */
export const WAIT_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
/** One store command, s: from a round trip on loopback (well under a millisecond) to one across a slow network. */
export const STORE_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

/** Every store mode a route can be in (store-failover.ts), so each gets a 0 or a 1. */
export const STORE_MODES: readonly StoreMode[] = ['redis', 'memory', 'local', 'open', 'closed']

export interface Collectors {
  /** Read at scrape time: queue depth, in flight, pause remaining, tokens remaining per bucket. */
  buckets: () => Iterable<{ route: string, bucket: string, queueDepth: number, pauseRemainingS: number, tokensRemaining: number | undefined, limitsRemaining?: number[] }>
  inFlight: () => Iterable<{ route: string, inFlight: number }>
  storeModes: () => Iterable<{ route: string, mode: string }>
  liveInstances: () => number
  /** Read at scrape time: each limit of the routes with several (limit-set.ts), in order, with its live figure. */
  limits?: () => Iterable<{ route: string, name: string, limit: number, windowMs: number }>
  /** Read at scrape time: the limiters' and fair schedulers' running counts of admission events, per route. */
  admissionEvents: () => Iterable<{ route: string, event: AdmissionEvent, count: number }>
  /** Read at scrape time: the limit in force per route, and its sources (limit-sources.ts); a source that says nothing is undefined. */
  limitsInForce: () => Iterable<{ route: string, limit: number, windowS: number, configured: number | undefined, announced: number | undefined, learned: number | undefined }>
}

/** Where a limit comes from (sluice_budget_limit_source). */
export const LIMIT_SOURCES = ['configured', 'announced', 'learned'] as const

/**
 * What admission did besides a plain reservation: a late start booked again or forwarded late anyway
 * (route-limiter.ts), a request refused on arrival or timed out in the fair queue, a low-priority probe
 * tried or refused (fair-scheduler.ts).
 */
export const ADMISSION_EVENTS = ['late_start_rebooked', 'late_start_forwarded', 'late_start_moved', 'late_send_pushed_back', 'refused_at_arrival', 'held_timeout', 'low_priority_probe', 'low_priority_probe_refused'] as const
export type AdmissionEvent = typeof ADMISSION_EVENTS[number]

export class SluiceMetrics {
  readonly registry = new Registry()
  readonly requests: Counter<'route' | 'outcome' | 'code'>
  readonly wait: Histogram<'route'>
  readonly shadow: Counter<'route' | 'verdict' | 'code'>
  readonly shadowWait: Histogram<'route'>
  readonly upstreamResponses: Counter<'route' | 'class'>
  readonly retries: Counter<'route' | 'reason'>
  readonly pauses: Counter<'route'>
  readonly bodyTimeouts: Counter<'route'>
  readonly storeCommand: Histogram<'store' | 'command'>
  readonly storeErrors: Counter<'store' | 'command'>
  readonly clientRequests: Counter<'route' | 'client' | 'outcome'>
  readonly clientWait: Counter<'route' | 'client'>

  constructor (collectors: Collectors) {
    // Long: the list of this registry's metrics, each declared once with its help text; no logic.
    const registers = [this.registry]
    this.requests = new Counter({
      name: 'sluice_requests_total',
      help: 'Requests that reached a route, by outcome: forwarded, rejected (with the error code) or cancelled (the client left while waiting)',
      labelNames: ['route', 'outcome', 'code'],
      registers
    })
    this.wait = new Histogram({
      name: 'sluice_wait_seconds',
      help: 'Time forwarded requests waited in Sluice for their slot, seconds',
      labelNames: ['route'],
      buckets: WAIT_BUCKETS_S,
      registers
    })
    this.shadow = new Counter({
      name: 'sluice_shadow_verdicts_total',
      help: 'mode: shadow routes: requests that enforcement would have delayed (would_delay) or refused (would_reject, with the code); all were forwarded at once',
      labelNames: ['route', 'verdict', 'code'],
      registers
    })
    this.shadowWait = new Histogram({
      name: 'sluice_shadow_wait_seconds',
      help: 'mode: shadow routes: time requests would have waited if the route were enforced, seconds',
      labelNames: ['route'],
      buckets: WAIT_BUCKETS_S,
      registers
    })
    this.upstreamResponses = new Counter({
      name: 'sluice_upstream_responses_total',
      help: 'Responses from the upstream by status class (1xx..5xx)',
      labelNames: ['route', 'class'],
      registers
    })
    // Fair share made visible: per client (an HMAC of its identity, never the identity itself).
    this.clientRequests = new Counter({
      name: 'sluice_client_requests_total',
      help: 'Requests per fair-share client (hashed id), by outcome: forwarded, rejected or cancelled',
      labelNames: ['route', 'client', 'outcome'],
      registers
    })
    this.clientWait = new Counter({
      name: 'sluice_client_wait_seconds_total',
      help: 'Seconds forwarded requests of each fair-share client (hashed id) waited in Sluice; divide by the forwarded count for the mean',
      labelNames: ['route', 'client'],
      registers
    })
    this.retries = new Counter({
      name: 'sluice_retries_total',
      help: 'Requests Sluice sent to the upstream again, by reason: after pushback or a transient failure',
      labelNames: ['route', 'reason'],
      registers
    })
    this.bodyTimeouts = new Counter({
      name: 'sluice_upstream_body_timeouts_total',
      help: 'Upstream response bodies cut because no chunk came within the route\'s bodyTimeout',
      labelNames: ['route'],
      registers
    })
    this.pauses = new Counter({
      name: 'sluice_upstream_pauses_total',
      help: 'Times the upstream pushed back and a bucket was paused',
      labelNames: ['route'],
      registers
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_store_mode',
      help: 'Where a route makes its reservations now: 1 for the current mode (redis, memory; local, open or closed while Redis is unreachable), 0 for the others',
      labelNames: ['route', 'mode'],
      registers,
      collect () {
        this.reset()
        for (const r of collectors.storeModes()) for (const m of STORE_MODES) this.set({ route: r.route, mode: m }, m === r.mode ? 1 : 0)
      }
    })
    this.storeCommand = new Histogram({
      name: 'sluice_store_command_seconds',
      help: 'Latency of budget store commands (reserve, release, pause), seconds',
      labelNames: ['store', 'command'],
      buckets: STORE_BUCKETS_S,
      registers
    })
    this.storeErrors = new Counter({
      name: 'sluice_store_errors_total',
      help: 'Budget store commands that failed',
      labelNames: ['store', 'command'],
      registers
    })
    const live = collectors.limitsInForce
    // The limit in force and its window, read at scrape time: they follow announced and learned limits,
    // and a reload's routes (a removed route's series go).
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_budget_limit',
      help: 'Requests allowed per window: the limit in force (min of configured, announced, learned)',
      labelNames: ['route'],
      registers,
      collect () {
        this.reset()
        for (const r of live()) this.set({ route: r.route }, r.limit)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_budget_window_seconds',
      help: 'The budget window, seconds',
      labelNames: ['route'],
      registers,
      collect () {
        this.reset()
        for (const r of live()) this.set({ route: r.route }, r.windowS)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_budget_limit_source',
      help: 'Requests per window each source allows: configured, announced (the upstream\'s headers), learned (from its pushback); absent when the source says nothing',
      labelNames: ['route', 'source'],
      registers,
      collect () {
        this.reset()
        for (const r of live()) for (const source of LIMIT_SOURCES) if (r[source] !== undefined) this.set({ route: r.route, source }, r[source])
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_queue_depth',
      help: 'Requests of this instance waiting for their slot, per bucket',
      labelNames: ['route', 'bucket'],
      registers,
      collect () {
        this.reset()
        for (const b of collectors.buckets()) this.set({ route: b.route, bucket: b.bucket }, b.queueDepth)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_upstream_pause_remaining_seconds',
      help: 'Seconds until a pause set after upstream pushback ends, per bucket (0 when not paused)',
      labelNames: ['route', 'bucket'],
      registers,
      collect () {
        this.reset()
        for (const b of collectors.buckets()) this.set({ route: b.route, bucket: b.bucket }, b.pauseRemainingS)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_tokens_remaining',
      help: 'Requests that could start at once, as of the last reservation of this instance, per bucket',
      labelNames: ['route', 'bucket'],
      registers,
      collect () {
        this.reset()
        for (const b of collectors.buckets()) if (b.tokensRemaining !== undefined) this.set({ route: b.route, bucket: b.bucket }, b.tokensRemaining)
      }
    })
    this.perLimit(collectors, registers)
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_in_flight',
      help: 'Requests of this instance forwarded and not yet answered, per route',
      labelNames: ['route'],
      registers,
      collect () {
        this.reset()
        for (const r of collectors.inFlight()) this.set({ route: r.route }, r.inFlight)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_live_instances',
      help: 'Sluice instances sharing this store whose heartbeat is current',
      registers,
      collect () { this.set(collectors.liveInstances()) }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Counter({
      name: 'sluice_admission_events_total',
      help: 'Admission events besides a plain reservation: late starts booked again or forwarded late, refusals on arrival, fair-queue timeouts, low-priority probes',
      labelNames: ['route', 'event'],
      registers,
      collect () {
        this.reset()
        for (const e of collectors.admissionEvents()) this.inc({ route: e.route, event: e.event }, e.count)
      }
    })
    // The event-loop lag histogram samples on a timer of its own: at prom-client's 10 ms it wakes an
    // idle process 100 times a second; 100 ms still catches every stall longer than a sample.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 })
  }

  /**
   * Routes with several limits: each limit's budget in force and window (per route and limit name), and
   * what could start at once in it per bucket (bounded: at most 8 limits per tracked bucket).
   */
  private perLimit (collectors: Collectors, registers: Registry[]): void {
    const limits = (): Array<{ route: string, name: string, limit: number, windowMs: number }> => [...(collectors.limits?.() ?? [])]
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_limit_budget',
      help: 'Routes with several limits: requests allowed per window by each limit, in force (an announced limit may lower it)',
      labelNames: ['route', 'limit'],
      registers,
      collect () {
        this.reset()
        for (const l of limits()) this.set({ route: l.route, limit: l.name }, l.limit)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_limit_window_seconds',
      help: 'Routes with several limits: the window of each limit, seconds',
      labelNames: ['route', 'limit'],
      registers,
      collect () {
        this.reset()
        for (const l of limits()) this.set({ route: l.route, limit: l.name }, l.windowMs / 1000)
      }
    })
    // eslint-disable-next-line no-new -- registered through `registers`; its collect() reads live state
    new Gauge({
      name: 'sluice_limit_tokens_remaining',
      help: 'Routes with several limits: requests that could start at once in each limit, as of the last reservation of this instance, per bucket',
      labelNames: ['route', 'bucket', 'limit'],
      registers,
      collect () {
        this.reset()
        const names = new Map<string, string[]>()
        for (const l of limits()) names.set(l.route, [...(names.get(l.route) ?? []), l.name])
        for (const b of collectors.buckets()) {
          const of = names.get(b.route)
          b.limitsRemaining?.forEach((remaining, i) => { if (of?.[i] !== undefined) this.set({ route: b.route, bucket: b.bucket, limit: of[i] }, remaining) })
        }
      }
    })
  }
}
