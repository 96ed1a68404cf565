// What a route's margin protects against, measured on its path: per forwarded request, how late its
// first byte is written to the upstream connection after its reserved start, whether that took a new
// connection, and how long the upstream took to answer (undici's diagnostics channels). The figures
// steer the route's margin (adaptive-margin.ts → RouteLimiter.setMargin); an upstream 429 in a
// window where Sluice had booked the limit (or one less) widens it.
//
// Mechanism: rewriteRequestHeaders (route-proxy.ts) notes the request's start under its
// x-request-id, which Sluice sets on every forwarded request; undici:request:create finds the note by
// that header and keys it by undici's request object from then on (a WeakMap: nothing outlives the
// request). Channels are subscribed once per process, while any route probes.
import diagnostics from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import type { RouteConfig } from '../config/schema'
import type { BucketStore, Reservation } from '../store/bucket-store'
import { AdaptiveMargin, fullWindow, type PushbackCause } from '../limiter/adaptive-margin'
import type { RouteLimiter } from '../limiter/route-limiter'
import { openedAhead } from './preconnect'

/** A pool without an open connection for this long, or with none, is cold: its next burst connects. */
const COLD_AFTER_IDLE_MS = 4000
/** How often a probe checks whether its pool went cold (an unref'd timer). */
const COLD_CHECK_MS = 1000
/** Notes of requests that never reached undici are dropped after this long. */
const NOTE_TTL_MS = 60_000
/** Starts remembered to count a window's bookings when the upstream pushes back. */
const STARTS_KEPT = 4096

/** What the probe needs of a request's current attempt (http/request-state.ts). */
export interface Attempt { reservation?: Reservation, cost?: number, costs?: number[] }
interface Note { probe: MarginProbe, bucket: string, startAt: number, notedAt: number, slot: number, attempt: Attempt }
interface Tracked { probe: MarginProbe, bucket: string, startAt: number, sentAt: number | undefined, fresh: boolean, slot: number, attempt: Attempt }
/** How a request on a new connection weighs against the cold figure it raises or lowers. */
const COLD_WEIGHT = 0.25
type UndiciRequest = { headers?: unknown }

const noted = new Map<string, Note[]>()
const tracked = new WeakMap<object, Tracked>()
/** Sockets that carried a request already: the first request on a socket opened it. */
const warmSockets = new WeakSet<object>()
const probes = new Set<MarginProbe>()

function requestIdOf (headers: unknown): string | undefined {
  if (!Array.isArray(headers)) return undefined
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (headers[i] === 'x-request-id' || (typeof headers[i] === 'string' && (headers[i] as string).toLowerCase() === 'x-request-id')) return String(headers[i + 1])
  }
  return undefined
}

const onCreate = ({ request }: { request: UndiciRequest }): void => {
  if (noted.size === 0) return
  const id = requestIdOf(request.headers)
  if (id === undefined) return
  const list = noted.get(id)
  const note = list?.shift()
  if (list !== undefined && list.length === 0) noted.delete(id)
  if (note !== undefined) tracked.set(request, { probe: note.probe, bucket: note.bucket, startAt: note.startAt, sentAt: undefined, fresh: false, slot: note.slot, attempt: note.attempt })
}

const onSendHeaders = ({ request, socket }: { request: object, socket: object }): void => {
  const t = tracked.get(request)
  if (t === undefined) return
  t.sentAt = performance.now()
  t.fresh = !warmSockets.has(socket) && !openedAhead.has(socket)
  warmSockets.add(socket)
}

const onHeaders = ({ request, response }: { request: object, response: { statusCode: number } }): void => {
  const t = tracked.get(request)
  if (t === undefined || t.sentAt === undefined) return
  tracked.delete(request)
  t.probe.record(t.sentAt - t.startAt, performance.now() - t.sentAt, response.statusCode, t)
}

const onError = ({ request }: { request: object }): void => {
  const t = tracked.get(request)
  if (t === undefined) return
  tracked.delete(request)
  if (t.sentAt !== undefined) t.probe.record(t.sentAt - t.startAt, undefined, 0, t)
}

