// Scenario peers (issue #18): Sluice beside what a team would otherwise put in front of a strict
// upstream, on the same upstream and the same load, in interleaved rounds (Sluice, Bottleneck,
// rate-limiter-flexible, nginx, Sluice, …) so that load from elsewhere on the machine falls on every
// peer alike. The upstream is the emulator enforcing `rate` in any 1 s and answering 429 above it.
// Each peer runs 3 instances sharing one budget in a Redis of its own (nginx: one instance, it cannot
// share a budget), started afresh every round with fresh keys, and gets `requests` at once, round-robin
// over its instances. Judged from the client's statuses and the upstream's arrival log, with the Redis
// commands the instances sent and the CPU they and their Redis spent.
import { spawnSync } from 'node:child_process'
import { defaultMarginMs } from '../src/config/schema'
import { maxInWindow } from '../src/emulator'
import { loadLuaScript, SCRIPTS } from '../src/store/lua-scripts'
import { burst } from './burst'
import type { PeerKind, PeerOptions } from './child-peer'
import { checkFlags, positiveInt } from './flags'
import { commandStats, commandsOutsideScripts, freePort, hasNginx, processTree, schedSeconds, startChild, startNginx, startRedis, type BenchRedis, type Child } from './processes'
import { minimumDrainMs, printTable, round, showSpread, spread, type Spread } from './table'

export const PEER_NAMES = ['sluice', 'bottleneck', 'rate-limiter-flexible', 'nginx'] as const
export type PeerName = typeof PEER_NAMES[number]

export interface PeersOptions {
  rounds: number
  requests: number
  /** The upstream's limit per 1 s window, and what every peer is configured with. */
  rate: number
  peers: PeerName[]
}

export const PEERS_DEFAULTS: PeersOptions = { rounds: 3, requests: 300, rate: 20, peers: [...PEER_NAMES] }

const WINDOW_MS = 1000
const INSTANCES = 3

/** One peer as deployed for a round: the URLs the load is spread over, and what to measure. */
interface Deployment {
  urls: string[]
  /** Node processes of the peer: their CPU is read with process.cpuUsage() over IPC. */
  nodeProcesses: Child[]
  /** Other processes of the peer (nginx's master and worker): CPU from /proc. */
  otherPids: number[]
  /** The Lua sources the peer runs in Redis: their inner commands are not commands it sent. */
  scripts: string[]
  stop: () => Promise<void>
}

export interface PeerRound {
  peer: PeerName
  round: number
  instances: number
  statuses: Record<string, number>
  /** 2xx at the client. */
  succeeded: number
  otherStatuses: number
  upstreamArrivals: number
  upstreamLimited: number
  maxInWindow: number
  drainMs: number
  minimumMs: number
  utilization: number
  /** Commands the instances sent to their Redis during the burst, by name; undefined without Redis. */
  redisCommands?: Record<string, number>
  redisRoundTripsPer1k?: number
  /** Sluice only: its store calls by method (one script or command each), all instances together. */
  sluiceStoreCalls?: Record<string, number>
  /** CPU (user + system) per 1,000 requests, ms: the peer's own processes, and its redis-server. */
  proxyCpuMsPer1k: number
  redisCpuMsPer1k?: number
}

type CpuUsage = { user: number, system: number }

