// The emulated rate-limited upstream: a plain node:http server, independent of Sluice's own stack, that
// enforces an exact sliding-window limit and answers in the emulated API's own formats.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { ArrivalLog, type Arrival, type EmulatorStats, type Outcome, type Pushback } from './arrival-log'
import { FlakyDice, NGINX_502_PAGE, NGINX_503_PAGE } from './flaky'
import { resolveEmulatorOptions, type EmulatorOptions, type ResolvedEmulatorOptions } from './options'
import { maintenanceReply, PROFILES, type Reply, type WindowState } from './profiles'
import { maxInWindow, SlidingWindowLog } from './sliding-window'

export interface MaintenanceOptions {
  /** Send Retry-After (whole seconds until maintenance ends, at least 1). Default true. */
  retryAfter?: boolean
}

export interface EarlyOptions {
  /** Forgive arrivals within this many ms after a pushback was sent (already in flight). Default 0. */
  graceMs?: number
}

export interface Emulator {
  /** e.g. http://127.0.0.1:40123 (no trailing slash). */
  readonly url: string
  readonly port: number
  readonly options: Readonly<ResolvedEmulatorOptions>
  /** Every arrival since start or the last reset(), in arrival order. */
  readonly arrivals: readonly Arrival[]
  /** Every answer that asked the client to wait, in the order they were sent. */
  readonly pushbacks: readonly Pushback[]
  /** Arrival times (epoch ms) of accepted requests. */
  okTimes: () => number[]
  stats: () => EmulatorStats
  /** Most accepted arrivals in any window of `windowMs` (default: the enforced window). */
  maxInWindow: (windowMs?: number) => number
  /** Arrivals that came before the time the most recent pushback before them asked for. */
  earlyAfterPushback: (options?: EarlyOptions) => number
  /** From now on for `ms` ms, answer every request with TestRail's 409 maintenance (any profile). 0 ends it. */
  maintenance: (ms: number, options?: MaintenanceOptions) => void
  /** Clear logs, the window and maintenance, and re-seed the flaky dice. */
  reset: () => void
  /** Stop listening and destroy open (keep-alive) sockets; pending answers are dropped. */
  close: () => Promise<void>
}

/** Epoch ms with sub-ms precision and a monotonic clock underneath. */
function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

function headerValue (req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v.join(', ') : v
}

/** Reads the body fully (a real API does before answering) and resolves with its size in bytes. */
function readBody (req: IncomingMessage): Promise<number> {
  return new Promise((resolve) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => { bytes += chunk.length })
    req.on('end', () => resolve(bytes))
    req.on('error', () => resolve(bytes))
    req.on('close', () => resolve(bytes))
  })
}

const HTML_TYPE = { 'content-type': 'text/html' }

class EmulatorServer implements Emulator {
  url = ''
  port = 0
  private log = new ArrivalLog()
  private readonly window: SlidingWindowLog
  private readonly dice: FlakyDice
  private maintenanceUntil = 0
  private maintenanceRetryAfter = true
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly server: Server

  constructor (readonly options: Readonly<ResolvedEmulatorOptions>) {
    this.window = new SlidingWindowLog(options.limit, options.windowMs)
    this.dice = new FlakyDice(options.flaky)
    this.server = createServer((req, res) => this.handle(req, res))
  }

  get arrivals (): readonly Arrival[] { return this.log.arrivals }
  get pushbacks (): readonly Pushback[] { return this.log.pushbacks }

  async listen (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    const address = this.server.address() as AddressInfo
    this.port = address.port
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
    this.url = `http://${host}:${this.port}`
  }

  okTimes (): number[] { return this.log.okTimes() }
  stats (): EmulatorStats { return this.log.stats() }
  maxInWindow (windowMs = this.options.windowMs): number { return maxInWindow(this.log.okTimes(), windowMs) }
  earlyAfterPushback (options: EarlyOptions = {}): number { return this.log.earlyAfterPushback(options.graceMs ?? 0) }

  maintenance (ms: number, options: MaintenanceOptions = {}): void {
    if (!(typeof ms === 'number' && ms >= 0 && Number.isFinite(ms))) {
      throw new TypeError(`maintenance ms: expected a finite number of ms >= 0, received ${String(ms)} (${typeof ms})`)
    }
    this.maintenanceUntil = nowMs() + ms
    this.maintenanceRetryAfter = options.retryAfter ?? true
  }

  reset (): void {
    // A fresh log object: answers still pending from before the reset land in the old one.
    this.log = new ArrivalLog()
    this.window.clear()
    this.maintenanceUntil = 0
    this.dice.reseed()
  }

