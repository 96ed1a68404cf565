// Scenario 4, fairness (issue #8, with its demands): two Sluice instances share one Redis and one
// route. A big client (2,000 requests at once through instance A) and a medium one (200 through B)
// hold backlogs; a second later a small client (20 requests, one at a time) and a tiny one (2) arrive. Judged from the
// upstream's arrival log (clients told apart by the x-sluice-client header Sluice forwards): the
// backlogged clients' starts while both had a backlog (Jain's index), each newcomer request's wait in
// slots, the share of the budget used while contended and once one client was left alone, the most
// arrivals in any 1 s window, and Redis round trips per admitted request, by script (MONITOR), with
// what the instances send while nothing waits (polling would show there). Run on fresh instances
// (their first requests open the connections to the upstream) and on instances that forwarded a few.
import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Agent, request } from 'undici'
import { parseRoute } from '../src/config/route'
import { densestWindow } from '../src/emulator'
import { lookaheadUnitsFor } from '../src/limiter/fair-pacing'
import { tokenBucketParams } from '../src/store/bucket-store'
import { loadLuaScript, SCRIPTS } from '../src/store/lua-scripts'
import { commandStats, sluiceCommands, startChild, startRedis, type BenchRedis, type Child } from './processes'
import { percentile, printTable, round } from './table'

export interface FairnessOptions {
  limit: number
  windowMs: number
  /** Clients with a backlog: all their requests sent at once, each client through one instance (0 = A, 1 = B). */
  backlogged: Array<{ client: string, requests: number, instance: number }>
  /** Newcomers: one request at a time, the first `afterMs` after the backlogs were sent, then every `everyMs` (later if the previous is still open). */
  newcomers: Array<{ client: string, requests: number, instance: number, afterMs: number, everyMs: number }>
  /** Starts this long after the first arrival are left out of the shares (ms): the backlogs (2,200 requests) reach two instances at once. */
  settleMs: number
  /** After the load, Redis commands are counted this long with nothing waiting (ms). */
  idleMs: number
  /**
   * Each variant runs the whole load on new instances and a new upstream, with Redis's script cache
   * flushed. `warmRequests` > 0 first sends that many requests through each instance (connections to
   * the upstream open, scripts loaded), then lets the bucket go idle and clears the upstream's log.
   */
  variants: Array<{ name: string, warmRequests: number }>
}

export const FAIRNESS_DEFAULTS: FairnessOptions = {
  limit: 50,
  windowMs: 1000,
  backlogged: [
    { client: 'big', requests: 2000, instance: 0 },
    { client: 'medium', requests: 200, instance: 1 }
  ],
  newcomers: [
    { client: 'small', requests: 20, instance: 0, afterMs: 1000, everyMs: 300 },
    { client: 'tiny', requests: 2, instance: 1, afterMs: 1500, everyMs: 1000 }
  ],
  settleMs: 1000,
  idleMs: 2000,
  variants: [
    { name: 'cold instances', warmRequests: 0 },
    { name: 'warm instances', warmRequests: 10 }
  ]
}

const now = (): number => performance.timeOrigin + performance.now()
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

interface Arrival { t: number, outcome: string, path: string, client?: string }

interface Sent {
  client: string
  path: string
  /** Epoch ms: request handed to undici, and response fully read. */
  sentAt: number
  answeredAt: number
  status: number
  /** ms Sluice held the request (its Server-Timing queue;dur), NaN without it. */
  queueMs: number
  error?: string
}

/** Jain's fairness index of the given shares (1 = all equal, 1/n = one takes all). */
export function jain (xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0)
  const squares = xs.reduce((a, b) => a + b * b, 0)
  return squares === 0 ? 1 : (sum * sum) / (xs.length * squares)
}

/**
 * A script's text reduced to its letters and digits. MONITOR shows EVAL's script escaped (newlines as
 * \n, other bytes as \xHH, and ioredis unescapes only quotes), so EVAL is matched to its file by this.
 */
const scriptKey = (text: string, fromMonitor: boolean): string =>
  (fromMonitor ? text.replace(/\\x[0-9a-fA-F]{2}|\\[nrtab\\]/g, ' ') : text).replace(/[^A-Za-z0-9]/g, '')

