// One redis-server process (data node or sentinel) of a test topology: its own temporary directory
// (config, logs, cluster state), loopback ports, gone in teardown. Processes and directories still
// alive when the test process exits are killed and removed then, so a failed test leaves nothing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'

export interface HostPort { host: string, port: number }

export interface RedisNode extends HostPort {
  dir: string
  /** Is the process still running? */
  alive: () => boolean
  /** SIGKILL, as a crash: nothing is saved, clients see the connection drop. */
  kill: () => Promise<void>
}

const leftovers = new Set<() => void>()
process.once('exit', () => { for (const clean of leftovers) clean() })

/** Why these topologies cannot run here (a binary missing), or undefined when they can. */
export function missingRedisBinaries (): string | undefined {
  const missing = ['redis-server', 'redis-cli'].filter((bin) => spawnSync(bin, ['--version']).status !== 0)
  return missing.length === 0 ? undefined : `${missing.join(' and ')} not found on PATH (apt-get install -y redis-server)`
}

/** A temporary directory, removed by `remove` or at the latest when the process exits. */
export function tempDir (prefix: string): { path: string, remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix))
  const remove = (): void => {
    leftovers.delete(remove)
    rmSync(path, { recursive: true, force: true })
  }
  leftovers.add(remove)
  return { path, remove }
}

export interface Topology<C> {
  /** Its temporary directory. */
  dir: string
  /** Its processes, killed by `close`. */
  nodes: RedisNode[]
  /** A client of the topology: errors are swallowed (a killed node is expected), disconnected by `close`. */
  track: (client: C) => C
  /** Disconnect the clients, kill the processes, remove the directory. */
  close: () => Promise<void>
}

/** What one topology (cluster, sentinel set-up) owns, all gone with `close`. */
export function topology<C extends { disconnect: () => void, on: (event: 'error', listener: () => void) => unknown }> (prefix: string): Topology<C> {
  const dir = tempDir(prefix)
  const nodes: RedisNode[] = []
  const clients: C[] = []
  return {
    dir: dir.path,
    nodes,
    track: (client) => {
      client.on('error', () => {})
      clients.push(client)
      return client
    },
    close: async () => {
      for (const c of clients) c.disconnect()
      await Promise.all(nodes.map(async (node) => await node.kill()))
      dir.remove()
    }
  }
}

/** `n` distinct free loopback ports: all are held at once, so none is handed out twice. */
export async function freePorts (n: number): Promise<number[]> {
  const servers: Server[] = []
  try {
    for (let i = 0; i < n; i++) {
      const srv = createServer()
      servers.push(srv)
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject)
        srv.listen(0, '127.0.0.1', resolve)
      })
    }
    return servers.map((s) => (s.address() as AddressInfo).port)
  } finally {
    await Promise.all(servers.map(async (s) => await new Promise((resolve) => s.close(resolve))))
  }
}

/** One command on a connection of its own, no retries: for probes and admin commands. */
export async function ask (node: HostPort, ...args: Array<string | number>): Promise<unknown> {
  const client = new Redis({ host: node.host, port: node.port, lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await client.call(String(args[0]), ...args.slice(1).map(String))
  } finally {
    client.disconnect()
  }
}

/** Poll `probe` every 50 ms until it returns something other than undefined; fail after `timeoutMs`. */
export async function until<T> (what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (err) {
      last = err
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last === undefined ? '' : ` (last error: ${(last as Error).message})`}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The arguments of a data node without persistence, logging to `dir`. */
export function dataNodeArgs (port: number, dir: string): string[] {
  return ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--logfile', join(dir, 'redis.log'), '--save', '', '--appendonly', 'no']
}

/** Start `redis-server args…` (its log goes to `dir`/redis.log) and wait until it answers PING. */
export async function startRedisNode (port: number, dir: string, args: string[]): Promise<RedisNode> {
  const proc: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' })
  const killNow = (): void => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') }
  leftovers.add(killNow)
  const exited = new Promise<void>((resolve) => proc.once('exit', () => { leftovers.delete(killNow); resolve() }))
  const node: RedisNode = {
    host: '127.0.0.1',
    port,
    dir,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    kill: async () => {
      killNow()
      await exited
    }
  }
  try {
    // A process that exited ends the wait at once (its log says why).
    await until(`redis-server on port ${port} answering PING`, 10_000, async () => node.alive() ? await ask(node, 'PING') : 'exited')
    if (!node.alive()) throw new Error(`redis-server on port ${port} exited with ${String(proc.exitCode)}: ${logTail(dir)}`)
  } catch (err) {
    await node.kill()
    throw err
  }
  return node
}

function logTail (dir: string): string {
  try {
    return readFileSync(join(dir, 'redis.log'), 'utf8').trim().split('\n').slice(-3).join(' | ')
  } catch {
    return '(no log)'
  }
}