async function deploy (peer: PeerName, upstream: Child, redis: BenchRedis | undefined, roundNo: number, options: PeersOptions, nginxBin: string | undefined): Promise<Deployment> {
  const children: Child[] = []
  const stopAll = async (): Promise<void> => { for (const c of children.reverse()) await c.stop() }
  try {
    if (peer === 'sluice') {
      // The README's exact guarantee for a sliding-window upstream, the default adaptive margin; wait
      // and queue bounds that hold the whole burst (as the precision scenario sets them).
      const route = { name: 'peers', upstream: upstream.url, limit: `${options.rate}/1s`, algorithm: 'sliding-window', maxWait: '60s', maxQueue: options.requests }
      for (let i = 0; i < INSTANCES; i++) children.push(await startChild('child-sluice', { route, redis: redis?.url, keyPrefix: `peers-r${roundNo}:` }))
      return { urls: children.map((c) => c.url), nodeProcesses: children, otherPids: [], scripts: SCRIPTS.map(([, file]) => loadLuaScript(file)), stop: stopAll }
    }
    if (peer === 'nginx') {
      if (nginxBin === undefined) throw new Error('nginx is not installed')
      // limit_req queues what exceeds the rate (burst, no nodelay) and lets one through every
      // 1 s / rate. Its zone lives in one nginx's shared memory: one instance, one worker.
      const port = await freePort()
      const nginx = await startNginx(nginxBin, `
  limit_req_zone $server_name zone=api:1m rate=${options.rate}r/s;
  upstream api { server ${new URL(upstream.url).host}; keepalive 128; }
  server { listen 127.0.0.1:${port}; server_name bench; location / { limit_req zone=api burst=${Math.max(1000, options.requests)}; proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_read_timeout 120s; } }`)
      return { urls: [`http://127.0.0.1:${port}`], nodeProcesses: [], otherPids: processTree(nginx.pid), scripts: [], stop: async () => await nginx.stop() }
    }
    const peerOptions: PeerOptions = { kind: peer satisfies PeerKind, upstream: upstream.url, redis: redis?.url ?? '', id: `peers-r${roundNo}`, limit: options.rate, windowMs: WINDOW_MS, maxQueue: options.requests }
    for (let i = 0; i < INSTANCES; i++) children.push(await startChild('child-peer', peerOptions))
    return { urls: children.map((c) => c.url), nodeProcesses: children, otherPids: [], scripts: await children[0].call<string[]>('scripts'), stop: stopAll }
  } catch (err) {
    await stopAll()
    throw err
  }
}

async function nodeCpuUs (children: Child[]): Promise<number> {
  const usages = await Promise.all(children.map(async (c) => await c.call<CpuUsage>('cpu')))
  return usages.reduce((sum, u) => sum + u.user + u.system, 0)
}

function procCpuUs (pids: number[]): number {
  return pids.reduce((sum, pid) => sum + schedSeconds(pid) * 1e6, 0)
}