/** Script SHA1 (EVALSHA, as ioredis defineCommand sends it) and script key (EVAL, after a NOSCRIPT) → file name. */
function scriptNames (): Map<string, string> {
  const names = new Map<string, string>()
  for (const [, file] of SCRIPTS) {
    const text = loadLuaScript(file)
    const name = file.replace(/\.lua$/, '')
    names.set(createHash('sha1').update(text).digest('hex'), name)
    names.set(scriptKey(text, false), name)
  }
  return names
}

/** Starts in (from, to] as a share of the slots in that span. */
function utilization (times: number[], from: number, to: number, slotMs: number): number {
  if (to <= from) return NaN
  return times.filter((t) => t > from && t <= to).length / ((to - from) / slotMs)
}

interface Command { t: number, name: string }

/** One variant: new upstream and instances, the whole load, the figures. */
async function run (options: FairnessOptions, variant: FairnessOptions['variants'][number], v: number, redisUrl: string, commands: Command[], admin: BenchRedis['client']): Promise<Record<string, unknown>> {
  const children: Child[] = []
  const agents = new Map<string, Agent>()
  const agentOf = (client: string): Agent => {
    let agent = agents.get(client)
    // One connection pool per client, as separate jobs would have: no client queues behind another's sockets.
    if (agent === undefined) agents.set(client, agent = new Agent({ connections: null, keepAliveTimeout: 60_000, headersTimeout: 120_000, bodyTimeout: 120_000 }))
    return agent
  }
  try {
    await admin.script('FLUSH')
    const upstream = await startChild('child-upstream', { mode: 'emulator', limit: options.limit, windowMs: options.windowMs })
    children.push(upstream)
    const total = [...options.backlogged, ...options.newcomers].reduce((n, c) => n + c.requests, 0)
    const raw = { name: 'fair', upstream: upstream.url, limit: `${options.limit}/${options.windowMs / 1000}s`, maxWait: '60s', maxQueue: total }
    const instances: Child[] = []
    for (let i = 0; i < 2; i++) {
      const c = await startChild('child-sluice', { route: raw, redis: redisUrl, keyPrefix: `bench-fairness-${v}:` })
      children.push(c)
      instances.push(c)
    }
    // The slot and look-ahead as the fair scheduler computes them (token bucket, burst 1).
    const route = parseRoute(raw, 'route')
    const slotMs = tokenBucketParams({ algorithm: route.algorithm, limit: route.limit.count, windowMs: route.limit.windowMs, burst: route.burst, marginMs: route.marginMs }).intervalUs / 1000
    const lookaheadUnits = lookaheadUnitsFor(slotMs, route.cost.map((r) => r.cost))

    const send = async (client: string, instance: number, i: number): Promise<Sent> => {
      const path = `/c/${client}/${i}`
      const sentAt = now()
      try {
        const res = await request(`${instances[instance].url}${path}`, { headers: { 'x-sluice-client': client }, dispatcher: agentOf(client) })
        await res.body.dump()
        const timing = /queue;dur=([\d.]+)/.exec(String(res.headers['server-timing'] ?? ''))
        return { client, path, sentAt, answeredAt: now(), status: res.statusCode, queueMs: timing === null ? NaN : Number(timing[1]) }
      } catch (err) {
        return { client, path, sentAt, answeredAt: now(), status: -1, queueMs: NaN, error: (err as Error).message }
      }
    }
    // Every client's connections to Sluice open before the load, 100 at a time: hundreds of connects
    // at once overflow the listen backlog, and a dropped SYN costs its client a second or more.
    const connections = [...options.backlogged.map((c) => ({ ...c, n: c.requests })), ...options.newcomers.map((c) => ({ ...c, n: 1 }))]
    for (const { client, instance, n } of connections) {
      for (let done = 0; done < n; done += 100) {
        await Promise.all(Array.from({ length: Math.min(100, n - done) }, async () => {
          await (await request(`${instances[instance].url}/_sluice/health`, { dispatcher: agentOf(client) })).body.dump()
        }))
      }
    }
    if (variant.warmRequests > 0) {
      // Through Sluice to the upstream: its connections open and the scripts load. Then the bucket
      // goes idle (a window and its margin) and the upstream forgets these arrivals.
      await Promise.all(instances.flatMap((_, instance) => Array.from({ length: variant.warmRequests }, async (_, i) => await send('warm-up', instance, i))))
      await sleep(route.limit.windowMs + route.marginMs + 200)
      await upstream.call('reset')
    }

    await admin.config('RESETSTAT')
    for (const c of instances) await c.call('resetStats')
    const began = now()
    const backlogs = options.backlogged.flatMap((c) => Array.from({ length: c.requests }, async (_, i) => await send(c.client, c.instance, i)))
    const newcomers = options.newcomers.map(async (c) => {
      const out: Sent[] = []
      for (let i = 0; i < c.requests; i++) {
        const at = began + c.afterMs + i * c.everyMs
        if (now() < at) await sleep(at - now())
        out.push(await send(c.client, c.instance, i))
      }
      return out
    })
    const sent = [...await Promise.all(backlogs), ...(await Promise.all(newcomers)).flat()]
    const loadEnded = now()
    const stats = await commandStats(admin)
    const reservations = (await Promise.all(instances.map(async (c) => await c.call<{ reservations: number }>('stats')))).reduce((n, s) => n + s.reservations, 0)
    await sleep(options.idleMs)
    const arrivals = await upstream.call<Arrival[]>('arrivals')

    // Upstream arrivals per client (by the forwarded x-sluice-client header), sorted.
    const byClient = new Map<string, number[]>()
    for (const a of arrivals) {
      const client = a.client ?? a.path.split('/')[2]
      let list = byClient.get(client)
      if (list === undefined) byClient.set(client, list = [])
      list.push(a.t)
    }
    for (const list of byClient.values()) list.sort((x, y) => x - y)
    const times = arrivals.map((a) => a.t).sort((x, y) => x - y)
    const first = times[0]
    const last = times[times.length - 1]
    const lastOf = (client: string): number => byClient.get(client)?.at(-1) ?? first
    const countIn = (client: string, from: number, to: number): number => (byClient.get(client) ?? []).filter((t) => t > from && t <= to).length

    // Contended: from the settle time until the first backlogged client's last start.
    const contendedFrom = first + options.settleMs
    const contendedTo = Math.min(...options.backlogged.map((c) => lastOf(c.client)))
    const shares = options.backlogged.map((c) => countIn(c.client, contendedFrom, contendedTo))
    // Alone: the last backlogged client once every other client was done; idle capacity must not be withheld.
    const aloneFrom = Math.max(...[...byClient.keys()].map(lastOf).filter((t) => t < last))
    const clients = [...options.backlogged, ...options.newcomers].map((c) => {
      const mine = sent.filter((s) => s.client === c.client)
      const statuses: Record<string, number> = {}
      for (const s of mine) statuses[String(s.status)] = (statuses[String(s.status)] ?? 0) + 1
      const waits = mine.map((s) => s.queueMs).filter((q) => !Number.isNaN(q))
      return {
        client: c.client,
        instance: 'AB'[c.instance],
        requests: c.requests,
        statuses,
        starts: byClient.get(c.client)?.length ?? 0,
        startsContended: countIn(c.client, contendedFrom, contendedTo),
        firstStartS: round(((byClient.get(c.client)?.[0] ?? NaN) - first) / 1000, 2),
        lastStartS: round((lastOf(c.client) - first) / 1000, 2),
        queueMsP50: round(percentile(waits, 50), 1),
        queueMsMax: round(Math.max(...waits), 1)
      }
    })

    // Each newcomer request: from leaving the load generator to reaching the upstream, against two
    // bounds, each counting the other clients with a request open then and the newcomer's own slot:
    // the README's (it is booked behind the others' look-aheads) and issue #8's (one slot per client).
    const firstArrival = new Map<string, number>()
    for (const a of arrivals) if (!firstArrival.has(a.path)) firstArrival.set(a.path, a.t)
    const newcomerClients = new Set(options.newcomers.map((c) => c.client))
    const newcomerRequests = sent.filter((s) => newcomerClients.has(s.client)).map((s) => {
      const others = new Set(sent.filter((o) => o.client !== s.client && o.sentAt <= s.sentAt && o.answeredAt > s.sentAt).map((o) => o.client))
      const delayMs = (firstArrival.get(s.path) ?? NaN) - s.sentAt
      return {
        request: s.path,
        sentS: round((s.sentAt - began) / 1000, 2),
        status: s.status,
        delayMs: round(delayMs, 1),
        delaySlots: round(delayMs / slotMs, 1),
        queueMs: round(s.queueMs, 1),
        otherActiveClients: others.size,
        readmeBoundSlots: others.size * lookaheadUnits + 1,
        issueBoundSlots: others.size + 1
      }
    })
    const delaySlots = newcomerRequests.map((r) => r.delaySlots)

    // Redis: INFO commandstats (less what the scripts ran, and this benchmark's own commands) for the
    // total, MONITOR for which script each round trip ran.
    const topLevel = sluiceCommands(stats, ['info', 'config|resetstat', 'monitor', 'script|flush'])
    const roundTrips = Object.values(topLevel).reduce((a, b) => a + b, 0)
    const admitted = arrivals.length
    const loadS = (loadEnded - began) / 1000
    const count = (from: number, to: number): Record<string, number> => {
      const out: Record<string, number> = {}
      for (const c of commands) if (c.t >= from && c.t < to) out[c.name] = (out[c.name] ?? 0) + 1
      return out
    }
    const during = count(began, loadEnded)
    const idle = count(loadEnded, loadEnded + options.idleMs)
    const admission = Object.entries(during).filter(([name]) => /^(eval )?(reserve|release)-/.test(name)).reduce((n, [, k]) => n + k, 0)
    const byCommand = [...new Set([...Object.keys(during), ...Object.keys(idle)])].sort().map((name) => ({
      command: name,
      duringLoad: during[name] ?? 0,
      perAdmitted: round((during[name] ?? 0) / admitted, 4),
      perSecondLoaded: round((during[name] ?? 0) / loadS, 2),
      perSecondIdle: round((idle[name] ?? 0) / (options.idleMs / 1000), 2)
    }))
    const densest = densestWindow(times, options.windowMs)
    return {
      variant: variant.name,
      warmRequests: variant.warmRequests,
      route: raw,
      slotMs,
      lookaheadUnits,
      upstreamArrivals: arrivals.length,
      upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
      // The upstream refused these (path, s after the first arrival); each one pauses the bucket for its Retry-After.
      limited: arrivals.filter((a) => a.outcome !== 'ok').map((a) => ({ path: a.path, atS: round((a.t - first) / 1000, 3) })),
      maxIn1s: densest.count,
      densestWindowFromS: round(((densest.from ?? first) - first) / 1000, 3),
      clients,
      contended: { fromS: round((contendedFrom - first) / 1000, 2), toS: round((contendedTo - first) / 1000, 2), shares, jain: round(jain(shares), 4) },
      utilization: {
        contended: round(utilization(times, contendedFrom, contendedTo, slotMs), 3),
        alone: round(utilization(times, aloneFrom, last, slotMs), 3),
        aloneFromS: round((aloneFrom - first) / 1000, 2),
        whole: round(utilization(times, first, last, slotMs), 3),
        spanS: round((last - first) / 1000, 2)
      },
      newcomers: {
        requests: newcomerRequests,
        delaySlotsP50: round(percentile(delaySlots, 50), 1),
        delaySlotsMax: round(Math.max(...delaySlots), 1),
        withinReadmeBound: newcomerRequests.filter((r) => r.delaySlots <= r.readmeBoundSlots).length,
        withinIssueBound: newcomerRequests.filter((r) => r.delaySlots <= r.issueBoundSlots).length,
        // Slots past the README's bound: the largest, and the median.
        overReadmeBoundSlotsP50: round(percentile(newcomerRequests.map((r) => r.delaySlots - r.readmeBoundSlots), 50), 1),
        overReadmeBoundSlotsMax: round(Math.max(...newcomerRequests.map((r) => r.delaySlots - r.readmeBoundSlots)), 1)
      },
      redis: {
        admitted,
        roundTrips,
        roundTripsPerAdmitted: round(roundTrips / admitted, 4),
        admissionPerAdmitted: round(admission / admitted, 4),
        reservationsPerAdmitted: round(reservations / admitted, 4),
        commandsTopLevel: topLevel,
        byCommand,
        idleCommandsPerS: round(Object.values(idle).reduce((a, b) => a + b, 0) / (options.idleMs / 1000), 2)
      },
      // Upstream arrival times by client, ms after the first arrival.
      arrivalsMs: Object.fromEntries([...byClient].map(([client, list]) => [client, list.map((t) => round(t - first, 1))]))
    }
  } finally {
    for (const agent of agents.values()) await agent.destroy()
    for (const c of children.reverse()) await c.stop()
  }
}

