// A plain loopback origin that records what reaches it (arrival time, method, url, headers, body).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface Hit {
  t: number
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: string
}

export interface TestUpstream {
  url: string
  hits: Hit[]
  close: () => Promise<void>
}

export type Responder = (req: IncomingMessage, res: ServerResponse, body: string) => void

const echo: Responder = (req, res, body) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ ok: true, method: req.method, url: req.url, body }))
}

export async function startUpstream (respond: Responder = echo): Promise<TestUpstream> {
  const hits: Hit[] = []
  const server = createServer((req, res) => {
    const t = performance.timeOrigin + performance.now()
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString()
      hits.push({ t, method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      respond(req, res, body)
    })
  })
  server.keepAliveTimeout = 60_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
