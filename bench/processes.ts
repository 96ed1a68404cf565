// Every party of a benchmark runs in its own process — upstream, proxies, Redis, nginx — so the load
// generator, the proxy under test and the origin do not share one event loop. Children talk to the
// parent over IPC: "ready" with their URL, then request/reply calls.
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Redis from 'ioredis'
import { loadLuaScript, SCRIPTS } from '../src/store/lua-scripts'

export interface Child {
  url: string
  pid: number
  call: <T = unknown>(method: string, arg?: unknown) => Promise<T>
  stop: () => Promise<void>
}

interface Message { type: string, id?: number, value?: unknown, url?: string, error?: string }

/** Fork `dist/bench/<script>.js` with a JSON argument; resolves once it reports ready. */
export async function startChild (script: string, options: unknown): Promise<Child> {
  const proc = fork(join(__dirname, `${script}.js`), [JSON.stringify(options)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()
  let next = 0
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within 15 s`)), 15_000)
    proc.once('exit', (code) => reject(new Error(`${script} exited with ${String(code)} before it was ready`)))
    proc.on('message', (m: Message) => {
      if (m.type === 'ready') {
        clearTimeout(timer)
        resolve(m.url ?? '')
      } else if (m.type === 'reply' && m.id !== undefined) {
        const p = pending.get(m.id)
        pending.delete(m.id)
        if (m.error !== undefined) p?.reject(new Error(m.error))
        else p?.resolve(m.value)
      }
    })
  })
  return {
    url,
    pid: proc.pid ?? 0,
    call: async <T>(method: string, arg?: unknown): Promise<T> => await new Promise<T>((resolve, reject) => {
      const id = next++
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      proc.send({ type: 'call', id, method, arg })
    }),
    stop: async () => await stopProcess(proc)
  }
}

/** Inside a child: report ready and answer calls with `handlers`. */
export function serveCalls (url: string, handlers: Record<string, (arg: unknown) => unknown>): void {
  process.on('message', (m: Message & { method: string, arg: unknown }) => {
    if (m.type !== 'call') return
    Promise.resolve().then(() => handlers[m.method](m.arg)).then(
      (value) => process.send?.({ type: 'reply', id: m.id, value }),
      (err: Error) => process.send?.({ type: 'reply', id: m.id, error: err.message }))
  })
  // The parent going away ends the child: no orphan keeps a port.
  process.on('disconnect', () => process.exit(0))
  process.send?.({ type: 'ready', url })
}

export async function stopProcess (proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
    proc.once('exit', () => { clearTimeout(timer); resolve() })
    proc.kill('SIGTERM')
  })
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address()
      srv.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0))
    })
  })
}

export interface BenchRedis {
  url: string
  client: Redis
  /** The redis-server process, when this benchmark started it (not for REDIS_URL). */
  pid?: number
  stop: () => Promise<void>
}

/** A private redis-server on a free loopback port (no persistence), or REDIS_URL when the binary is missing. */
export async function startRedis (): Promise<BenchRedis> {
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    const url = process.env.REDIS_URL
    if (url === undefined) throw new Error('no redis-server binary and no REDIS_URL: install redis-server (apt-get install -y redis-server)')
    const client = new Redis(url)
    return { url, client, stop: async () => { client.disconnect() } }
  }
  const port = await freePort()
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const url = `redis://127.0.0.1:${port}`
  const client = new Redis(url, { retryStrategy: (n) => (n > 100 ? null : 20) })
  client.on('error', () => {})
  await client.ping()
  return { url, client, pid: proc.pid, stop: async () => { client.disconnect(); await stopProcess(proc) } }
}

/** Redis command counts since the last CONFIG RESETSTAT, from INFO commandstats. */
export async function commandStats (client: Redis): Promise<Record<string, number>> {
  const info = await client.info('commandstats')
  const stats: Record<string, number> = {}
  for (const line of info.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (m !== null) stats[m[1]] = Number(m[2])
  }
  return stats
}

/**
 * The commands Sluice sent itself, from INFO commandstats: Redis also counts every command a Lua
 * script runs, so those names are left out (Sluice sends none of them but TIME, three on each
 * connection, before a run's counts are reset), with `benchOwn`, the benchmark's own commands.
 */
export function sluiceCommands (stats: Record<string, number>, benchOwn: string[]): Record<string, number> {
  return commandsOutsideScripts(stats, SCRIPTS.map(([, file]) => loadLuaScript(file)), benchOwn)
}

/**
 * The commands clients sent, from INFO commandstats: every name a command inside one of `scripts`
 * (Lua sources) calls is left out, since Redis counts those too, and so is `benchOwn`. A client that
 * also sent one of those names itself is undercounted by as many.
 */
export function commandsOutsideScripts (stats: Record<string, number>, scripts: string[], benchOwn: string[]): Record<string, number> {
  const leftOut = new Set(benchOwn)
  for (const script of scripts) {
    for (const m of script.matchAll(/redis\.p?call\(\s*['"]([A-Za-z]+)['"]/g)) leftOut.add(m[1].toLowerCase())
  }
  return Object.fromEntries(Object.entries(stats).filter(([name]) => !leftOut.has(name)))
}

/** CPU seconds a process has been on a CPU (user + system), from /proc/<pid>/schedstat (ns: finer than stat's 10 ms ticks). */
export function schedSeconds (pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9
}

/** The process and its children (nginx's master and workers), from /proc/<pid>/task/<tid>/children. */
export function processTree (pid: number): number[] {
  const children = readdirSync(`/proc/${pid}/task`).flatMap((tid) => readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(' ').filter((c) => c !== '').map(Number))
  return [pid, ...children.flatMap(processTree)]
}

export function hasNginx (): string | undefined {
  for (const bin of ['nginx', '/usr/sbin/nginx']) {
    const r = spawnSync(bin, ['-v'], { encoding: 'utf8' })
    if (r.status === 0) return bin
  }
  return undefined
}

/** nginx in the foreground with a private prefix (its own pid file, temp paths and logs). */
export async function startNginx (bin: string, httpBlock: string): Promise<{ pid: number, stop: () => Promise<void> }> {
  const prefix = mkdtempSync(join(tmpdir(), 'sluice-bench-nginx-'))
  const conf = join(prefix, 'nginx.conf')
  writeFileSync(conf, [
    'worker_processes 1;',
    'daemon off;',
    `pid ${prefix}/nginx.pid;`,
    `error_log ${prefix}/error.log warn;`,
    'events { worker_connections 16384; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy; fastcgi_temp_path ${prefix}/fcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;`,
    httpBlock,
    '}'
  ].join('\n'))
  const proc = spawn(bin, ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] })
  await new Promise((resolve) => setTimeout(resolve, 500))
  if (proc.exitCode !== null) throw new Error(`nginx exited with ${proc.exitCode}; see ${prefix}/error.log`)
  return { pid: proc.pid ?? 0, stop: async () => await stopProcess(proc) }
}
