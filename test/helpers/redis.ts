// A real redis-server per test file, on a free loopback port, gone in teardown. Where no
// redis-server binary exists, REDIS_URL is used instead (with a unique key prefix per test).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { randomUUID } from 'node:crypto'
import Redis from 'ioredis'

export interface TestRedis {
  url: string
  port: number
  /** A key prefix no other test uses. */
  prefix: () => string
  /** Stop the server (to simulate an outage); no-op when using REDIS_URL. */
  stop: () => Promise<void>
  /** Start it again on the same port. */
  start: () => Promise<void>
  client: () => Redis
  close: () => Promise<void>
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

function hasRedisServer (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

async function waitForPing (url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      probe.disconnect()
      return
    } catch {
      probe.disconnect()
      if (Date.now() > deadline) throw new Error(`redis at ${url} did not answer within ${timeoutMs} ms`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  }
}

/** `extraArgs` go to redis-server (e.g. ['--requirepass', 'pw']); the url then carries no password. */
export async function startRedis (extraArgs: string[] = []): Promise<TestRedis> {
  const clients: Redis[] = []
  const mkClient = (url: string): Redis => {
    const c = new Redis(url)
    c.on('error', () => {})
    clients.push(c)
    return c
  }
  const prefix = (): string => `t:${randomUUID().slice(0, 8)}:`
  if (!hasRedisServer()) {
    if (extraArgs.length > 0) throw new Error('this test needs its own redis-server (options ' + extraArgs.join(' ') + ')')
    const url = process.env.REDIS_URL
    if (url === undefined) throw new Error('no redis-server binary and no REDIS_URL: install redis-server (apt-get install -y redis-server)')
    await waitForPing(url, 5000)
    return {
      url,
      port: Number(new URL(url).port || 6379),
      prefix,
      stop: async () => {},
      start: async () => {},
      client: () => mkClient(url),
      close: async () => { for (const c of clients) c.disconnect() }
    }
  }
  const port = await freePort()
  const url = `redis://127.0.0.1:${port}`
  const password = extraArgs[extraArgs.indexOf('--requirepass') + 1]
  const pingUrl = extraArgs.includes('--requirepass') ? `redis://:${password}@127.0.0.1:${port}` : url
  let proc: ChildProcess | undefined
  const start = async (): Promise<void> => {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'yes', ...extraArgs], { stdio: 'ignore' })
    await waitForPing(pingUrl, 5000)
  }
  const stop = async (): Promise<void> => {
    const p = proc
    proc = undefined
    if (p === undefined || p.exitCode !== null) return
    await new Promise<void>((resolve) => {
      p.once('exit', () => resolve())
      p.kill('SIGKILL')
    })
  }
  await start()
  return {
    url,
    port,
    prefix,
    stop,
    start,
    client: () => mkClient(url),
    close: async () => {
      for (const c of clients) c.disconnect()
      await stop()
    }
  }
}
