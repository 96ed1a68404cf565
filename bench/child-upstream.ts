// Child process: the loopback upstream. "plain" answers every request at once with a small JSON body
// (the overhead baseline); "emulator" is Sluice's API emulator with its arrival log (precision, fairness).
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { startEmulator } from '../src/emulator'
import { serveCalls } from './processes'

interface Options {
  mode: 'plain' | 'emulator'
  limit?: number
  windowMs?: number
  /** emulator: which API's 429s to answer with (default generic). */
  profile?: 'generic' | 'zulip' | 'testrail' | 'testmo' | 'github'
  /** plain: answer the first request 429 with this Retry-After (s), so Sluice holds the bucket that long. */
  firstRetryAfterS?: number
}

const BODY = JSON.stringify({ ok: true, id: 1, name: 'a small JSON answer, like an API read' })

async function main (): Promise<void> {
  const options = JSON.parse(process.argv[2]) as Options
  if (options.mode === 'plain') {
    let first = options.firstRetryAfterS !== undefined
    const server = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        if (first) {
          first = false
          res.writeHead(429, { 'retry-after': String(options.firstRetryAfterS), 'content-type': 'application/json' })
          res.end('{"message":"rate limited"}')
          return
        }
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) })
        res.end(BODY)
      })
    })
    server.keepAliveTimeout = 65_000
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    serveCalls(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { cpu: () => process.cpuUsage() })
    return
  }
  const emulator = await startEmulator({ profile: options.profile ?? 'generic', limit: options.limit, windowMs: options.windowMs })
  serveCalls(emulator.url, {
    // Only what the analyses need: arrival time (epoch ms), outcome, the request id Sluice forwarded,
    // and the path and x-sluice-client header as received (fairness tells clients apart by them).
    arrivals: () => emulator.arrivals.map((a) => ({ t: a.t, outcome: a.outcome, id: a.headers['x-request-id'], path: a.path, client: a.headers['x-sluice-client'] })),
    reset: () => { emulator.reset() }
  })
}

void main()
