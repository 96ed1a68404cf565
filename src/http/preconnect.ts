// Connections opened ahead of a backlog's starts. A request waiting for its slot will need a
// connection then; when the route's open connections cannot carry the starts of the next window,
// the rest are opened while the requests wait, not at their starts (a TCP and TLS handshake made at
// the start would make the request that much late: margin-probe.ts counts it as a cold start).
//
// undici's Pool has no call to open a connection without a request, but it takes a `connect`
// function: this one hands the pool a socket opened ahead when it has one, and connects as undici
// would (its own buildConnector, with the route's options) otherwise. Sockets opened ahead and not
// taken within STASH_IDLE_MS are closed (the upstream would close an idle one anyway).
import type { Socket } from 'node:net'
import { buildConnector } from 'undici'
import { MinHeap } from '../limiter/min-heap'

/** A socket opened ahead and not taken within this long is closed (undici's own keep-alive default). */
const STASH_IDLE_MS = 4000
/**
 * Connections are opened this many times the recent connect time before the starts that need them
 * (within LEAD_MIN_MS..LEAD_MAX_MS; LEAD_FIRST_MS before any was measured): open too early, the
 * pool's own connections of the window before are still counted, which may have closed by then.
 */
const LEAD_FACTOR = 3
const LEAD_MIN_MS = 50
const LEAD_MAX_MS = 1000
const LEAD_FIRST_MS = 250
/** How a new connect time weighs against the recent one. */
const CONNECT_WEIGHT = 0.2

/**
 * Sockets opened ahead: their first request did not wait for the connection, so margin-probe.ts does
 * not count it among those that opened one (the cold margin follows what opening one costs).
 */
export const openedAhead = new WeakSet<object>()

interface Stashed { socket: Socket, timer: NodeJS.Timeout, onClose: () => void, onError: () => void }

export class Preconnector {
  /** Sockets this connector opened that are not closed yet (in the pool or in the stash). */
  private live = 0
  /** Connections being opened now (the pool's or ahead). */
  private opening = 0
  private readonly stash: Stashed[] = []
  private readonly base: buildConnector.connector
  private readonly target: buildConnector.Options
  private closed = false
  /** The recent time a connection took to open, ms (undefined: none yet). */
  private connectMs: number | undefined
  /** When to look again (performance.now(), a lead before a waiting request's start), earliest first. */
  private readonly due = new MinHeap<number>((at) => at)
  /** The one timer, set for the earliest of them. */
  private timer: NodeJS.Timeout | undefined
  private timerAt = Infinity
  /** A look at what the next window lacks is queued for the end of this turn. */
  private wantQueued = false

  /**
   * `origin`: the upstream's; `connect`: the route's connect options (as Pool's `connect`);
   * `bound`: the most connections the pool may have open; `startsSoon`: how many requests may start
   * within the next window now (RouteLimiter), counted again when the lead before a start comes.
   */
  constructor (origin: URL, connect: buildConnector.BuildOptions, private readonly bound: number, private readonly startsSoon: () => number) {
    this.base = buildConnector(connect)
    const hostname = origin.hostname.startsWith('[') ? origin.hostname.slice(1, -1) : origin.hostname
    this.target = { host: origin.host, hostname, protocol: origin.protocol, port: origin.port, servername: undefined }
  }

  /** Pool's `connect` option: a socket opened ahead when there is one, else a new connection. */
  readonly connector: buildConnector.connector = (opts, callback) => {
    for (let s = this.stash.pop(); s !== undefined; s = this.stash.pop()) {
      clearTimeout(s.timer)
      s.socket.off('error', s.onError)
      if (s.socket.destroyed || s.socket.readyState !== 'open') continue
      openedAhead.add(s.socket)
      // Still counted as live: it closes in the pool now.
      s.socket.off('close', s.onClose)
      s.socket.once('close', () => { this.live-- })
      // Never within the call: undici's connect() expects its callback later, as a connection's.
      const socket = s.socket
      queueMicrotask(() => callback(null, socket))
      return
    }
    this.open(opts, (err, socket) => {
      if (socket == null) {
        callback(err as Error, null)
        return
      }
      this.track(socket)
      callback(null, socket)
    })
  }

