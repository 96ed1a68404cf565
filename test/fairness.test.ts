// Fair share of one budget across clients and instances: two Sluice instances, one Redis, a real
// origin in its own process. Backlogged clients get equal (or weighted) shares, small clients start
// within a few slots of arriving, the budget stays used, and each admission is one Redis round trip.
import { setMaxListeners } from 'node:events'
import t, { type Test } from 'tap'
import { Agent, request } from 'undici'
import { maxInWindow } from '../src/emulator'
import { clientId } from '../src/limiter/client-identity'
import type { BucketStore } from '../src/store/bucket-store'
import { RedisStore } from '../src/store/redis-store'
import { startRedis, type TestRedis } from './helpers/redis'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstreamProcess, type RemoteUpstream } from './helpers/upstream-process'

const LIMIT = 50
const ROUTE = { name: 'fair', limit: `${LIMIT}/s`, maxWait: '60s', maxQueue: 5000 }

const now = (): number => performance.timeOrigin + performance.now()
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Jain's fairness index of the given shares (1 = all equal, 1/n = one takes all). */
function jain (xs: number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0)
  const squares = xs.reduce((a, b) => a + b * b, 0)
  return squares === 0 ? 1 : (sum * sum) / (xs.length * squares)
}

interface Setup {
  up: RemoteUpstream
  a: TestSluice
  b: TestSluice
  /** Calls each instance made to its store, by method name. */
  calls: Map<string, number>
}

/** A Redis store that counts the calls Sluice makes to it (each is one script, one round trip). */
async function countingStore (redis: TestRedis, keyPrefix: string, calls: Map<string, number>): Promise<BucketStore> {
  const store = new RedisStore({ url: redis.url, keyPrefix })
  await store.connect()
  return new Proxy(store, {
    get (target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown
      if (typeof value !== 'function' || typeof name !== 'string') return value
      return (...args: unknown[]) => {
        calls.set(name, (calls.get(name) ?? 0) + 1)
        return (value as (...a: unknown[]) => unknown).apply(target, args)
      }
    }
  })
}

async function twoInstances (t: Test, redis: TestRedis, extra: Record<string, unknown> = {}): Promise<Setup> {
  const up = await startUpstreamProcess()
  const keyPrefix = redis.prefix()
  const route = { ...ROUTE, upstream: up.url, ...extra }
  const calls = new Map<string, number>()
  const a = await startSluice([route], { redis: redis.url, keyPrefix }, { store: await countingStore(redis, keyPrefix, calls) })
  const b = await startSluice([route], { redis: redis.url, keyPrefix }, { store: await countingStore(redis, keyPrefix, calls) })
  t.teardown(async () => {
    for (const agent of agents.values()) await agent.destroy()
    agents.clear()
    await a.close()
    await b.close()
    await up.close()
  })
  return { up, a, b, calls }
}

/** One connection pool per client, as separate jobs would have: no client queues behind another's sockets. */
const agents = new Map<string, Agent>()

interface Sent { status: number, queueMs: number }

/** Send one request as `client` to `base`: its status (0 when aborted) and the ms Sluice held it (Server-Timing). */
async function send (base: string, client: string, i: number, signal?: AbortSignal): Promise<Sent> {
  let dispatcher = agents.get(client)
  if (dispatcher === undefined) agents.set(client, dispatcher = new Agent({ connections: null, keepAliveTimeout: 60_000 }))
  try {
    const res = await request(`${base}/c/${client}/${i}`, { headers: { 'x-sluice-client': client }, signal, dispatcher })
    await res.body.text()
    const timing = /queue;dur=([\d.]+)/.exec(String(res.headers['server-timing'] ?? ''))
    return { status: res.statusCode, queueMs: timing === null ? NaN : Number(timing[1]) }
  } catch (err) {
    if (signal?.aborted === true) return { status: 0, queueMs: NaN }
    t.comment(`${client} ${i}: ${(err as Error).message}`)
    return { status: -1, queueMs: NaN }
  }
}

/**
 * Open `n` keep-alive connections of `client` to `base` before the load, 100 at a time: a thousand
 * connects at once overflow the listen backlog, and a dropped SYN costs its client a second or more.
 */
