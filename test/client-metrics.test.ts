// Fair share made visible: per-client counts and waits in /_sluice/metrics, under hashed ids only.
import t from 'tap'
import { request } from 'undici'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

t.test('per-client requests and waits in the metrics', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'api', upstream: up.url, limit: '4/s', algorithm: 'sliding-window' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const send = async (client: string, prefer?: string): Promise<number> => {
    const res = await request(`${s.url}/x`, { headers: { 'x-sluice-client': client, ...(prefer === undefined ? {} : { prefer }) } })
    await res.body.text()
    return res.statusCode
  }
  t.same([await send('job-alpha'), await send('job-alpha'), await send('job-alpha'), await send('job-beta')], [200, 200, 200, 200])
  t.equal(await send('job-beta', 'wait=0'), 429, 'the budget of 4 is spent: refused at once')
  const metrics = await (await request(`${s.url}/_sluice/metrics`)).body.text()
  t.notMatch(metrics, /job-alpha|job-beta/, 'client identities appear only hashed')
  const lines = metrics.split('\n').filter((l) => l.startsWith('sluice_client_requests_total{'))
  const byClient = new Map<string, Record<string, number>>()
  for (const line of lines) {
    const m = /client="([^"]+)",outcome="(\w+)"\} (\d+)/.exec(line)
    if (m === null) continue
    const entry = byClient.get(m[1]) ?? {}
    entry[m[2]] = Number(m[3])
    byClient.set(m[1], entry)
  }
  t.same([...byClient.values()].sort((a, b) => (b.forwarded ?? 0) - (a.forwarded ?? 0)), [{ forwarded: 3 }, { forwarded: 1, rejected: 1 }], 'counts per client and outcome')
  t.match(metrics, /sluice_client_wait_seconds_total\{route="api",client="[A-Za-z0-9_-]{22}"\} [\d.e-]+/, 'waits per client')
})

t.test('per-client usage in /_sluice/status', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'api', upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  for (const client of ['job-a', 'job-a', 'job-b']) await (await request(`${s.url}/x`, { headers: { 'x-sluice-client': client } })).body.text()
  const status = await (await request(`${s.url}/_sluice/status`)).body.json() as { clients: Array<{ route: string, client: string, admitted: number, meanWaitMs: number }> }
  t.same(status.clients.map((c) => c.admitted).sort(), [1, 2], 'one row per client with its admitted count')
  t.ok(status.clients.every((c) => c.route === 'api' && /^[A-Za-z0-9_-]{22}$/.test(c.client) && c.meanWaitMs >= 0), 'hashed ids, with mean waits')
  t.notMatch(JSON.stringify(status), /job-a|job-b/)
})