  /** How long before a start its connection is opened, ms. */
  get leadMs (): number {
    if (this.connectMs === undefined) return LEAD_FIRST_MS
    return Math.min(LEAD_MAX_MS, Math.max(LEAD_MIN_MS, LEAD_FACTOR * this.connectMs))
  }

  /**
   * A request starts waiting for a slot `inMs` from now: one lead before it, the requests that may
   * start within the next window then get what the open and opening connections lack.
   */
  waiting (inMs: number): void {
    if (this.closed) return
    const lead = this.leadMs
    if (inMs <= lead) return this.wantSoon()
    this.due.push(performance.now() + inMs - lead)
    this.arm()
  }

  /**
   * At the end of this turn, once: the request that told is counted among the waiting by then, and
   * the requests that start waiting in the same turn share one count.
   */
  private wantSoon (): void {
    if (this.wantQueued) return
    this.wantQueued = true
    queueMicrotask(() => {
      this.wantQueued = false
      this.want(this.startsSoon())
    })
  }

  /** One timer, for the earliest lead still due. */
  private arm (): void {
    const next = this.due.peek()
    if (next === undefined || next >= this.timerAt) return
    clearTimeout(this.timer)
    this.timerAt = next
    this.timer = setTimeout(() => this.fire(), Math.max(0, next - performance.now())).unref()
  }

  private fire (): void {
    this.timer = undefined
    this.timerAt = Infinity
    const now = performance.now()
    while ((this.due.peek() ?? Infinity) <= now + 1) this.due.pop()
    this.want(this.startsSoon())
    this.arm()
  }

  /** `n` requests start within the next window: open what the open and opening connections lack. */
  want (n: number): void {
    if (this.closed) return
    const lacking = Math.min(n, this.bound) - this.live - this.opening
    for (let i = 0; i < lacking; i++) {
      this.open(this.target, (err, socket) => {
        if (err != null || socket == null) return
        if (this.closed) {
          socket.destroy()
          return
        }
        this.keep(socket)
      })
    }
  }

  close (): void {
    this.closed = true
    clearTimeout(this.timer)
    while (this.due.size > 0) this.due.pop()
    for (const s of this.stash.splice(0)) {
      clearTimeout(s.timer)
      s.socket.destroy()
    }
  }

  private open (opts: buildConnector.Options, callback: (err: Error | null, socket: Socket | null) => void): void {
    this.opening++
    const began = performance.now()
    this.base(opts, (err, socket) => {
      this.opening--
      if (socket != null) {
        const ms = performance.now() - began
        this.connectMs = this.connectMs === undefined ? ms : (1 - CONNECT_WEIGHT) * this.connectMs + CONNECT_WEIGHT * ms
      }
      if (socket == null) callback(err ?? new Error('no socket'), null)
      else callback(null, socket)
    })
  }

  /** Counted as live until it closes. */
  private track (socket: Socket): void {
    this.live++
    socket.once('close', () => { this.live-- })
  }

  /** Kept until the pool takes it, it closes, or it idles for STASH_IDLE_MS. */
  private keep (socket: Socket): void {
    this.live++
    const entry: Stashed = {
      socket,
      timer: setTimeout(() => socket.destroy(), STASH_IDLE_MS).unref(),
      onClose: () => {
        this.live--
        clearTimeout(entry.timer)
        const i = this.stash.indexOf(entry)
        if (i >= 0) this.stash.splice(i, 1)
      },
      // The upstream may reset a socket that waits here: it closes, nothing is thrown.
      onError: () => {}
    }
    socket.on('error', entry.onError)
    socket.once('close', entry.onClose)
    this.stash.push(entry)
  }
}
