// A loopback forward proxy (what CI runners reach the internet through): absolute-form requests for
// http:// targets and CONNECT tunnels for https:// ones. It alone resolves the names in `hosts`
// (e.g. api.test → 127.0.0.1), so an upstream by that name is reachable only through it.
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'

export interface ProxyHit {
  method: string
  target: string
  authorization: string | undefined
}

export interface ForwardProxy {
  url: string
  port: number
  hits: ProxyHit[]
  /** Answer every request (and CONNECT) with this status instead of forwarding it; undefined: forward. */
  refuseWith: number | undefined
  close: () => Promise<void>
}

export async function startForwardProxy (hosts: Record<string, string>): Promise<ForwardProxy> {
  const sockets = new Set<Socket>()
  const resolve = (host: string): string => hosts[host] ?? host
  const record = (req: IncomingMessage): void => {
    proxy.hits.push({ method: req.method ?? '', target: req.url ?? '', authorization: req.headers['proxy-authorization'] })
  }
  const server = createServer((req, res) => {
    record(req)
    if (proxy.refuseWith !== undefined) {
      res.writeHead(proxy.refuseWith).end()
      return
    }
    const target = new URL(req.url ?? '')
    const headers = { ...req.headers }
    delete headers['proxy-authorization']
    delete headers['proxy-connection']
    const out = httpRequest({ host: resolve(target.hostname), port: target.port, path: target.pathname + target.search, method: req.method, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      up.pipe(res)
    })
    out.on('error', () => { res.writeHead(502).end() })
    req.pipe(out)
  })
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    record(req)
    sockets.add(client)
    client.on('error', () => {})
    if (proxy.refuseWith !== undefined) {
      client.end(`HTTP/1.1 ${proxy.refuseWith} Refused\r\ncontent-length: 0\r\n\r\n`)
      return
    }
    const [host, port] = (req.url ?? '').split(':')
    const upstream = connect(Number(port), resolve(host), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    sockets.add(upstream)
    upstream.on('error', () => client.destroy())
  })
  server.on('connection', (s: Socket) => sockets.add(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const proxy: ForwardProxy = {
    url: `http://127.0.0.1:${port}`,
    port,
    hits: [],
    refuseWith: undefined,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  return proxy
}