async function warm (base: string, client: string, n: number): Promise<void> {
  let dispatcher = agents.get(client)
  if (dispatcher === undefined) agents.set(client, dispatcher = new Agent({ connections: null, keepAliveTimeout: 60_000 }))
  for (let done = 0; done < n; done += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - done) }, async () => {
      await (await request(`${base}/_sluice/health`, { dispatcher })).body.text()
    }))
  }
}

async function until (ok: () => boolean, ms: number): Promise<boolean> {
  const end = now() + ms
  while (!ok() && now() < end) await sleep(20)
  return ok()
}

/** Upstream hits per client: times, sorted. */
function byClient (hits: Array<{ t: number, url: string }>): Map<string, number[]> {
  const out = new Map<string, number[]>()
  for (const h of hits) {
    const client = h.url.split('/')[2]
    let list = out.get(client)
    if (list === undefined) out.set(client, list = [])
    list.push(h.t)
  }
  for (const list of out.values()) list.sort((x, y) => x - y)
  return out
}

function countIn (times: number[] | undefined, from: number, to: number): number {
  return (times ?? []).filter((x) => x >= from && x < to).length
}

t.test('fair share', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())

  t.test('4 clients (1000, 100, 10, 2 requests) on 2 instances share one budget', async (t) => {
    // The issue's 2000/200/20/2 scaled down by 2 (the tiny client keeps its 2), so the run takes
    // ~8 s instead of 45: the big client is abandoned after 8 s, which also tests that.
    const { a, b, up, calls } = await twoInstances(t, redis)
    const fair = a.schedulers.get('fair')
    if (fair === undefined) throw new Error('no scheduler')
    const slotMs = fair.slotMs
    await Promise.all([warm(a.url, 'big', 1000), warm(b.url, 'medium', 100), warm(a.url, 'small', 1), warm(b.url, 'tiny', 1)])
    const admin = redis.client()
    await admin.config('RESETSTAT')
    calls.clear()
    const began = now()
    const abandon = new AbortController()
    setMaxListeners(1000, abandon.signal) // one signal ends the big client's thousand requests
    const big = Array.from({ length: 1000 }, async (_, i) => await send(a.url, 'big', i, abandon.signal))
    const medium = Array.from({ length: 100 }, async (_, i) => await send(b.url, 'medium', i))
    // Small clients make their calls one after another, well below their fair share.
    const paced = async (base: string, client: string, n: number, startMs: number, everyMs: number): Promise<Sent[]> => {
      await sleep(startMs)
      const results: Sent[] = []
      for (let i = 0; i < n; i++) {
        const at = began + startMs + i * everyMs
        if (now() < at) await sleep(at - now())
        results.push(await send(base, client, i))
      }
      return results
    }
    const small = paced(a.url, 'small', 10, 1000, 300)
    const tiny = paced(b.url, 'tiny', 2, 1500, 1000)
    const [mediumDoneAll, smallSent, tinySent] = await Promise.all([Promise.all(medium), small, tiny])
    await sleep(Math.max(0, began + 8000 - now()))
    const abandonedAt = now()
    abandon.abort()
    const bigSent = await Promise.all(big)
    t.ok(await until(() => a.schedulers.get('fair')?.queueDepth('fair') === 0, 3000), 'once the big client left, nothing of it waits in instance A')
    const stats = await admin.info('commandstats')
    const hits = await up.hits()
    const clients = byClient(hits)

    t.ok([...mediumDoneAll, ...smallSent, ...tinySent].every((r) => r.status === 200), 'every request of medium, small and tiny succeeds')
    const bigServed = bigSent.filter((r) => r.status === 200).length
    t.equal(bigSent.filter((r) => r.status !== 200 && r.status !== 0).length, 0, 'the big client got no error; only its abandoned requests went unanswered')

    // Small clients: every request starts within a few slots of its arrival, not behind the backlog
    // (1000 requests: 22 s). Bound: the look-ahead the three others may hold, plus 3 slots; twice
    // that for the slowest, since a start later than half the margin (a stalled event loop on this
    // loaded machine) is booked again by the limiter, behind the look-aheads once more.
    const bound = 3 * fair.lookaheadUnits + 3
    const waits = [...smallSent, ...tinySent].map((r) => r.queueMs).sort((x, y) => x - y)
    for (const [client, sent] of [['small', smallSent], ['tiny', tinySent]] as const) {
      t.equal((clients.get(client) ?? []).length, sent.length, `${client}: every request reached the upstream`)
      const worst = Math.max(...sent.map((r) => r.queueMs))
      t.ok(worst <= 2 * bound * slotMs, `${client}: each started within ${(worst / slotMs).toFixed(1)} slots of its arrival (bound ${2 * bound} slots of ${slotMs} ms; waits ${sent.map((r) => r.queueMs.toFixed(0)).join(', ')} ms)`)
    }
    const median = waits[Math.floor(waits.length / 2)]
    t.ok(median <= bound * slotMs, `the median small request started ${(median / slotMs).toFixed(1)} slots after arriving (bound ${bound})`)

    // Jain's index among the still-backlogged clients (big and medium) while medium has a backlog,
    // after the first second (1100 connections opening at once).
    const first = Math.min(...hits.map((h) => h.t))
    const mediumDone = (clients.get('medium') ?? []).at(-1) ?? first
    const shares = ['big', 'medium'].map((c) => countIn(clients.get(c), first + 1000, mediumDone))
    const index = jain(shares)
    t.ok(index >= 0.95, `Jain's index ${index.toFixed(3)} between big and medium over the ${((mediumDone - first - 1000) / 1000).toFixed(1)} s contended period (${shares.join(' vs ')})`)

    // Utilization of the budget while the big client had a backlog (after the first second).
    const from = first + 1000
    const during = hits.filter((h) => h.t >= from && h.t < abandonedAt)
    const budgetSlots = (abandonedAt - from) / slotMs
    const utilization = during.length / budgetSlots
    // A start later than half the margin (a stalled event loop) is given up and booked again by the
    // limiter; its slot is then lost unless it was the newest. Those are counted apart: the fair
    // queues kept the schedule booked, the limiter chose not to use the slot.
    const lateRetries = [a, b].reduce((n, s) => n + (s.limiters.get('fair')?.stats.lateRetries ?? 0), 0)
    const booked = (during.length + lateRetries) / budgetSlots
    t.ok(booked >= 0.95, `utilization ${utilization.toFixed(3)} of the budget (${during.length} starts in ${((abandonedAt - from) / 1000).toFixed(2)} s = ${budgetSlots.toFixed(0)} slots of ${slotMs} ms), ${booked.toFixed(3)} with the ${lateRetries} slots the limiter gave up for late starts`)
    t.ok(utilization >= 0.8, `forwarded utilization ${utilization.toFixed(3)} ≥ 0.8 even on a loaded machine`)
    const peak = maxInWindow(hits.map((h) => h.t), 1000)
    t.ok(peak <= LIMIT, `at most ${peak} in any 1 s window at the upstream (limit ${LIMIT})`)

    // Abandoned cleanly: once the big client left, its held requests were never forwarded.
    t.equal(countIn(clients.get('big'), abandonedAt + 500, Infinity), 0, 'no request of the big client reached the upstream 500 ms after it left')
    const bigHits = countIn(clients.get('big'), 0, Infinity)
    t.ok(bigHits >= bigServed && bigHits <= bigServed + fair.lookaheadUnits, `the big client was answered ${bigServed} times; ${bigHits - bigServed} more were on their way when it left`)
    const bigStats = fair.clients().find((c) => c.client === clientId('test-secret', 'big'))
    t.ok(bigStats !== undefined && bigStats.cancelled >= 1000 - bigHits - fair.lookaheadUnits, `instance A counted the big client's ${bigStats?.cancelled} abandoned requests as cancelled, ${bigStats?.admitted} as admitted`)
    t.notOk(JSON.stringify(fair.clients()).includes('big'), 'client ids are hashes, never the names')

    // One Redis round trip per admitted request: the store calls Sluice made, and what Redis ran.
    const admitted = hits.length
    const admission = (calls.get('reserve') ?? 0) + (calls.get('release') ?? 0)
    const late = [a, b].reduce((n, s) => n + (s.limiters.get('fair')?.stats.lateRetries ?? 0), 0)
    const scripts = [...stats.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)].reduce((n, m) => n + Number(m[2]), 0)
    const storeCalls = [...calls.values()].reduce((x, y) => x + y, 0)
    t.comment(`store calls: ${[...calls].map(([k, v]) => `${k}=${v}`).join(' ')}; Redis ran ${scripts} scripts; ${admitted} admitted; ${late} late starts re-reserved`)
    // Each late start costs the limiter a release and a new reserve; the fair queues add nothing: every
    // other reservation is one admitted request, or one of the few the big client held when it left.
    const reserves = (calls.get('reserve') ?? 0) - late
    t.ok(reserves >= admitted && reserves <= admitted + fair.lookaheadUnits + 2, `${reserves} reservations for ${admitted} admitted requests besides the limiter's late-start retries; all in all ${(admission / admitted).toFixed(3)} admission round trips (reserve + release) per admitted request`)
    t.comment(`Redis ran ${scripts} scripts in all, ${(scripts / admitted).toFixed(3)} per admitted request, status heartbeats and the presence script included (${storeCalls} store calls)`)
  })

  t.test('three backlogged clients, two on one instance and one on the other, get a third each', async (t) => {
    const { a, b, up } = await twoInstances(t, redis)
    await Promise.all([warm(a.url, 'x', 200), warm(a.url, 'y', 200), warm(b.url, 'z', 200)])
    const stop = new AbortController()
    setMaxListeners(1000, stop.signal) // one signal ends hundreds of senders
    const load = [
      ...Array.from({ length: 200 }, async (_, i) => await send(a.url, 'x', i, stop.signal)),
      ...Array.from({ length: 200 }, async (_, i) => await send(a.url, 'y', i, stop.signal)),
      ...Array.from({ length: 200 }, async (_, i) => await send(b.url, 'z', i, stop.signal))
    ]
    await sleep(3500)
    stop.abort()
    await Promise.all(load)
    const clients = byClient(await up.hits())
    const first = Math.min(...[...clients.values()].map((l) => l[0]))
    // Skip the first second (connections opening), count the next two.
    const shares = ['x', 'y', 'z'].map((c) => countIn(clients.get(c), first + 1000, first + 3000))
    const index = jain(shares)
    // Splitting the budget between instances instead would give 1/4, 1/4, 1/2: index 0.889.
    t.ok(index >= 0.95, `Jain's index ${index.toFixed(3)} (${shares.join(', ')}): the share is per client, not per instance`)
  })

  t.test('a client that sends through both instances gets one share, not two', async (t) => {
    const { a, b, up } = await twoInstances(t, redis)
    await Promise.all([warm(a.url, 'both', 150), warm(b.url, 'both', 150), warm(a.url, 'one', 300)])
    const stop = new AbortController()
    setMaxListeners(1000, stop.signal) // one signal ends hundreds of senders
    const load = [
      ...Array.from({ length: 300 }, async (_, i) => await send(i % 2 === 0 ? a.url : b.url, 'both', i, stop.signal)),
      ...Array.from({ length: 300 }, async (_, i) => await send(a.url, 'one', i, stop.signal))
    ]
    await sleep(3500)
    stop.abort()
    await Promise.all(load)
    const clients = byClient(await up.hits())
    const first = Math.min(...[...clients.values()].map((l) => l[0]))
    const shares = ['both', 'one'].map((c) => countIn(clients.get(c), first + 1000, first + 3000))
    const index = jain(shares)
    // Without the presence count 'both' would book a look-ahead in each instance: 2 : 1, index 0.9.
    t.ok(index >= 0.95, `Jain's index ${index.toFixed(3)} (${shares.join(' vs ')}): each instance books half of its look-ahead`)
  })

  t.test('weights 3:1 across instances give shares within 10% of 3:1', async (t) => {
    const { a, b, up } = await twoInstances(t, redis, { weights: { heavy: 3 } })
    await Promise.all([warm(a.url, 'heavy', 300), warm(b.url, 'light', 300)])
    const stop = new AbortController()
    setMaxListeners(1000, stop.signal) // one signal ends hundreds of senders
    const load = [
      ...Array.from({ length: 300 }, async (_, i) => await send(a.url, 'heavy', i, stop.signal)),
      ...Array.from({ length: 300 }, async (_, i) => await send(b.url, 'light', i, stop.signal))
    ]
    await sleep(3500)
    stop.abort()
    await Promise.all(load)
    const clients = byClient(await up.hits())
    const first = Math.min(...[...clients.values()].map((l) => l[0]))
    const heavy = countIn(clients.get('heavy'), first + 1000, first + 3000)
    const light = countIn(clients.get('light'), first + 1000, first + 3000)
    const ratio = heavy / light
    t.ok(Math.abs(ratio - 3) <= 0.3, `heavy:light = ${heavy}:${light} = ${ratio.toFixed(2)} (3 ± 10%)`)
    t.equal(a.schedulers.get('fair')?.clients()[0]?.weight, 3, 'the weight was matched to the hashed client id')
  })
})