async function peerRound (peer: PeerName, redis: BenchRedis | undefined, roundNo: number, options: PeersOptions, nginxBin: string | undefined): Promise<PeerRound> {
  const upstream = await startChild('child-upstream', { mode: 'emulator', limit: options.rate, windowMs: WINDOW_MS })
  try {
    const d = await deploy(peer, upstream, redis, roundNo, options, nginxBin)
    try {
      // Sluice's store calls by method, to tell its reservations from what comes with time (heartbeats,
      // client presence); child-sluice counts them from its last resetStats.
      const sluices = peer === 'sluice' ? d.nodeProcesses : []
      for (const c of sluices) await c.call('resetStats')
      await redis?.client.config('RESETSTAT')
      const redisPids = redis?.pid === undefined ? [] : [redis.pid]
      const cpuBefore = await nodeCpuUs(d.nodeProcesses) + procCpuUs(d.otherPids)
      const redisCpuBefore = procCpuUs(redisPids)
      const result = await burst(d.urls, options.requests, `${peer}-${roundNo}-`)
      const cpuUs = await nodeCpuUs(d.nodeProcesses) + procCpuUs(d.otherPids) - cpuBefore
      const redisCpuUs = procCpuUs(redisPids) - redisCpuBefore
      // Commands the instances sent: INFO commandstats less every name the peer's scripts call (Redis
      // counts those too), less the benchmark's own INFO and CONFIG RESETSTAT. Round trips: one per
      // command, a MULTI … EXEC block once (its EXEC). Bottleneck and rate-limiter-flexible send only
      // EVALSHA (EVAL the first time); Sluice EVALSHA and MULTI blocks of its answer log, whose queued
      // commands are names its scripts call too, so they are left out with them (checked against
      // MONITOR's unscripted commands: the same counts).
      const redisCommands = redis === undefined ? undefined : commandsOutsideScripts(await commandStats(redis.client), d.scripts, ['info', 'config|resetstat'])
      const roundTrips = redisCommands === undefined ? undefined : Object.entries(redisCommands).filter(([name]) => name !== 'multi').reduce((n, [, c]) => n + c, 0)
      const storeCalls: Record<string, number> = {}
      for (const c of sluices) {
        for (const [name, n] of Object.entries((await c.call<{ scripts: Record<string, number> }>('stats')).scripts)) storeCalls[name] = (storeCalls[name] ?? 0) + n
      }
      const arrivals = await upstream.call<Array<{ t: number, outcome: string }>>('arrivals')
      const times = arrivals.map((a) => a.t).sort((a, b) => a - b)
      const drainMs = times.length > 1 ? times[times.length - 1] - times[0] : NaN
      const minimumMs = minimumDrainMs(options.requests, options.rate, WINDOW_MS)
      const succeeded = Object.entries(result.statuses).filter(([s]) => /^2\d\d$/.test(s)).reduce((n, [, c]) => n + c, 0)
      const per1k = 1000 / options.requests
      return {
        peer,
        round: roundNo,
        instances: d.urls.length,
        statuses: result.statuses,
        succeeded,
        otherStatuses: options.requests - succeeded,
        upstreamArrivals: arrivals.length,
        upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
        maxInWindow: maxInWindow(times, WINDOW_MS),
        drainMs: round(drainMs, 1),
        minimumMs,
        utilization: round(minimumMs / drainMs, 3),
        ...(roundTrips === undefined ? {} : { redisCommands, redisRoundTripsPer1k: round(roundTrips * per1k, 0) }),
        ...(sluices.length === 0 ? {} : { sluiceStoreCalls: storeCalls }),
        proxyCpuMsPer1k: round(cpuUs / 1000 * per1k, 1),
        ...(redis === undefined ? {} : { redisCpuMsPer1k: round(redisCpuUs / 1000 * per1k, 1) })
      }
    } finally {
      await d.stop()
    }
  } finally {
    await upstream.stop()
  }
}

/** How each peer was set up, in words, for the table's readers (the code is deploy() and child-peer.ts). */
function configurations (options: PeersOptions, nginxVersion: string | undefined): Record<PeerName, string> {
  const version = (name: string): string => (require(`${name}/package.json`) as { version: string }).version
  return {
    sluice: `${INSTANCES} instances sharing one Redis; route limit ${options.rate}/1s, algorithm sliding-window, default adaptive margin (cap ${defaultMarginMs(WINDOW_MS)} ms), maxWait 60s, maxQueue ${options.requests}, retries on upstream 429s as by default (2)`,
    bottleneck: `bottleneck ${version('bottleneck')}, ${INSTANCES} instances with Clustering on one Redis (datastore ioredis, one shared id per round, clearDatastore false); minTime ${Math.floor(WINDOW_MS / options.rate)} ms (window / limit, the README's recipe for N per second), no reservoir, no maxConcurrent, highWater null, expiration 60 s on every job; the forward runs as the job`,
    'rate-limiter-flexible': `rate-limiter-flexible ${version('rate-limiter-flexible')}, ${INSTANCES} instances on one Redis; RateLimiterRedis { points: ${options.rate}, duration: 1 } on an ioredis client with enableOfflineQueue false, behind RateLimiterQueue { maxQueueSize: ${options.requests} }; await removeTokens(1), then forward`,
    nginx: `${nginxVersion ?? 'nginx'}, one instance, one worker; limit_req_zone rate=${options.rate}r/s, limit_req burst=${Math.max(1000, options.requests)} without nodelay (queued, one every ${WINDOW_MS / options.rate} ms); keepalive 128 to the upstream`
  }
}

