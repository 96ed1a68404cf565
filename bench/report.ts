// `npm run bench:report`: renders bench/results/*.json into bench/REPORT.md, with an SVG chart of the
// precision run's arrivals per second at the upstream against the limit (bench/precision-arrivals.svg).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { precisionRunsSection } from './report-precision-runs'
import { RESULTS_DIR, showSpread } from './table'

const BENCH_DIR = join(RESULTS_DIR, '..')
const reportPath = join(BENCH_DIR, 'REPORT.md')
/** Everything from this line on in REPORT.md is written by hand (dated runs, what they say) and kept. */
export const NARRATIVE_MARKER = '<!-- Written by hand from here on; npm run bench:report keeps it. -->'

function keptNarrative (path: string): string {
  if (!existsSync(path)) return ''
  const text = readFileSync(path, 'utf8')
  const at = text.indexOf(NARRATIVE_MARKER)
  return at === -1 ? '' : '\n' + text.slice(at)
}

type Json = Record<string, any>

function load (name: string): Json | undefined {
  const path = join(RESULTS_DIR, `${name}.json`)
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) as Json : undefined
}

function table (header: string[], rows: Array<Array<string | number>>): string {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n')
}

function machineLine (m: Json): string {
  return `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}; commit ${m.commit}; load average ${m.loadAverage1m} before, ${m.loadAverage1mAfter} after; ${m.date}`
}

function verdict (ok: boolean): string {
  return ok ? 'met' : '**missed**'
}