export async function fairness (options: FairnessOptions = FAIRNESS_DEFAULTS): Promise<Record<string, unknown>> {
  const redis = await startRedis()
  const monitor = await redis.client.monitor()
  const runs: Array<Record<string, any>> = []
  try {
    // Every command Redis gets but those its scripts run, with the Redis time (epoch ms). After a
    // NOSCRIPT ioredis sends the script's text: EVAL is named after the script too. The cold variant
    // runs first, so that it is cold everywhere (load generator, Redis, machine), as a first start is.
    const commands: Command[] = []
    const shas = scriptNames()
    monitor.on('monitor', (time: string, args: string[], source: string) => {
      if (source === 'lua') return
      const cmd = String(args[0]).toLowerCase()
      const name = cmd === 'evalsha'
        ? (shas.get(String(args[1])) ?? `evalsha ${String(args[1]).slice(0, 8)}`)
        : cmd === 'eval' ? `eval ${shas.get(scriptKey(String(args[1]), true)) ?? '(unknown script)'}` : cmd
      if (!['info', 'config', 'script', 'monitor'].includes(cmd)) commands.push({ t: Number(time) * 1000, name })
    })
    for (const [v, variant] of options.variants.entries()) runs.push(await run(options, variant, v, redis.url, commands, redis.client))
  } finally {
    monitor.disconnect()
    await redis.stop()
  }
  for (const r of runs) {
    const title = `Fairness, ${r.variant}: 2 instances, one Redis, limit ${options.limit}/${options.windowMs / 1000}s, slot ${r.slotMs} ms, look-ahead ${r.lookaheadUnits} units`
    printTable(`${title}: clients`, ['client', 'instance', 'requests', 'statuses', 'starts', `starts ${r.contended.fromS}–${r.contended.toS} s`, 'first start s', 'last start s', 'Sluice queue p50 ms', 'max ms'],
      r.clients.map((c: Record<string, any>) => [c.client, c.instance, c.requests, JSON.stringify(c.statuses), c.starts, c.startsContended, c.firstStartS, c.lastStartS, c.queueMsP50, c.queueMsMax]))
    printTable(`Fairness, ${r.variant}: newcomers, each request from leaving the load generator to reaching the upstream`, ['request', 'sent at s', 'status', 'delay ms', 'slots', 'Sluice queue ms', 'other clients active', 'README bound slots', 'issue #8 bound slots'],
      r.newcomers.requests.map((n: Record<string, any>) => [n.request, n.sentS, n.status, n.delayMs, n.delaySlots, n.queueMs, n.otherActiveClients, n.readmeBoundSlots, n.issueBoundSlots]))
    printTable(`Fairness, ${r.variant}: Redis commands by script (MONITOR), during the load, then ${options.idleMs / 1000} s with nothing waiting`, ['command', 'during load', 'per admitted', 'per s loaded', 'per s idle'],
      r.redis.byCommand.map((s: Record<string, any>) => [s.command, s.duringLoad, s.perAdmitted, s.perSecondLoaded, s.perSecondIdle]))
  }
  printTable('Fairness: shares, budget, round trips', ['variant', 'Jain (backlogged, contended)', 'newcomer slots p50', 'max', 'over README bound p50', 'max', 'utilization contended', 'alone', 'whole', 'max in 1 s', 'limit', '429s upstream', 'round trips / admitted', 'admission / admitted', 'idle commands / s'],
    runs.map((r) => [r.variant, r.contended.jain, r.newcomers.delaySlotsP50, r.newcomers.delaySlotsMax, r.newcomers.overReadmeBoundSlotsP50, r.newcomers.overReadmeBoundSlotsMax, r.utilization.contended, r.utilization.alone, r.utilization.whole, r.maxIn1s, options.limit, r.upstreamLimited, r.redis.roundTripsPerAdmitted, r.redis.admissionPerAdmitted, r.redis.idleCommandsPerS]))
  return { scenario: 'fairness', options, targets: { jainAtLeast: 0.95, utilizationAtLeast: 0.95, maxIn1sAtMost: options.limit, admissionPerAdmitted: 1 }, runs }
}