const CHANNELS: Array<[string, (message: never) => void]> = [
  ['undici:request:create', onCreate],
  ['undici:client:sendHeaders', onSendHeaders],
  ['undici:request:headers', onHeaders],
  ['undici:request:error', onError]
]

function subscribe (probe: MarginProbe): void {
  if (probes.size === 0) for (const [name, fn] of CHANNELS) diagnostics.subscribe(name, fn as (m: unknown) => void)
  probes.add(probe)
}

function unsubscribe (probe: MarginProbe): void {
  if (!probes.delete(probe) || probes.size > 0) return
  for (const [name, fn] of CHANNELS) diagnostics.unsubscribe(name, fn as (m: unknown) => void)
  noted.clear()
}

export interface MarginProbeOptions {
  limiter: RouteLimiter
  /** Connections open to the upstream now (undici Pool stats.connected). */
  connected: () => number
  /** Instances sharing the budget (the store's heartbeat count; 1 when alone). */
  instances: () => number
  /** A pushback was told apart (for a log line). */
  onPushback?: (cause: PushbackCause, bookedBefore: number, marginMs: number) => void
}

/** One route's measurements and its adaptive margin. */
export class MarginProbe {
  readonly margin: AdaptiveMargin
  private readonly opts: MarginProbeOptions
  /** Reserved starts of this instance (performance.now), as a ring, and which of them the upstream refused (429). */
  private readonly starts = new Float64Array(STARTS_KEPT)
  private readonly refused = new Uint8Array(STARTS_KEPT)
  private startCount = 0
  private lastSentAt = -Infinity
  /** The most a request on a new connection was late, ms (times safety: the cold margin). */
  private coldLateMs: number
  private readonly timer: NodeJS.Timeout

  constructor (opts: MarginProbeOptions) {
    this.opts = opts
    this.margin = new AdaptiveMargin({ capMs: opts.limiter.route.marginMs, windowMs: opts.limiter.policy.windowMs })
    this.coldLateMs = Infinity
    subscribe(this)
    this.timer = setInterval(() => this.checkCold(), COLD_CHECK_MS)
    this.timer.unref()
  }

  close (): void {
    clearInterval(this.timer)
    unsubscribe(this)
  }

  /** The request `id` of `bucket` is about to be sent upstream; its reserved start was `startAt` (performance.now). */
  expect (id: string, bucket: string, startAt: number, attempt: Attempt): void {
    const slot = this.startCount % STARTS_KEPT
    const note = { probe: this, bucket, startAt, notedAt: performance.now(), slot, attempt }
    const list = noted.get(id)
    if (list === undefined) noted.set(id, [note])
    else list.push(note)
    this.starts[slot] = startAt
    this.refused[slot] = 0
    this.startCount++
  }

  /** One request's figures (from the diagnostics channels). */
  record (latenessMs: number, responseMs: number | undefined, status: number, request: { bucket: string, startAt: number, fresh: boolean, slot: number, attempt: Attempt }): void {
    const now = performance.now()
    this.lastSentAt = now
    if (request.fresh) {
      // The cold figure follows the requests that opened a connection: a new high at once, lower ones slowly.
      this.coldLateMs = Number.isFinite(this.coldLateMs) ? Math.max(latenessMs, (1 - COLD_WEIGHT) * this.coldLateMs + COLD_WEIGHT * latenessMs) : latenessMs
    }
    this.followCap()
    const before = this.margin.marginMs
    this.margin.sample(latenessMs, responseMs, now)
    if (status === 429) {
      if (this.starts[request.slot] === request.startAt) this.refused[request.slot] = 1
      this.pushback(request.startAt, now)
    }
    if (this.margin.marginMs !== before) this.opts.limiter.setMargin(this.margin.marginMs)
    // Later than the margin covers, now or once it has widened (it never passes its cap): the starts
    // after this one are spaced by that margin. Now that the upstream has counted it, the limiter
    // moves the bucket's next starts or this start's record (RouteLimiter.sentLate).
    const uncovered = latenessMs - Math.min(before, this.margin.marginMs)
    if (uncovered > 0) {
      const { reservation, cost, costs } = request.attempt
      void this.opts.limiter.sentLate(request.bucket, uncovered, latenessMs, reservation, costs ?? cost)
    }
  }

