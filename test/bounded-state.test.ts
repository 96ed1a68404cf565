// Bounded state: any caller can name a new client (X-Sluice-Client) or bring a new credential (a
// bucket of a `key: header:authorization` route). A flood of 20,000 of each leaves the metrics and
// the status bounded (the most active clients by name, the rest as `other`), and once idle every
// per-bucket and per-client map is released.
// RSS is not asserted; on the 2-core machine of bench/REPORT.md this flood took one Sluice process
// from about 85 MiB to about 400 MiB before these bounds, and the figures this test prints now.
import t from 'tap'
import { Pool } from 'undici'
import { MAX_CLIENT_SERIES, OTHER_CLIENT } from '../src/observe/client-series'
import { MemoryStore } from '../src/store/memory-store'
import { parsePrometheus } from './helpers/prometheus'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

const FLOOD = 20_000
const IDLE_MS = 1500
const sleep = async (ms: number): Promise<void> => { await new Promise((resolve) => setTimeout(resolve, ms)) }
const mib = (): number => Math.round(process.memoryUsage.rss() / 2 ** 20)

t.test('20,000 distinct clients and credentials: bounded metrics and status, maps released once idle', async (t) => {
  const up = await startUpstream((_req, res) => { res.end('{}') })
  const store = new MemoryStore({ sweepEveryMs: 200 })
  const s = await startSluice([
    { name: 'keyed', upstream: up.url, limit: '10/s', key: 'header:authorization', maxWait: '5s' }
  ], {}, { store, idleMs: IDLE_MS })
  const pool = new Pool(s.url, { connections: 32 })
  t.teardown(async () => { await pool.close(); await s.close(); await up.close() })
  const rssBefore = mib()

  let next = 0
  const statuses = new Map<number, number>()
  await Promise.all(Array.from({ length: 64 }, async () => {
    for (let i = next++; i < FLOOD; i = next++) {
      const res = await pool.request({ method: 'GET', path: `/x/${i}`, headers: { authorization: `Bearer token-${i}`, 'x-sluice-client': `job-${i}` } })
      await res.body.text()
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    }
  }))
  t.same(Object.fromEntries(statuses), { 200: FLOOD }, 'every request forwarded (one per credential)')
  const limiter = s.limiters.get('keyed')
  const scheduler = s.schedulers.get('keyed')
  t.comment(`after the flood: RSS ${rssBefore} → ${mib()} MiB (test process, Sluice in it); limiter ${JSON.stringify(limiter?.stateSizes())}, scheduler ${JSON.stringify(scheduler?.stateSizes())}, observer ${JSON.stringify(s.observer.stateSizes())}, store ${store.bucketCount} buckets`)

  const text = await (await pool.request({ method: 'GET', path: '/_sluice/metrics' })).body.text()
  t.ok(text.length < 256 * 1024, `/_sluice/metrics is ${Math.round(text.length / 1024)} KiB, well under 1 MB`)
  const metrics = parsePrometheus(text)
  const labels = new Set(metrics.find('sluice_client_requests_total').map((x) => x.labels.client))
  t.ok(labels.size <= MAX_CLIENT_SERIES + 1, `${labels.size} client label values, at most ${MAX_CLIENT_SERIES} + other`)
  t.ok(labels.has(OTHER_CLIENT), 'the clients beyond the bound are counted as other')
  // Clients idle for IDLE_MS lose their series (and their places) during the flood already, so the
  // sum is at most FLOOD, and how many were labelled depends on how long the flood took.
  const other = metrics.value('sluice_client_requests_total', { route: 'keyed', client: OTHER_CLIENT, outcome: 'forwarded' })
  const all = metrics.value('sluice_client_requests_total', { route: 'keyed', outcome: 'forwarded' })
  t.ok(other >= FLOOD / 2 && all <= FLOOD, `each request counted at most once, ${other} of them under other`)
  t.ok(new Set(metrics.find('sluice_client_wait_seconds_total').map((x) => x.labels.client)).size <= MAX_CLIENT_SERIES + 1, 'waits per client bounded alike')
  t.ok(new Set(metrics.find('sluice_queue_depth').map((x) => x.labels.bucket)).size <= 500, 'bucket gauges bounded (MAX_BUCKETS)')

  const status = await (await pool.request({ method: 'GET', path: '/_sluice/status' })).body.json() as { clients: Array<{ client: string, admitted: number }>, buckets: unknown[] }
  t.ok(status.clients.length <= MAX_CLIENT_SERIES + 1, `status lists ${status.clients.length} clients, at most ${MAX_CLIENT_SERIES} + other`)
  t.ok((status.clients.find((c) => c.client === OTHER_CLIENT)?.admitted ?? 0) > 0, 'the rest in one row, other')

  // Idle: a window (1 s) and the idle time pass; the sweeps release what the flood left.
  const released = (): boolean => {
    const l = limiter?.stateSizes() ?? {}
    const o = s.observer.stateSizes()
    return Object.values(l).every((n) => n === 0) && scheduler?.stateSizes().clientStats === 0 && scheduler.stateSizes().buckets === 0 &&
      o.buckets === 0 && o.clientSeries === 0 && o.otherClients === 0 && store.bucketCount === 0
  }
  const began = Date.now()
  while (!released() && Date.now() - began < 10_000) await sleep(100)
  t.ok(released(), `released after ${Date.now() - began} ms idle: limiter ${JSON.stringify(limiter?.stateSizes())}, scheduler ${JSON.stringify(scheduler?.stateSizes())}, observer ${JSON.stringify(s.observer.stateSizes())}, store ${store.bucketCount} buckets`)
  const after = parsePrometheus(await (await pool.request({ method: 'GET', path: '/_sluice/metrics' })).body.text())
  t.same(after.find('sluice_client_requests_total').map((x) => x.labels.client).filter((c) => c !== OTHER_CLIENT), [], 'idle clients lose their series')
  t.comment(`idle: RSS ${mib()} MiB`)
})
