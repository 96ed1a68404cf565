// Priorities: X-Sluice-Priority high goes ahead of a client's own queued normal requests, low only
// uses what others leave (also when the others are on another instance), and neither ever lets the
// upstream see more than the budget.
import { setMaxListeners } from 'node:events'
import t, { type Test } from 'tap'
import { Agent, request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { parseRoute } from '../src/config/route'
import { clientId } from '../src/limiter/client-identity'
import { startRedis, type TestRedis } from './helpers/redis'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess, type RemoteUpstream } from './helpers/upstream-process'

const LIMIT = 50
const now = (): number => performance.timeOrigin + performance.now()
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const agents = new Map<string, Agent>()

interface Sent { status: number, queueMs: number, body: string }

async function send (base: string, client: string, i: number, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Sent> {
  let dispatcher = agents.get(client)
  if (dispatcher === undefined) agents.set(client, dispatcher = new Agent({ connections: null, keepAliveTimeout: 60_000 }))
  try {
    const res = await request(`${base}/c/${client}/${i}`, { headers: { 'x-sluice-client': client, ...headers }, signal, dispatcher })
    const body = await res.body.text()
    const timing = /queue;dur=([\d.]+)/.exec(String(res.headers['server-timing'] ?? ''))
    return { status: res.statusCode, queueMs: timing === null ? NaN : Number(timing[1]), body }
  } catch (err) {
    if (signal?.aborted === true) return { status: 0, queueMs: NaN, body: '' }
    t.comment(`${client} ${i}: ${(err as Error).message}`)
    return { status: -1, queueMs: NaN, body: '' }
  }
}

/** Open `n` keep-alive connections of `client` at once, 100 at a time (see fairness.test.ts). */
async function warm (base: string, client: string, n: number): Promise<void> {
  let dispatcher = agents.get(client)
  if (dispatcher === undefined) agents.set(client, dispatcher = new Agent({ connections: null, keepAliveTimeout: 60_000 }))
  const d = dispatcher
  const open: Array<Promise<void>> = []
  for (let done = 0; done < n; done += 100) {
    // Keep each batch's sockets busy until all are open, so the next batch opens new ones.
    open.push(...Array.from({ length: Math.min(100, n - done) }, async () => { await (await request(`${base}/_sluice/health`, { dispatcher: d })).body.text() }))
    await Promise.all(open.slice(-100))
  }
}

function hitsOf (hits: Array<{ t: number, url: string }>, client: string): number[] {
  return hits.filter((h) => h.url.split('/')[2] === client).map((h) => h.t).sort((a, b) => a - b)
}

async function instances (t: Test, redis: TestRedis, n: number): Promise<{ up: RemoteUpstream, sluices: TestSluice[] }> {
  const up = await startUpstreamProcess()
  const keyPrefix = redis.prefix()
  const sluices: TestSluice[] = []
  for (let i = 0; i < n; i++) sluices.push(await startSluice([{ name: 'prio', upstream: up.url, limit: `${LIMIT}/s`, maxWait: '60s', maxQueue: 5000 }], { redis: redis.url, keyPrefix }))
  t.teardown(async () => {
    for (const agent of agents.values()) await agent.destroy()
    agents.clear()
    for (const s of sluices) await s.close()
    await up.close()
  })
  return { up, sluices }
}

t.test('priorities', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())

  t.test('high passes 1000 queued normal requests; low on another instance waits for what they leave', async (t) => {
    const { up, sluices: [a, b] } = await instances(t, redis, 2)
    const fair = a.schedulers.get('prio')
    if (fair === undefined) throw new Error('no scheduler')
    await warm(a.url, 'bulk', 1001)
    const began = now()
    const leave = new AbortController()
    setMaxListeners(1000, leave.signal) // one signal ends the thousand senders
    const bulk = Array.from({ length: 1000 }, async (_, i) => await send(a.url, 'bulk', i, {}, leave.signal))
    await sleep(1000)
    // The bulk client's own high-priority request, and another client's, behind 1000 queued normal ones.
    const [ownHigh, otherHigh] = await Promise.all([
      send(a.url, 'bulk', 5000, { 'x-sluice-priority': 'high' }),
      send(a.url, 'human', 0, { 'x-sluice-priority': 'HIGH' })
    ])
    // Booked behind the bulk client's look-ahead; on a loaded machine a start later than half the
    // margin is booked again by the limiter, behind one more look-ahead.
    const bound = 2 * fair.lookaheadUnits + 4
    for (const [who, r] of [['the bulk client\'s own', ownHigh], ['another client\'s', otherHigh]] as const) {
      t.equal(r.status, 200, `${who} high-priority request succeeds`)
      t.ok(r.queueMs <= bound * fair.slotMs, `${who} high-priority request started after ${(r.queueMs / fair.slotMs).toFixed(1)} slots (${r.queueMs.toFixed(0)} ms; bound ${bound} slots), not behind ~${fair.queueDepth('prio')} queued`)
    }

    // Low priority on instance B, where nothing else waits: the budget is booked by A's backlog.
    const lowSentAt = now()
    const low = Array.from({ length: 5 }, async (_, i) => await send(b.url, 'backfill', i, { 'x-sluice-priority': 'low' }))
    const lowBounded = send(b.url, 'backfill', 99, { 'x-sluice-priority': 'low', prefer: 'wait=1' })
    const refused = await lowBounded
    t.equal(refused.status, 503, 'a low-priority request that cannot start within its wait bound is refused when the bound passes')
    const envelope = JSON.parse(refused.body) as { error: { code: string, details: Record<string, unknown> } }
    t.equal(envelope.error.code, 'QUEUE_TIMEOUT', 'as QUEUE_TIMEOUT')
    t.equal(envelope.error.details.client, clientId('test-secret', 'backfill'), 'details.client is the hashed client id')
    t.ok(now() - lowSentAt >= 950, 'after its 1 s bound, not before')
    await sleep(Math.max(0, began + 3500 - now()))
    const leftAt = now()
    leave.abort()
    await Promise.all(bulk)
    const lowDone = await Promise.all(low)
    t.ok(lowDone.every((r) => r.status === 200), 'the low-priority requests succeed once the backlog is gone')
    const hits = await up.hits()
    const lowHits = hitsOf(hits, 'backfill')
    t.equal(lowHits.length, 5, 'each reached the upstream once')
    // A slot the busy instance did not book in time (its event loop stalled longer than the
    // look-ahead, or a late start was given back) is one others left: low may take it.
    const early = lowHits.filter((h) => h < leftAt).length
    t.ok(early <= 1, `${early} of 5 started while the bulk client had a backlog on the other instance (first ${(lowHits[0] - leftAt).toFixed(0)} ms after it left)`)
    // Generous: aborting 1000 requests keeps this process's one event loop (both instances, the
    // clients) busy for a while; the schedule itself frees within a look-ahead.
    t.ok(lowHits[4] - leftAt <= 3000, `all started within ${(lowHits[4] - leftAt).toFixed(0)} ms of the capacity coming free`)
    const probes = b.schedulers.get('prio')?.stats
    t.comment(`instance B: ${probes?.lowProbes} low-priority reservations tried (${probes?.lowProbesRefused} refused) for 5 admitted in ${((leftAt - lowSentAt) / 1000).toFixed(1)} s of waiting`)
    t.ok((probes?.lowProbesRefused ?? 0) <= ((leftAt - lowSentAt) / fair.slotMs) / 2, 'low priority retries when the schedule says there could be room, not on every slot')
    const peak = maxInWindow(hits.map((h) => h.t), 1000)
    t.ok(peak <= LIMIT, `the upstream saw at most ${peak} in any 1 s window (limit ${LIMIT})`)
  })

  t.test('a lone low-priority client still gets the whole budget', async (t) => {
    const { up, sluices: [a] } = await instances(t, redis, 1)
    const fair = a.schedulers.get('prio')
    if (fair === undefined) throw new Error('no scheduler')
    await warm(a.url, 'night', 60)
    const results = await Promise.all(Array.from({ length: 60 }, async (_, i) => await send(a.url, 'night', i, { 'x-sluice-priority': 'low' })))
    t.ok(results.every((r) => r.status === 200), 'all 60 succeed')
    const times = hitsOf(await up.hits(), 'night')
    const span = times[times.length - 1] - times[0]
    const ideal = 59 * fair.slotMs
    t.ok(span <= ideal * 1.25 + 100, `60 starts took ${span.toFixed(0)} ms; the budget allows ${ideal.toFixed(0)} ms`)
    t.comment(`${fair.stats.lowProbes} low-priority reservations tried for 60 admitted (${fair.stats.lowProbesRefused} refused)`)
  })

  t.test('a bad priority is a 400, and the route default is validated', async (t) => {
    const { sluices: [a] } = await instances(t, redis, 1)
    const r = await send(a.url, 'x', 0, { 'x-sluice-priority': 'urgent' })
    t.equal(r.status, 400)
    t.match(r.body, /"code":"BAD_REQUEST".*X-Sluice-Priority must be one of high, normal, low/)
    t.throws(() => parseRoute({ upstream: 'http://127.0.0.1:1', limit: '5/s', priority: 'urgent' }, 'routes[0]'), /^config error: routes\[0\]\.priority: expected one of high, normal, low, got "urgent"/)
    t.equal(parseRoute({ upstream: 'http://127.0.0.1:1', limit: '5/s', priority: 'low' }, 'routes[0]').priority, 'low')
  })
})