/** Trailing 1 s arrival counts every 50 ms, and per-second counts, one panel per precision variant. */
function arrivalsSvg (runs: Json[], limit: number, windowMs: number): string {
  const W = 760
  const panelH = 170
  const pad = { l: 44, r: 16, t: 28, b: 26 }
  const H = runs.length * panelH
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`, `<rect width="${W}" height="${H}" fill="white"/>`]
  const spanMs = Math.max(...runs.map((r) => r.arrivalsMs[r.arrivalsMs.length - 1] as number)) + windowMs
  const yMax = Math.max(limit * 1.5, ...runs.map((r) => r.maxIn1s as number + 5))
  runs.forEach((run, i) => {
    const top = i * panelH
    const x = (ms: number): number => pad.l + (ms / spanMs) * (W - pad.l - pad.r)
    const y = (n: number): number => top + panelH - pad.b - (n / yMax) * (panelH - pad.t - pad.b)
    const times = run.arrivalsMs as number[]
    parts.push(`<text x="${pad.l}" y="${top + 16}" font-weight="bold">${run.variant}: max ${run.maxIn1s} in any ${windowMs / 1000} s (limit ${limit}), utilization ${run.utilization}</text>`)
    // Per-second bars: arrivals in [k s, k+1 s) after the first.
    const seconds = Math.ceil(spanMs / 1000)
    const perSecond = new Array<number>(seconds).fill(0)
    for (const t of times) perSecond[Math.floor(t / 1000)]++
    perSecond.forEach((n, k) => {
      if (n > 0) parts.push(`<rect x="${x(k * 1000).toFixed(1)}" y="${y(n).toFixed(1)}" width="${(x(1000) - x(0) - 1).toFixed(1)}" height="${(y(0) - y(n)).toFixed(1)}" fill="#cfd8e3"/>`)
    })
    // Trailing-window count, sampled every 50 ms: what the upstream's sliding window sees.
    const points: string[] = []
    let lo = 0
    let hi = 0
    for (let t = 0; t <= spanMs; t += 50) {
      while (hi < times.length && times[hi] <= t) hi++
      while (lo < hi && times[lo] <= t - windowMs) lo++
      points.push(`${x(t).toFixed(1)},${y(hi - lo).toFixed(1)}`)
    }
    parts.push(`<polyline points="${points.join(' ')}" fill="none" stroke="#1f5fa8" stroke-width="1.5"/>`)
    parts.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(limit).toFixed(1)}" y2="${y(limit).toFixed(1)}" stroke="#c0392b" stroke-dasharray="5,4"/>`)
    parts.push(`<text x="${W - pad.r - 4}" y="${(y(limit) - 4).toFixed(1)}" text-anchor="end" fill="#c0392b">limit ${limit}</text>`)
    parts.push(`<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(0)}" y2="${y(0)}" stroke="#555"/><line x1="${pad.l}" x2="${pad.l}" y1="${y(0)}" y2="${y(yMax)}" stroke="#555"/>`)
    for (let n = 0; n <= yMax; n += 25) parts.push(`<text x="${pad.l - 6}" y="${(y(n) + 4).toFixed(1)}" text-anchor="end">${n}</text>`)
    for (let s = 0; s <= spanMs / 1000; s += 5) parts.push(`<text x="${x(s * 1000).toFixed(1)}" y="${y(0) + 14}" text-anchor="middle">${s} s</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n')
}

/** Open-loop latencies of the proxies at one rate, the bare proxy first. */
function latencyTable (rows: Json[]): string {
  return table(['target', 'sent', 'errors', 'p50 ms', 'p50 added vs bare ms', 'p99 ms', 'p99 per round', 'p99 added vs bare ms'],
    rows.map((h: Json) => [h.target, h.sent, h.errors, h.p50Ms, Math.round((h.p50Ms - rows[0].p50Ms) * 1000) / 1000, h.p99Ms, h.roundsP99Ms.join(' / '), h.addedP99Ms]))
}

function main (): void {
  const out: string[] = ['# Sluice benchmarks', '', 'Generated by `npm run bench:report` from `bench/results/*.json` (written by `npm run bench`). Every party runs in its own process on loopback: load generator, upstream, proxies, Redis.', '']
  const overhead = load('overhead')
  if (overhead !== undefined) {
    const t = overhead.targets
    // A sub-millisecond difference cannot be judged when the baseline's own p99 is tens of ms: the
    // machine, not the proxy, sets the tail then.
    const bareP99 = Number(overhead.halfLoad[0].p99Ms)
    const latencyVerdict = (added: number): string => bareP99 > 10 * t.addedP99TargetMs
      ? `not measurable here (the bare proxy's own p99 was ${bareP99} ms)`
      : verdict(added < t.addedP99TargetMs)
    out.push('## 1. Overhead', '', `Machine: ${machineLine(overhead.machine)}.`, '',
      `Route budget ${overhead.route.limit} with burst ${overhead.route.burst}: nothing waits (the "waited" column counts reservations that had to). autocannon, ${overhead.options.connections} connections; the targets are measured in ${overhead.options.rounds} interleaved rounds of ${overhead.options.roundS} s after ${overhead.options.warmupPasses ?? 1} interleaved warm-up pass(es) of ${overhead.options.warmupPasses === undefined ? 2 : overhead.options.roundS} s each, and each figure is the median over the rounds (ratios are taken within a round, then the median). Latencies in whole ms (autocannon's resolution).${t.redisOverMemoryUs === undefined ? '' : ` Issue 18's CPU goals: memory store ≥ ${t.memoryCpuRatioTarget} and Redis store ≥ ${t.redisCpuRatioTarget} of the bare proxy (bare CPU ÷ this CPU): ${t.memoryCpuRatio} and ${t.redisCpuRatio}; the Redis path within ${t.redisOverMemoryUsTarget} µs of the memory path: ${t.redisOverMemoryUs} µs.`}`, '',
      table(['target', 'req/s', 'per round', 'ratio to bare proxy', 'CPU µs per request', 'per round', 'bare CPU ÷ this CPU', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'waited'],
        overhead.peak.map((p: Json) => [p.target, p.requestsPerS, p.roundsRequestsPerS.join(' / '), p.ratioToBare, p.cpuUsPerRequest ?? '–', (p.roundsCpuUsPerRequest ?? []).join(' / '), p.cpuRatioToBare ?? '–', p.p50Ms, p.p99Ms, p.errors, p.non2xx, p.waited])), '',
      'CPU µs per request: user + system CPU time of the process that serves the target (the upstream for "direct", the proxy otherwise) over the requests it served. Other work on the machine slows a process down but hardly changes the CPU it spends per request, so "bare CPU ÷ this CPU" estimates the throughput ratio on idle cores.', '',
      ...(overhead.peak.length > 4 ? ['"bare proxy + the fastify features Sluice uses" is a reference, not a goal\'s row: the bare proxy with a pino logger and a request id per request, one callback hook each for onRequest, onSend and onResponse (with a log line of Sluice\'s fields), an async preHandler and both header rewrites, doing none of Sluice\'s own work (`bench/child-bare-proxy.ts`). The gap between it and the bare proxy is what fastify\'s own machinery costs for the features Sluice uses; the gap between it and Sluice is Sluice\'s own work (limiter, fair queues, metrics, error handling).', ''] : []),
      `Latency at half the bare proxy's peak (${overhead.halfLoad[0].rate} req/s, open loop, ${overhead.options.rounds} interleaved rounds of ${overhead.options.halfLoadRoundS} s, µs timer):`, '',
      latencyTable(overhead.halfLoad), '',
      ...(overhead.halfOwnLoad === undefined
        ? []
        : [
        `The same at half of Sluice's own peak (${overhead.halfOwnLoad[0].rate} req/s, the slower store's): at the goal's rate above Sluice runs near its own peak, and its added p99 is then mostly queueing; here it is what a request costs on a moderately loaded Sluice.`, '',
        latencyTable(overhead.halfOwnLoad), '']),
      table(['target', 'goal', 'measured', 'verdict'], [
        ['memory store throughput', `≥ ${t.memoryRatioTarget} of bare`, t.memoryRatio, verdict(t.memoryRatio >= t.memoryRatioTarget)],
        ['Redis store throughput', `≥ ${t.redisRatioTarget} of bare`, t.redisRatio, verdict(t.redisRatio >= t.redisRatioTarget)],
        ...(t.memoryCpuRatio === undefined
          ? []
          : [
              ['memory store, by CPU per request', `≥ ${t.memoryRatioTarget} of bare`, t.memoryCpuRatio, verdict(t.memoryCpuRatio >= t.memoryRatioTarget)],
              ['Redis store, by CPU per request (Sluice process only)', `≥ ${t.redisRatioTarget} of bare`, t.redisCpuRatio, verdict(t.redisCpuRatio >= t.redisRatioTarget)]]),
        ['p99 added at half load, memory', `< ${t.addedP99TargetMs} ms`, t.memoryAddedP99Ms, latencyVerdict(t.memoryAddedP99Ms)],
        ['p99 added at half load, Redis', `< ${t.addedP99TargetMs} ms`, t.redisAddedP99Ms, latencyVerdict(t.redisAddedP99Ms)],
        ...(t.memoryAddedP99MsAtOwnHalf === undefined
          ? []
          : [
              ['p99 added at half of Sluice\'s own peak, memory (for reference)', `< ${t.addedP99TargetMs} ms`, t.memoryAddedP99MsAtOwnHalf, verdict(t.memoryAddedP99MsAtOwnHalf < t.addedP99TargetMs)],
              ['p99 added at half of Sluice\'s own peak, Redis (for reference)', `< ${t.addedP99TargetMs} ms`, t.redisAddedP99MsAtOwnHalf, verdict(t.redisAddedP99MsAtOwnHalf < t.addedP99TargetMs)]])
      ]), '')
  }
  const precision = load('precision')
  if (precision !== undefined) {
    const o = precision.options
    writeFileSync(join(BENCH_DIR, 'precision-arrivals.svg'), arrivalsSvg(precision.runs, o.limit, o.windowMs))
    out.push('## 2. Precision', '', `Machine: ${machineLine(precision.machine)}.`, '',
      `${o.instances} Sluice instances sharing one Redis, limit ${o.limit} per ${o.windowMs / 1000} s, ${o.requests} requests sent at once (round-robin over the instances). Measured from the upstream's arrival log (an emulator enforcing the same limit exactly, answering 429 above it). Minimum drain = (⌈${o.requests}/${o.limit}⌉ − 1) × ${o.windowMs / 1000} s, the shortest span any client could achieve; utilization = minimum / actual span from first to last arrival. "Late" = a request's arrival at the upstream − the start Sluice reserved for it (store clock; joined by request id).`, '',
      table(['variant', 'margin', 'max in any 1 s', 'limit', 'upstream 429s', 'booked again', 'drain s', 'minimum s', 'utilization', 'sustained rate / limit', '/ margin ceiling', 'late p50 ms', 'late p99 ms', 'late max ms', 'client statuses'],
        precision.runs.map((r: Json) => [r.variant, r.margin, r.maxIn1s, r.limit, r.upstreamLimited, r.rebooked ?? '–', (r.drainMs / 1000).toFixed(2), r.minimumMs / 1000, r.utilization, r.sustained?.ofLimit ?? '–', r.sustained?.ofMarginCeiling ?? '–', r.lateness.p50Ms, r.lateness.p99Ms, r.lateness.maxMs, JSON.stringify(r.statuses).replace(/"/g, '')])), '',
      'Sustained rate = (arrivals − 1) / drain, per window; a route books at most `limit` starts per window plus margin, so limit × window / (window + margin) is its ceiling ("margin ceiling": 0.909 of the limit for 100 ms on 1 s). The utilization goal counts the first window\'s 50 as free: with an exact sliding window every later window repeats the first one\'s spread (here the time the 1,000 connections take to reach the instances), and a late start in it that could not be given back (not the instance\'s newest) leaves its slot unused, pushing the last requests into one more window. "Booked again": reservations beyond one per request (a start later than half the margin gives its slot up and books again).', '',
      `Goals: never above the limit (${precision.runs.map((r: Json) => `${r.variant}: ${verdict(r.maxIn1s <= o.limit)}`).join('; ')}); utilization ≥ 0.98 (${precision.runs.map((r: Json) => `${r.variant}: ${verdict(r.utilization >= 0.98)}`).join('; ')}).`, '',
      '![Arrivals at the upstream: trailing 1 s count (line) and per-second count (bars) against the limit](precision-arrivals.svg)', '')
  }
  out.push(...precisionRunsSection(table, machineLine))
  const scale = load('scale')
  if (scale !== undefined) {
    const runs: Json[] = scale.runs ?? [{ ...scale, limit: scale.options.limit }]
    out.push('## 3. Scale', '', `Machine: ${machineLine(scale.machine)}.`, '',
      `${scale.options.requests} requests into one Sluice with Redis, once per limit; the upstream answers the first request 429 with Retry-After ${scale.options.holdS} s, so the bucket is paused; the burst (connections opened over ${scale.options.spreadMs} ms) is sent once the pause is in Redis, and waits ("pause left at burst": how long it still held then). Measured inside the Sluice process: RSS sampled every 20 ms, event-loop delay with perf_hooks.monitorEventLoopDelay (10 ms resolution). Redis round trips = INFO commandstats less the commands run inside Sluice's Lua scripts; admission round trips = reservations and releases (counted in the process); the rest are heartbeats, client presence and the pause, which come with time, not with requests. A start whose timer fired later than half the margin (a saturated event loop) is booked again: "late starts booked again".`, '',
      table(['limit', 'client statuses', 'pause left at burst ms', 'peak open requests', 'drain s', 'RSS idle MiB', 'RSS peak MiB', 'event-loop delay p99 ms', 'max ms', 'Redis round trips / admitted', 'admission round trips / admitted', 'late starts booked again'],
        runs.map((r: Json) => [r.limit, JSON.stringify(r.statuses).replace(/"/g, ''), r.pauseLeftAtBurstMs ?? '–', r.peakOpen, r.drainS, r.idleRssMiB, r.peakRssMiB, r.eventLoopDelayMs.p99, r.eventLoopDelayMs.max, r.roundTripsPerAdmitted, r.admissionRoundTripsPerAdmitted ?? '–', r.rebooked ?? '–'])), '',
      ...runs.map((r: Json) => `At ${r.limit}: round trips ${JSON.stringify(r.redisCommandsTopLevel)}. Goal: exactly 1 per admitted request — ${verdict(r.roundTripsPerAdmitted <= 1.0005)} (${r.roundTripsPerAdmitted}; admission alone ${r.admissionRoundTripsPerAdmitted ?? '–'}).`), '')
  }
  const nginx = load('nginx')
  out.push('## 4. nginx limit_req reference', '')
  if (nginx === undefined) {
    out.push('Not run: nginx was not installed on the machine (`npm run bench` skips it with a message).', '')
  } else {
    out.push(`Machine: ${machineLine(nginx.machine)}. ${nginx.nginxVersion ?? `nginx (${String(nginx.nginx)})`}, one worker process.`, '',
      table(['target', 'req/s', 'per round', 'ratio to nginx proxy_pass', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'], nginx.peak.map((p: Json) => [p.target, p.requestsPerS, p.roundsRequestsPerS, p.ratioToNginxProxy, p.p50Ms, p.p99Ms, p.errors, p.non2xx])), '',
      table(['limit_req rate=50r/s burst=1000', 'max in any 1 s', 'limit', 'upstream 429s', 'drain s', 'utilization', 'client statuses'],
        [['1000 requests at once', nginx.precision.maxIn1s, nginx.precision.limit, nginx.precision.upstreamLimited, (nginx.precision.drainMs / 1000).toFixed(2), nginx.precision.utilization, JSON.stringify(nginx.precision.statuses).replace(/"/g, '')]]), '')
  }
  const fairness = load('fairness')
  if (fairness !== undefined) {
    const o = fairness.options
    const t = fairness.targets
    const runs = fairness.runs as Json[]
    // How far the load generator's view of a newcomer's delay is from Sluice's own (Server-Timing).
    const apart = Math.max(...runs.flatMap((r) => r.newcomers.requests.map((n: Json) => Math.abs(n.delayMs - n.queueMs))))
    const who = (c: Json): string => `${c.client} (${c.requests} through ${c.instance === 0 ? 'A' : 'B'})`
    out.push('## 5. Fair share', '', `Machine: ${machineLine(fairness.machine)}.`, '',
      `2 Sluice instances (A, B) sharing one Redis, one route of ${o.limit} per ${o.windowMs / 1000} s (token bucket, default margin), upstream an emulator enforcing the same limit exactly. Backlogged clients, all their requests at once: ${o.backlogged.map(who).join(', ')}. Newcomers, one request at a time: ${o.newcomers.map((c: Json) => `${who(c)} from ${c.afterMs / 1000} s, every ${c.everyMs / 1000} s`).join('; ')}. Clients are told apart by \`X-Sluice-Client\`, at the upstream by the same header as forwarded. Variants: *cold* — fresh instances whose first requests open their connections to the upstream, Redis's script cache empty, run first; *warm* — each instance first forwarded ${runs.find((r) => r.warmRequests > 0)?.warmRequests ?? 0} requests, then the bucket went idle.`, '',
      `A slot is (window + margin) / limit = ${runs[0].slotMs} ms; a client's look-ahead is ${runs[0].lookaheadUnits} units. Shares count upstream arrivals from ${o.settleMs / 1000} s after the first until the first backlogged client's last; Jain's index is taken over those shares. Newcomer delay: from the load generator sending the request to its arrival at the upstream (Sluice's own \`Server-Timing: queue\` was within ${apart.toFixed(1)} ms of it); bounds, each with the newcomer's own slot: the README's, the look-aheads of the other clients with a request open then (it is booked behind them), and issue #8's, one slot per such client. Utilization: arrivals ÷ slots in the span, while contended, once the last backlogged client was alone (idle capacity not withheld), and over the whole run. Redis: round trips = INFO commandstats less the commands run inside scripts; admission = reserve and release scripts (MONITOR), per request that reached the upstream; idle = commands per second in the ${o.idleMs / 1000} s after the load, with nothing waiting.`, '',
      table(['variant', 'Jain (shares)', 'newcomer delay, slots p50 / max', 'within the README bound', 'past it, slots p50 / max', 'within issue #8 bound', 'utilization contended', 'alone', 'whole', 'max in any 1 s', 'limit', 'upstream 429s', 'Redis round trips / admitted', 'admission / admitted', 'idle commands / s'],
        runs.map((r) => [r.variant, `${r.contended.jain} (${r.contended.shares.join(' vs ')})`, `${r.newcomers.delaySlotsP50} / ${r.newcomers.delaySlotsMax}`, `${r.newcomers.withinReadmeBound} of ${r.newcomers.requests.length}`, `${r.newcomers.overReadmeBoundSlotsP50} / ${r.newcomers.overReadmeBoundSlotsMax}`, `${r.newcomers.withinIssueBound} of ${r.newcomers.requests.length}`, r.utilization.contended, r.utilization.alone, r.utilization.whole, r.maxIn1s, o.limit, r.upstreamLimited, r.redis.roundTripsPerAdmitted, r.redis.admissionPerAdmitted, r.redis.idleCommandsPerS])), '')
    for (const r of runs) {
      out.push(`**${r.variant}.** ${r.upstreamLimited > 0 ? `The upstream refused ${r.limited.map((l: Json) => `${l.path} at ${l.atS} s`).join(', ')} (the densest 1 s began at ${r.densestWindowFromS} s); its Retry-After paused the bucket for every client. ` : ''}Newcomer delays in slots (README bound): ${r.newcomers.requests.map((n: Json) => `${n.request.split('/').slice(2).join('/')} ${n.delaySlots} (${n.readmeBoundSlots})`).join(', ')}.`, '',
        table(['client', 'instance', 'requests', 'statuses', 'starts', `starts ${r.contended.fromS}–${r.contended.toS} s`, 'first start s', 'last start s', 'Sluice queue p50 ms', 'max ms'],
          r.clients.map((c: Json) => [c.client, c.instance, c.requests, JSON.stringify(c.statuses).replace(/"/g, ''), c.starts, c.startsContended, c.firstStartS, c.lastStartS, c.queueMsP50, c.queueMsMax])), '',
        `Redis commands: ${r.redis.byCommand.map((c: Json) => `${c.command} ${c.duringLoad} (${c.perAdmitted} per admitted; idle ${c.perSecondIdle}/s)`).join('; ')}.`, '')
    }
    out.push(`Goals: Jain ≥ ${t.jainAtLeast} (${runs.map((r) => `${r.variant}: ${verdict(r.contended.jain >= t.jainAtLeast)}`).join('; ')}); every newcomer request within the README bound (${runs.map((r) => `${r.variant}: ${verdict(r.newcomers.withinReadmeBound === r.newcomers.requests.length)}`).join('; ')}), and issue #8's (${runs.map((r) => `${r.variant}: ${verdict(r.newcomers.withinIssueBound === r.newcomers.requests.length)}`).join('; ')}); utilization ≥ ${t.utilizationAtLeast} while contended and alone (${runs.map((r) => `${r.variant}: ${verdict(r.utilization.contended >= t.utilizationAtLeast && r.utilization.alone >= t.utilizationAtLeast)}`).join('; ')}); never above the limit (${runs.map((r) => `${r.variant}: ${verdict(r.maxIn1s <= t.maxIn1sAtMost)}`).join('; ')}); one admission round trip per admitted request (${runs.map((r) => `${r.variant}: ${verdict(r.redis.admissionPerAdmitted <= 1.0005)}`).join('; ')}).`, '')
  }
  const peers = load('peers')
  if (peers !== undefined) {
    const o = peers.options
    out.push('## 6. Peers on one strict upstream', '', `Machine: ${machineLine(peers.machine)}.`, '',
      `The same upstream for every peer: the emulator, ${o.rate} in any 1 s, 429 above. ${o.requests} requests at once, round-robin over the peer's instances; ${o.rounds} rounds, interleaved (${o.peers.join(', ')}, then again), each on new instances, a new upstream and new keys in a Redis of the peer's own. Median (least–most) over the rounds. Utilization = minimum drain ((⌈${o.requests}/${o.rate}⌉ − 1) s) ÷ first to last arrival at the upstream, refused arrivals included. Redis round trips: INFO commandstats less the commands run inside the peer's Lua scripts, a MULTI … EXEC block once. CPU: user + system of the peer's processes (process.cpuUsage(); nginx and redis-server from /proc/<pid>/schedstat), fresh processes, per 1,000 requests sent.`, '',
      table(['peer', 'instances', '2xx at the client', 'other statuses', 'upstream 429s', `most in any 1 s (limit ${o.rate})`, 'utilization', 'Redis round trips / 1k requests', 'proxy CPU ms / 1k requests', 'Redis CPU ms / 1k requests'],
        peers.summary.map((s: Json) => [s.peer, s.instances, showSpread(s.succeeded), showSpread(s.otherStatuses), showSpread(s.upstreamLimited), showSpread(s.maxInWindow), showSpread(s.utilization), showSpread(s.redisRoundTripsPer1k), showSpread(s.proxyCpuMsPer1k), showSpread(s.redisCpuMsPer1k)])), '',
      ...Object.entries(peers.configurations as Record<string, string>).map(([peer, how]) => `- **${peer}**: ${how}.`), '',
      table(['round', 'peer', 'client statuses', 'upstream 429s', 'most in any 1 s', 'drain s', 'utilization', 'Redis commands'],
        peers.rounds.map((r: Json) => [r.round, r.peer, JSON.stringify(r.statuses).replace(/"/g, ''), r.upstreamLimited, r.maxInWindow, (r.drainMs / 1000).toFixed(2), r.utilization, r.redisCommands === undefined ? '–' : JSON.stringify(r.redisCommands).replace(/"/g, '') + (r.sluiceStoreCalls === undefined ? '' : `; store calls ${JSON.stringify(r.sluiceStoreCalls).replace(/"/g, '')}`)])), '')
  }
  writeFileSync(reportPath, out.join('\n') + keptNarrative(reportPath))
  process.stdout.write(`wrote ${reportPath}\n`)
}

main()