  async close (): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve())
      // Keep-alive sockets would otherwise hold close() open for up to keepAliveTimeout (5 s).
      this.server.closeAllConnections()
    })
  }

  private state (now: number): WindowState {
    const { limit, announceLimit, windowMs, testmoPenaltyMs, announce, rateLimitHeaders } = this.options
    const used = this.window.count(now)
    return {
      now,
      limit,
      announcedLimit: announceLimit,
      windowMs,
      used,
      msUntilFree: this.window.msUntilBelow(limit, now),
      announcedResetMs: used >= announceLimit ? this.window.msUntilBelow(announceLimit, now) : this.window.msUntilOldestLeaves(now),
      testmoPenaltyMs,
      announce,
      draft: rateLimitHeaders
    }
  }

  /** The outcome of an arrival at `t`, and the reply it gets (none: 200 with `okHeaders`, or a reset). */
  private decide (t: number): { outcome: Outcome, reply?: Reply, okHeaders: Record<string, string> } {
    // Order matters: maintenance shuts the whole API; gateway failures happen before the API counts
    // the call; only calls the API accepts take room in the window.
    if (t < this.maintenanceUntil) {
      return { outcome: 'maintenance', reply: maintenanceReply(this.maintenanceUntil - t, this.maintenanceRetryAfter), okHeaders: {} }
    }
    const flaky = this.dice.roll()
    if (flaky === 'reset') return { outcome: 'reset', okHeaders: {} }
    if (flaky === 'flaky-502') return { outcome: flaky, reply: { status: 502, headers: HTML_TYPE, body: NGINX_502_PAGE }, okHeaders: {} }
    if (flaky === 'flaky-503') return { outcome: flaky, reply: { status: 503, headers: HTML_TYPE, body: NGINX_503_PAGE }, okHeaders: {} }
    if (this.window.tryAccept(t)) {
      return { outcome: 'ok', okHeaders: this.options.announce ? PROFILES[this.options.profile].announce(this.state(t)) : {} }
    }
    return { outcome: 'limited', reply: PROFILES[this.options.profile].limited(this.state(t)), okHeaders: {} }
  }

  /** Decides the outcome at arrival (the window counts arrivals, not answers), answers once the body is read. */
  private handle (req: IncomingMessage, res: ServerResponse): void {
    const t = nowMs()
    const log = this.log
    const headers: Arrival['headers'] = {}
    const client = headerValue(req, 'x-sluice-client')
    const requestId = headerValue(req, 'x-request-id')
    if (client !== undefined) headers['x-sluice-client'] = client
    if (requestId !== undefined) headers['x-request-id'] = requestId

    const { outcome, reply, okHeaders } = this.decide(t)

    const arrival: Arrival = {
      n: log.arrivals.length,
      t,
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      status: outcome === 'ok' ? 200 : reply?.status ?? 0,
      outcome,
      headers,
      bodyBytes: 0
    }
    log.arrivals.push(arrival)
    this.options.onArrival?.(arrival)

    void readBody(req).then((bytes) => {
      arrival.bodyBytes = bytes
      this.after(this.options.latencyMs, () => {
        if (outcome === 'reset') {
          // RST, not FIN: the client sees ECONNRESET with no response, as when a balancer drops the call.
          req.socket.resetAndDestroy()
          return
        }
        const answer = reply ?? {
          status: 200,
          headers: { 'content-type': 'application/json; charset=utf-8', ...okHeaders },
          body: JSON.stringify({ ok: true, method: arrival.method, path: arrival.path, n: arrival.n, bodyBytes: bytes })
        }
        this.send(res, answer, arrival, log)
      })
    })
  }

  private send (res: ServerResponse, reply: Reply, arrival: Arrival, log: ArrivalLog): void {
    if (res.destroyed || res.writableEnded) return
    if (reply.asks !== undefined) {
      const sentAt = nowMs()
      const retryAt = 'afterMs' in reply.asks ? sentAt + reply.asks.afterMs : reply.asks.untilEpochMs
      log.pushbacks.push({ n: arrival.n, status: reply.status, sentAt, retryAt })
    }
    res.writeHead(reply.status, { ...reply.headers, 'content-length': String(Buffer.byteLength(reply.body)) })
    res.end(reply.body)
  }

  private after (ms: number, fn: () => void): void {
    if (ms <= 0) return fn()
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      fn()
    }, ms)
    this.timers.add(timer)
  }
}

/** Starts an emulated rate-limited API on loopback; resolves once it listens. */
export async function startEmulator (options: EmulatorOptions = {}): Promise<Emulator> {
  const emulator = new EmulatorServer(resolveEmulatorOptions(options))
  await emulator.listen()
  return emulator
}