  /** The cap is the configured margin; a `limit: auto` route's follows the adopted window (RouteLimiter.setLimit). */
  private followCap (): void {
    const { route, policy } = this.opts.limiter
    const cap = route.limitAuto && policy.windowMs !== route.limit.windowMs ? Math.max(50, Math.round(policy.windowMs / 100)) : route.marginMs
    if (cap !== this.margin.settings.capMs) this.margin.setCap(cap)
    if (policy.windowMs !== this.margin.settings.windowMs) this.margin.setWindow(policy.windowMs)
  }

  /**
   * Starts this instance booked in the upstream's window before `startAt` that the upstream did not
   * refuse (accepted, or not answered yet), times the instances sharing the budget.
   */
  bookedBefore (startAt: number): number {
    const windowMs = this.opts.limiter.policy.windowMs
    let n = 0
    const kept = Math.min(this.startCount, STARTS_KEPT)
    for (let i = 0; i < kept; i++) {
      const s = this.starts[i]
      if (s < startAt && s > startAt - windowMs && this.refused[i] === 0) n++
    }
    return n * Math.max(1, this.opts.instances())
  }

  private pushback (startAt: number, now: number): void {
    const booked = this.bookedBefore(startAt)
    const { limit, windowMs, marginMs } = this.opts.limiter.policy
    // A full window at the margins its starts were booked with: a margin narrowing within the window
    // (by half-lives of half a window at 1 s) booked fewer than today's would, and a jitter 429 there
    // counted against today's full window looked like a lower limit.
    const full = fullWindow(limit, windowMs, Math.max(marginMs, this.margin.widestInWindow(now)))
    const cause = this.margin.pushback(booked, full, now, this.opts.instances())
    this.opts.onPushback?.(cause, booked, this.margin.marginMs)
  }

  /** Widen to the cold margin when the pool has no connection left or was idle long enough to lose them. */
  private checkCold (): void {
    const now = performance.now()
    for (const [id, list] of noted) {
      if (list[0].probe === this && now - list[0].notedAt > NOTE_TTL_MS) noted.delete(id)
    }
    if (this.opts.connected() > 0 && now - this.lastSentAt < COLD_AFTER_IDLE_MS) return
    const coldMs = Number.isFinite(this.coldLateMs) ? this.margin.settings.safety * this.coldLateMs : this.margin.settings.capMs
    const before = this.margin.marginMs
    if (this.margin.cold(coldMs) !== before) this.opts.limiter.setMargin(this.margin.marginMs)
  }
}

/**
 * The route's probe, closed with its scope; none for `margin: fixed` or a shadow route (which books
 * nothing the upstream could count against it).
 */
export function marginProbe (scope: FastifyInstance, parts: { route: RouteConfig, limiter: RouteLimiter, store: BucketStore }, connected: () => number): MarginProbe | undefined {
  const { route, limiter, store } = parts
  if (route.marginFixed === true || route.mode === 'shadow') return undefined
  const log = scope.log
  const probe = new MarginProbe({
    limiter,
    connected,
    instances: () => store.kind === 'redis' ? store.instanceCount() : 1,
    onPushback: (cause, bookedBefore, marginMs) => {
      log.info({ route: route.name, cause, bookedBefore, limit: limiter.policy.limit, marginMs: Math.round(marginMs * 10) / 10 },
        cause === 'jitter' ? 'upstream 429 in a full window: the margin widens' : 'upstream 429 below the limit: not a margin matter')
    }
  })
  scope.addHook('onClose', async () => { probe.close() })
  return probe
}
