// Connections opened ahead of a backlog's starts (http/preconnect.ts): a real Sluice, a real upstream
// on loopback that closes every connection after its answer, so each window's starts need new ones.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import t from 'tap'
import { startSluice } from './helpers/sluice'

interface Arrival { at: number, openedAt: number }

async function closingUpstream (): Promise<{ url: string, arrivals: Arrival[], connections: () => number, close: () => Promise<void> }> {
  const openedAt = new WeakMap<Socket, number>()
  const arrivals: Arrival[] = []
  let connections = 0
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    arrivals.push({ at: performance.now(), openedAt: openedAt.get(req.socket) ?? NaN })
    res.writeHead(200, { 'content-type': 'application/json', connection: 'close' })
    res.end('{}')
  })
  server.on('connection', (socket: Socket) => {
    connections++
    openedAt.set(socket, performance.now())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    arrivals,
    connections: () => connections,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

t.test('a backlog\'s next window finds its connections open when its starts come', async (t) => {
  const upstream = await closingUpstream()
  t.teardown(() => upstream.close())
  const sluice = await startSluice([{ name: 'ahead', upstream: upstream.url, limit: '4/s', algorithm: 'sliding-window', margin: '20ms fixed', maxWait: '10s', maxQueue: 100 }])
  t.teardown(() => sluice.close())
  const statuses = await Promise.all(Array.from({ length: 12 }, async () => {
    const res = await fetch(`${sluice.url}/x`)
    await res.arrayBuffer()
    return res.status
  }))
  t.same([...new Set(statuses)], [200], 'all 12 forwarded')
  const arrivals = [...upstream.arrivals].sort((a, b) => a.at - b.at)
  t.equal(arrivals.length, 12, 'one arrival each')
  // The first window's 4 start at once and connect at their starts; the 8 that waited should find a
  // connection opened a lead (250 ms before any connect was measured, then 50) before their starts.
  const waited = arrivals.slice(4)
  const ahead = waited.filter((a) => a.at - a.openedAt >= 20)
  t.ok(ahead.length >= 6, `${ahead.length} of the 8 that waited came on a connection opened at least 20 ms before them (${waited.map((a) => (a.at - a.openedAt).toFixed(0)).join(', ')} ms)`)
  t.ok(upstream.connections() <= 12 + 4, `connections opened: ${upstream.connections()} for 12 requests (at most a window's more)`)
})

t.test('without a backlog nothing is opened ahead', async (t) => {
  const upstream = await closingUpstream()
  t.teardown(() => upstream.close())
  const sluice = await startSluice([{ name: 'idle', upstream: upstream.url, limit: '100/s', algorithm: 'sliding-window', margin: '20ms fixed', maxWait: '10s', maxQueue: 100 }])
  t.teardown(() => sluice.close())
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`${sluice.url}/x`)
    await res.arrayBuffer()
  }
  t.equal(upstream.connections(), 5, 'one connection per request (each closed after its answer), none more')
  t.ok(upstream.arrivals.every((a) => a.at - a.openedAt < 20), 'each opened at its start')
})