const FIGURES = ['succeeded', 'otherStatuses', 'upstreamLimited', 'maxInWindow', 'utilization', 'redisRoundTripsPer1k', 'proxyCpuMsPer1k', 'redisCpuMsPer1k'] as const

export async function peers (options: PeersOptions = PEERS_DEFAULTS): Promise<Record<string, unknown>> {
  let nginxBin: string | undefined
  let asked = options.peers
  if (asked.includes('nginx')) {
    nginxBin = hasNginx()
    if (nginxBin === undefined) {
      process.stdout.write('\npeers: nginx skipped, it is not installed (Debian: apt-get install -y nginx-light or nginx)\n')
      asked = asked.filter((p) => p !== 'nginx')
    }
  }
  // A redis-server of its own for every peer that uses one: its counts and CPU are that peer's alone.
  const redises = new Map<PeerName, BenchRedis>()
  const rounds: PeerRound[] = []
  try {
    for (const peer of asked) if (peer !== 'nginx') redises.set(peer, await startRedis())
    for (let r = 1; r <= options.rounds; r++) {
      for (const peer of asked) {
        const one = await peerRound(peer, redises.get(peer), r, options, nginxBin)
        process.stdout.write(`round ${r}, ${peer}: ${JSON.stringify(one.statuses)}, ${one.upstreamLimited} upstream 429s, max ${one.maxInWindow} in 1 s, utilization ${one.utilization}\n`)
        rounds.push(one)
      }
    }
  } finally {
    for (const redis of redises.values()) await redis.stop()
  }
  const summary = asked.map((peer) => {
    const mine = rounds.filter((x) => x.peer === peer)
    return { peer, instances: mine[0]?.instances, ...Object.fromEntries(FIGURES.map((f) => [f, spread(mine.map((x) => x[f]))])) } as { peer: PeerName, instances: number } & Record<typeof FIGURES[number], Spread | undefined>
  })
  printTable(`Peers on one strict upstream (${options.rate} in any 1 s, 429 above), ${options.requests} requests at once, median (range) of ${options.rounds} interleaved rounds`,
    ['peer', 'instances', '2xx at client', 'other statuses', 'upstream 429s', `max in any 1 s (limit ${options.rate})`, 'utilization', 'Redis round trips / 1k req', 'proxy CPU ms / 1k req', 'Redis CPU ms / 1k req'],
    summary.map((s) => [s.peer, s.instances, ...FIGURES.map((f) => showSpread(s[f]))]))
  const version = nginxBin === undefined ? undefined : spawnSync(nginxBin, ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '')
  return { scenario: 'peers', options: { ...options, peers: asked }, windowMs: WINDOW_MS, ...(version === undefined ? {} : { nginxVersion: version }), configurations: Object.fromEntries(asked.map((p) => [p, configurations(options, version)[p]])), summary, rounds }
}

/** `npm run bench -- peers [--rounds 3] [--requests 300] [--rate 20] [--peers sluice,bottleneck,rate-limiter-flexible,nginx]`. */
export async function peersFromFlags (flags: Record<string, string>): Promise<Record<string, unknown>> {
  checkFlags('peers', flags, ['rounds', 'requests', 'rate', 'peers'])
  const numbers = {
    rounds: positiveInt('peers', flags, 'rounds', PEERS_DEFAULTS.rounds),
    requests: positiveInt('peers', flags, 'requests', PEERS_DEFAULTS.requests),
    rate: positiveInt('peers', flags, 'rate', PEERS_DEFAULTS.rate)
  }
  const peerList = flags.peers === undefined ? PEERS_DEFAULTS.peers : flags.peers.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const p of peerList) if (!(PEER_NAMES as readonly string[]).includes(p)) throw new Error(`peers: --peers takes ${PEER_NAMES.join(', ')}; got ${p}`)
  return await peers({ ...numbers, peers: peerList as PeerName[] })
}
