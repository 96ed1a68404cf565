// Child process: one instance of a peer of Sluice, the way a team would put a Node rate-limiting library
// where Sluice goes: a small HTTP proxy that takes a slot from the library's limiter (its state in Redis,
// shared by every instance with the same id) and forwards the request to the upstream with undici,
// relaying the status and the body. Nothing more: no retry, no queue bound of its own, no logging.
// The libraries are devDependencies of the benchmarks only.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Bottleneck from 'bottleneck'
import bottleneckScripts from 'bottleneck/lib/lua.json'
import Redis from 'ioredis'
import { RateLimiterQueue, RateLimiterRedis } from 'rate-limiter-flexible'
import { Pool } from 'undici'
import { serveCalls } from './processes'

export type PeerKind = 'bottleneck' | 'rate-limiter-flexible'

export interface PeerOptions {
  kind: PeerKind
  upstream: string
  redis: string
  /** Names this run's state in Redis: Bottleneck's limiter id, rate-limiter-flexible's key prefix. */
  id: string
  /** The upstream's limit: `limit` requests in any `windowMs`. */
  limit: number
  windowMs: number
  /** How many requests one instance may hold waiting (at least the whole burst). */
  maxQueue: number
}

interface Limiter {
  /** Runs `forward` once the limiter gives it a slot. */
  take: <T>(forward: () => Promise<T>) => Promise<T>
  /** The Lua sources the library runs in Redis (their inner commands are not round trips). */
  scripts: string[]
}

/**
 * Bottleneck with Clustering, configured as its README says for "N per second": `minTime` = window / N
 * (its Quick Start: "to execute 3 requests per second: minTime: 333"), spacing starts cluster-wide
 * through `nextRequest` in Redis. Not a reservoir: the README asks for a refresh interval that is a
 * multiple of 5,000 ms with Clustering (issue #88), since a refresh is only applied when a script runs
 * (a job or a heartbeat, every 5 s), so 20 every 1,000 ms would stall between heartbeats; and with
 * `minTime` in force a reservoir of N per window adds nothing. No margin: Bottleneck has none, and the
 * README's recipe uses none. `expiration` on every job, as the Clustering section asks.
 */
async function bottleneck (options: PeerOptions): Promise<Limiter> {
  const url = new URL(options.redis)
  const limiter = new Bottleneck({
    id: options.id,
    datastore: 'ioredis',
    clearDatastore: false,
    clientOptions: { host: url.hostname, port: Number(url.port) },
    minTime: Math.floor(options.windowMs / options.limit),
    highWater: null
  })
  limiter.on('error', (err: Error) => { process.stderr.write(`bottleneck: ${err.message}\n`) })
  await limiter.ready()
  return {
    // The forward is the job, as the README wraps a call: Bottleneck resolves a job only after its
    // `free` round trip, so a job that only took the slot would delay every forward by one more.
    take: async (forward) => await limiter.schedule({ expiration: 60_000 }, forward),
    scripts: Object.values(bottleneckScripts as Record<string, string>)
  }
}

/**
 * rate-limiter-flexible: a RateLimiterRedis of `limit` points per window (a fixed window that opens at
 * its first point, in a key that expires with it) behind a RateLimiterQueue, which holds a request
 * until the window has a point for it. The ioredis client as its README sets it up
 * (`enableOfflineQueue: false`), connected before the first request.
 */
async function rateLimiterFlexible (options: PeerOptions): Promise<Limiter> {
  const client = new Redis(options.redis, { enableOfflineQueue: false })
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve)
    client.once('error', reject)
  })
  const limiter = new RateLimiterRedis({ storeClient: client, keyPrefix: options.id, points: options.limit, duration: options.windowMs / 1000 })
  const queue = new RateLimiterQueue(limiter, { maxQueueSize: options.maxQueue })
  return {
    take: async (forward) => {
      await queue.removeTokens(1)
      return await forward()
    },
    // Not exported by the library: the script its RateLimiterRedis registers with ioredis.
    scripts: [(limiter as unknown as { _incrTtlLuaScript: string })._incrTtlLuaScript]
  }
}

async function readBody (req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return chunks.length === 0 ? undefined : Buffer.concat(chunks)
}

async function main (): Promise<void> {
  const options = JSON.parse(process.argv[2]) as PeerOptions
  const limiter = options.kind === 'bottleneck' ? await bottleneck(options) : await rateLimiterFlexible(options)
  // As many connections to the upstream as Sluice's pool (and the bare proxy's), no pipelining.
  const pool = new Pool(options.upstream, { connections: 128, pipelining: 1 })
  const forward = async (req: IncomingMessage, body: Buffer | undefined): Promise<{ status: number, contentType: string, body: Buffer }> => {
    const requestId = req.headers['x-request-id']
    const res = await pool.request({ path: req.url ?? '/', method: req.method as 'GET', headers: requestId === undefined ? {} : { 'x-request-id': requestId }, body })
    const payload = Buffer.from(await res.body.arrayBuffer())
    return { status: res.statusCode, contentType: String(res.headers['content-type'] ?? 'application/octet-stream'), body: payload }
  }
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      const body = await readBody(req)
      const answer = await limiter.take(async () => await forward(req, body))
      res.writeHead(answer.status, { 'content-type': answer.contentType, 'content-length': answer.body.length })
      res.end(answer.body)
    } catch (err) {
      // A limiter refusal (queue full, job expired) or a failed forward: one 503, the reason in the body.
      if (!res.headersSent) res.writeHead(503, { 'content-type': 'text/plain' })
      res.end(`peer: ${(err as Error).message}`)
    }
  }
  const server = createServer((req, res) => { void handle(req, res) })
  server.keepAliveTimeout = 65_000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  serveCalls(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {
    cpu: () => process.cpuUsage(),
    scripts: () => limiter.scripts
  })
  process.on('SIGTERM', () => process.exit(0))
}

void main()
