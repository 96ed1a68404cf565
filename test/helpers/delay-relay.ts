// A "distant Redis" on loopback: a TCP relay that holds every chunk `oneWayMs` in each direction before
// passing it on, so a round trip through it costs twice that. Each direction is a FIFO of chunks
// stamped with the time they may leave and one timer for the head: order is kept, no timer per chunk.
// Memory is bounded: a side whose queue holds more than HIGH_WATER bytes (or whose destination
// pushes back) is paused until its queue falls below LOW_WATER and the destination drains.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'

export interface DelayRelayOptions {
  targetPort: number
  targetHost?: string
  oneWayMs: number
}

export interface DelayRelayStats {
  connections: number
  /** Chunks (and bytes) passed client → target and target → client. */
  chunksUp: number
  chunksDown: number
  bytesUp: number
  bytesDown: number
}

export interface DelayRelay {
  port: number
  /** Chunks read from now on are held `oneWayMs`; those already queued keep their time (order kept). */
  setDelay: (oneWayMs: number) => void
  stats: () => DelayRelayStats
  /** Stop listening and destroy every relayed connection at once. */
  close: () => Promise<void>
}

const HIGH_WATER = 1 << 20
const LOW_WATER = 1 << 18

/** What leaves a queue: a chunk, or the end (half close) or loss (destroy) of the source, in order. */
type Item = { due: number, chunk: Buffer } | { due: number, chunk: undefined, end: boolean }

/** One direction of one connection: `from` is read, held, and written to `to`. */
class DelayedPipe {
  private readonly queue: Item[] = []
  private head = 0
  private queuedBytes = 0
  private lastDue = 0
  private timer: NodeJS.Timeout | undefined
  private blocked = false

  constructor (private readonly from: Socket, private readonly to: Socket, private readonly delay: () => number, private readonly count: (bytes: number) => void) {
    from.on('data', (chunk: Buffer) => {
      this.queuedBytes += chunk.length
      this.push({ due: 0, chunk })
      this.count(chunk.length)
      this.flow()
    })
    // A half close passes on as one; a source lost without one (reset, refused) destroys the other side.
    let ended = false
    from.on('end', () => { ended = true; this.push({ due: 0, chunk: undefined, end: true }) })
    from.on('close', () => { if (!ended) this.push({ due: 0, chunk: undefined, end: false }) })
    from.on('error', () => {})
    to.on('drain', () => { this.blocked = false; this.flow() })
  }

  stop (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private push (item: Item): void {
    // Never earlier than the item before it: a lowered delay must not reorder the stream.
    item.due = Math.max(performance.now() + this.delay(), this.lastDue)
    this.lastDue = item.due
    this.queue.push(item)
    if (this.timer === undefined) this.arm()
  }

  private arm (): void {
    if (this.head >= this.queue.length) return
    const wait = this.queue[this.head].due - performance.now()
    // Due already (a zero delay): at once, not a timer's millisecond later.
    if (wait <= 0) this.release()
    else this.timer = setTimeout(() => { this.timer = undefined; this.release() }, wait)
  }

  private release (): void {
    const now = performance.now()
    while (this.head < this.queue.length && this.queue[this.head].due <= now) {
      const item = this.queue[this.head++]
      if (item.chunk !== undefined) {
        this.queuedBytes -= item.chunk.length
        if (this.to.writable && !this.to.write(item.chunk)) this.blocked = true
      } else if (item.end) {
        if (this.to.writable) this.to.end()
      } else {
        this.to.destroy()
      }
    }
    // Compact the consumed prefix now and then, not on every chunk.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
    this.flow()
    this.arm()
  }

  /** Read from the source only while its queue is short and the destination takes what it is given. */
  private flow (): void {
    if (this.from.destroyed) return
    if (this.blocked || this.queuedBytes > HIGH_WATER) this.from.pause()
    else if (this.queuedBytes < LOW_WATER) this.from.resume()
  }
}

export async function startDelayRelay (options: DelayRelayOptions): Promise<DelayRelay> {
  let oneWayMs = options.oneWayMs
  const delay = (): number => oneWayMs
  const stats: DelayRelayStats = { connections: 0, chunksUp: 0, chunksDown: 0, bytesUp: 0, bytesDown: 0 }
  const sockets = new Set<Socket>()
  const pipes = new Set<DelayedPipe>()
  // Half-open sockets: an end read from one side is passed on (late), not answered by the relay itself.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    stats.connections++
    const target = connect({ port: options.targetPort, host: options.targetHost ?? '127.0.0.1', allowHalfOpen: true })
    const up = new DelayedPipe(client, target, delay, (n) => { stats.chunksUp++; stats.bytesUp += n })
    const down = new DelayedPipe(target, client, delay, (n) => { stats.chunksDown++; stats.bytesDown += n })
    for (const s of [client, target]) {
      sockets.add(s)
      s.once('close', () => sockets.delete(s))
    }
    pipes.add(up)
    pipes.add(down)
    // Both sides closed: nothing of this connection is queued any more.
    let open = 2
    const done = (): void => {
      if (--open > 0) return
      up.stop()
      down.stop()
      pipes.delete(up)
      pipes.delete(down)
    }
    client.once('close', done)
    target.once('close', done)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return {
    port: (server.address() as AddressInfo).port,
    setDelay: (ms) => { oneWayMs = ms },
    stats: () => ({ ...stats }),
    close: async () => {
      for (const p of pipes) p.stop()
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