t.test('the fair queues keep the wait bound and maxQueue, and every refusal names the client', async (t) => {
  const up = await startUpstreamProcess()
  // Memory store, 5/s: one slot is 220 ms (margin 100 ms), and a client books 2 ahead.
  // A fixed margin: the slots above are exact, and no late request under load pushes them back (margin-probe.ts).
  const s = await startSluice([{ name: 'q', upstream: up.url, limit: '5/s', maxQueue: 6, margin: '100ms fixed' }])
  t.teardown(async () => {
    for (const agent of agents.values()) await agent.destroy()
    agents.clear()
    await s.close()
    await up.close()
  })
  const me = clientId('test-secret', 'q')
  await Promise.all([warm(s.url, 'q', 7), warm(s.url, 'r', 8)])
  let began = now()
  const one = async (client: string, i: number, headers: Record<string, string>): Promise<{ status: number, code?: string, client?: unknown, ms: number }> => {
    await sleep(i * 20) // in order
    const res = await request(`${s.url}/c/${client}/${i}`, { headers: { 'x-sluice-client': client, ...headers }, dispatcher: agents.get(client) })
    const text = await res.body.text()
    const error = res.statusCode === 200 ? undefined : (JSON.parse(text) as { error: { code: string, details: Record<string, unknown> } }).error
    return { status: res.statusCode, code: error?.code, client: error?.details.client, ms: now() - began - i * 20 }
  }
  // A 0.9 s bound puts every q's deadline half a slot (100 ms) from its slot, on one side or the other.
  const q = await Promise.all(Array.from({ length: 7 }, async (_, i) => await one('q', i, { prefer: 'wait=0.9' })))
  began = now()
  const r = await Promise.all(Array.from({ length: 8 }, async (_, i) => await one('r', i, {})))
  t.comment([...q, ...r].map((b, i) => `${i}: ${b.status} ${b.code ?? ''} ${b.ms.toFixed(0)} ms`).join('; '))
  // q0 and q1 are booked at once (slots 0 and 220 ms), q2-q4 wait here (440-880 ms; qi arrives at
  // 20i ms, so q4's deadline is 980 ms). q6 could not start within 0.9 s even with the whole budget
  // (5 units ahead of it × 220 ms): refused at once. q5's slot (1100 ms) is past its bound (1000 ms)
  // too, but only by less than a slot: refused when its turn comes.
  t.same(q.map((b) => b.status), [200, 200, 200, 200, 200, 429, 429], 'five start within the bound, two are refused')
  t.ok(q[5].code === 'RATE_LIMITED' && q[5].ms < 900, `q5 as RATE_LIMITED within its bound (${q[5].ms.toFixed(0)} ms: at once, or when its turn showed its slot too late)`)
  t.ok(q[6].code === 'RATE_LIMITED' && q[6].ms < 200, `q6 at once, as RATE_LIMITED (${q[6].ms.toFixed(0)} ms)`)
  // maxQueue 6 counts held and reserved requests: r0 and r1 are booked, r2-r5 wait here, r6 and r7
  // find the queue full.
  t.same(r.map((b) => b.code ?? b.status), [200, 200, 200, 200, 200, 200, 'QUEUE_FULL', 'QUEUE_FULL'], 'the queue (maxQueue 6) is full for the seventh request that would wait')
  t.ok(q.filter((b) => b.status !== 200).every((b) => b.client === me), 'every refusal carries details.client, the hashed id')
  t.ok(r.filter((b) => b.status !== 200).every((b) => b.client === clientId('test-secret', 'r')), 'QUEUE_FULL too')
})
