// Exact bytes over a raw TCP socket, for requests that HTTP clients refuse to send (smuggling
// shapes, absolute-form targets, CONNECT, trickled headers).
import { connect, type Socket } from 'node:net'

export interface RawResponse {
  /** Everything the server wrote before closing (or before `timeoutMs`). */
  text: string
  status: number | undefined
  headers: Record<string, string>
  body: string
  /** The parsed body when it is JSON. */
  json: any
  /** The server closed the connection (rather than the read timing out). */
  closed: boolean
  ms: number
}

export function parseResponse (text: string): Pick<RawResponse, 'status' | 'headers' | 'body' | 'json'> {
  const end = text.indexOf('\r\n\r\n')
  const head = end < 0 ? text : text.slice(0, end)
  const [statusLine, ...lines] = head.split('\r\n')
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1]
  const headers: Record<string, string> = {}
  for (const l of lines) {
    const i = l.indexOf(':')
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
  }
  let body = end < 0 ? '' : text.slice(end + 4)
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = unchunk(body)
  let json: unknown
  try { json = JSON.parse(body) } catch {}
  return { status: status === undefined ? undefined : Number(status), headers, body, json }
}

function unchunk (body: string): string {
  let out = ''
  let rest = body
  for (;;) {
    const nl = rest.indexOf('\r\n')
    if (nl < 0) return out
    const size = parseInt(rest.slice(0, nl), 16)
    if (!(size > 0)) return out
    out += rest.slice(nl + 2, nl + 2 + size)
    rest = rest.slice(nl + 2 + size + 2)
  }
}

/**
 * Send `parts` (strings or Buffers, with `gapMs` between them) and read until the server closes the
 * connection, or `timeoutMs` passes, or — with `untilResponse` — one whole response has arrived.
 */
export async function raw (port: number, parts: Array<string | Buffer> | string, opts: { gapMs?: number, timeoutMs?: number, untilResponse?: boolean } = {}): Promise<RawResponse> {
  const list = typeof parts === 'string' ? [parts] : parts
  const timeoutMs = opts.timeoutMs ?? 3000
  const began = performance.now()
  return await new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      resolve({ text, closed, ms: performance.now() - began, ...parseResponse(text) })
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      if (opts.untilResponse === true) {
        const text = Buffer.concat(chunks).toString('latin1')
        const p = parseResponse(text)
        const length = Number(p.headers['content-length'] ?? NaN)
        if (p.status !== undefined && Number.isFinite(length) && Buffer.byteLength(p.body, 'latin1') >= length) finish(false)
      }
    })
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
    socket.on('connect', () => {
      let i = 0
      const next = (): void => {
        if (i >= list.length || socket.destroyed) return
        socket.write(list[i++])
        if (i < list.length) setTimeout(next, opts.gapMs ?? 0)
      }
      next()
    })
  })
}
