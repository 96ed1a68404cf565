// Server-Sent Events for the dashboard: one serialized message per tick, written to every open
// stream (the cost per connection is one socket write per second). Streams end on shutdown, so
// fastify's close never waits on them.
import type { ServerResponse } from 'node:http'

/** Open streams beyond this are refused (503): a dashboard left open in many tabs must not pile up. */
export const MAX_STREAMS = 64

export class EventHub {
  private readonly streams = new Set<ServerResponse>()

  get size (): number {
    return this.streams.size
  }

  /** Start an event stream on `res`; false when too many are open. */
  open (res: ServerResponse, first: Array<{ event: string, data: string }>): boolean {
    if (this.streams.size >= MAX_STREAMS) return false
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no'
    })
    // EventSource reconnects after this many ms when the stream drops (e.g. Sluice restarted).
    res.write('retry: 2000\n\n')
    for (const m of first) res.write(frame(m.event, m.data))
    this.streams.add(res)
    res.once('close', () => this.streams.delete(res))
    return true
  }

  broadcast (event: string, data: string): void {
    if (this.streams.size === 0) return
    const message = frame(event, data)
    for (const res of this.streams) {
      // A client that does not read is dropped rather than buffered without bound.
      if (res.writableLength > 1024 * 1024) res.destroy()
      else res.write(message)
    }
  }

  closeAll (): void {
    for (const res of this.streams) res.end()
    this.streams.clear()
  }
}

function frame (event: string, data: string): string {
  return `event: ${event}\ndata: ${data}\n\n`
}
