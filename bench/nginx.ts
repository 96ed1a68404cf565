// Scenario 4, the reference a user would otherwise pick: nginx limit_req in front of the same upstream,
// with the overhead and precision measurements. Skipped, with a message, where nginx is not installed.
import { spawnSync } from 'node:child_process'
import autocannon from 'autocannon'
import { maxInWindow } from '../src/emulator'
import { burst } from './burst'
import { freePort, hasNginx, startChild, startNginx, type Child } from './processes'
import { percentile, printTable, round } from './table'

export async function nginxReference (): Promise<Record<string, unknown> | undefined> {
  const bin = hasNginx()
  if (bin === undefined) {
    process.stdout.write('\nnginx reference: skipped, nginx is not installed (Debian: apt-get install -y nginx-light or nginx)\n')
    return undefined
  }
  const children: Child[] = []
  try {
    // Overhead: nginx as a plain proxy and with a limit_req zone too high to delay anything. The zone key
    // is $server_name, set on every server: limit_req does not count requests whose key is empty.
    const plain = await startChild('child-upstream', { mode: 'plain' })
    children.push(plain)
    const [portPlain, portLimited] = [await freePort(), await freePort()]
    const upstreamHost = new URL(plain.url).host
    const overheadNginx = await startNginx(bin, `
  limit_req_zone $server_name zone=high:1m rate=1000000r/s;
  upstream api { server ${upstreamHost}; keepalive 128; }
  server { listen 127.0.0.1:${portPlain}; server_name bench; location / { proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:${portLimited}; server_name bench; location / { limit_req zone=high burst=100000 nodelay; proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; } }`)
    const peak: Array<Record<string, number | string>> = []
    try {
      // Interleaved rounds, medians: as in the overhead scenario.
      const targets = [['direct upstream', plain.url], ['nginx proxy_pass', `http://127.0.0.1:${portPlain}`], ['nginx limit_req (nothing delayed)', `http://127.0.0.1:${portLimited}`]] as const
      for (const [, url] of targets) await autocannon({ url: `${url}/items/1`, connections: 64, duration: 2 })
      const rounds = targets.map(() => [] as Array<{ rps: number, p50: number, p99: number, errors: number, non2xx: number }>)
      for (let r = 0; r < 3; r++) {
        for (const [i, [, url]] of targets.entries()) {
          const res = await autocannon({ url: `${url}/items/1`, connections: 64, duration: 3 })
          rounds[i].push({ rps: res.requests.average, p50: res.latency.p50, p99: res.latency.p99, errors: res.errors + res.timeouts, non2xx: res.non2xx })
        }
      }
      targets.forEach(([name], i) => {
        const rs = rounds[i]
        peak.push({
          target: name,
          requestsPerS: round(percentile(rs.map((x) => x.rps), 50), 0),
          roundsRequestsPerS: rs.map((x) => round(x.rps, 0)).join(' / '),
          ratioToNginxProxy: round(percentile(rs.map((x, k) => x.rps / rounds[1][k].rps), 50), 3),
          p50Ms: percentile(rs.map((x) => x.p50), 50),
          p99Ms: percentile(rs.map((x) => x.p99), 50),
          errors: rs.reduce((a, x) => a + x.errors, 0),
          non2xx: rs.reduce((a, x) => a + x.non2xx, 0)
        })
      })
    } finally {
      await overheadNginx.stop()
    }

    // Precision: limit_req at 50 r/s, every request queued (burst 1000, no nodelay), one nginx worker.
    const emulator = await startChild('child-upstream', { mode: 'emulator', limit: 50, windowMs: 1000 })
    children.push(emulator)
    const port = await freePort()
    const precisionNginx = await startNginx(bin, `
  limit_req_zone $server_name zone=api:1m rate=50r/s;
  upstream api { server ${new URL(emulator.url).host}; keepalive 128; }
  server { listen 127.0.0.1:${port}; server_name bench; location / { limit_req zone=api burst=1000; proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_read_timeout 120s; } }`)
    let precision: Record<string, unknown>
    try {
      const result = await burst([`http://127.0.0.1:${port}`], 1000, 'n-')
      const arrivals = await emulator.call<Array<{ t: number, outcome: string }>>('arrivals')
      const times = arrivals.map((a) => a.t).sort((a, b) => a - b)
      const drainMs = times[times.length - 1] - times[0]
      precision = {
        statuses: result.statuses,
        upstreamArrivals: arrivals.length,
        upstreamLimited: arrivals.filter((a) => a.outcome !== 'ok').length,
        maxIn1s: maxInWindow(times, 1000),
        limit: 50,
        drainMs: round(drainMs, 1),
        minimumMs: 19_000,
        utilization: round(19_000 / drainMs, 3)
      }
    } finally {
      await precisionNginx.stop()
    }
    printTable('nginx reference: peak throughput (autocannon, 64 connections, median of 3 interleaved rounds of 3 s)', ['target', 'req/s', 'rounds req/s', 'ratio to nginx proxy', 'p50 ms', 'p99 ms', 'errors', 'non-2xx'],
      peak.map((p) => [p.target, p.requestsPerS, p.roundsRequestsPerS, p.ratioToNginxProxy, p.p50Ms, p.p99Ms, p.errors, p.non2xx]))
    printTable('nginx reference: precision (limit_req rate=50r/s burst=1000, 1000 requests at once)', ['max in 1 s', 'limit', '429s upstream', 'drain s', 'utilization', 'statuses'],
      [[precision.maxIn1s as number, 50, precision.upstreamLimited as number, round(Number(precision.drainMs) / 1000, 2), precision.utilization as number, JSON.stringify(precision.statuses)]])
    const version = spawnSync(bin, ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '')
    return { scenario: 'nginx', nginx: bin, nginxVersion: version, peak, precision }
  } finally {
    for (const c of children.reverse()) await c.stop()
  }
}
