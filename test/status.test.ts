// /_sluice/status and `sluice status`: two real instances sharing one real Redis report the same
// team-wide numbers (budget from the store, queue and in-flight from each other's heartbeats).
import t from 'tap'
import { request } from 'undici'
import type { SluiceStatus } from '../src/observe/status'
import { formatStatus, runStatus } from '../src/observe/status-cli'
import { freePort, startRedis } from './helpers/redis'
import { parsePrometheus } from './helpers/prometheus'
import { startSluice, type TestSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

async function status (s: TestSluice): Promise<SluiceStatus> {
  const res = await request(`${s.url}/_sluice/status`)
  if (res.statusCode !== 200) throw new Error(`/_sluice/status answered ${res.statusCode}: ${await res.body.text()}`)
  if (!String(res.headers['content-type']).startsWith('application/json')) throw new Error(`/_sluice/status is ${String(res.headers['content-type'])}, not JSON`)
  return await res.body.json() as SluiceStatus
}

/** The team-wide figures of a bucket (what every instance must agree on). */
function team (st: SluiceStatus, bucket: string): Record<string, unknown> {
  const b = st.buckets.find((x) => x.bucket === bucket)
  if (b === undefined) throw new Error(`no bucket ${bucket} in ${JSON.stringify(st.buckets.map((x) => x.bucket))}`)
  return {
    limit: b.limit,
    windowS: b.windowS,
    remaining: b.remaining,
    booked: b.booked,
    requestsLastMinute: b.requestsLastMinute,
    rejectedLastMinute: b.rejectedLastMinute,
    usedInWindow: b.usedInWindow,
    queueDepth: b.queueDepth,
    inFlight: b.inFlight,
    liveInstances: b.liveInstances,
    paused: b.pausedUntil !== null
  }
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

t.test('two instances sharing Redis report the same team-wide numbers', async (t) => {
  const redis = await startRedis()
  const held: Array<() => void> = []
  const up = await startUpstream((req, res) => {
    const answer = (): void => { res.setHeader('content-type', 'application/json'); res.end('{"ok":true}') }
    if (req.url?.endsWith('/hold') === true) held.push(answer)
    else answer()
  })
  const routes = [
    { name: 'team', prefix: '/team', upstream: up.url, limit: '100/min', algorithm: 'sliding-window', maxWait: '0s' },
    { name: 'slow', prefix: '/slow', upstream: up.url, limit: '1/10s' }
  ]
  const keyPrefix = redis.prefix()
  const a = await startSluice(routes, { redis: redis.url, keyPrefix })
  const b = await startSluice(routes, { redis: redis.url, keyPrefix })
  const leaving = new AbortController()
  const leavingB = new AbortController()
  t.teardown(async () => {
    leaving.abort()
    leavingB.abort()
    for (const answer of held) answer()
    await a.close()
    await b.close()
    await up.close()
    await redis.close()
  })
  const get = async (s: TestSluice, path: string): Promise<number> => (await request(`${s.url}${path}`, { signal: s === b ? leavingB.signal : leaving.signal })).statusCode

  // 3 through A, 2 through B, one more through each held open by the upstream (in flight).
  for (let i = 0; i < 3; i++) t.equal(await get(a, '/team/x'), 200)
  for (let i = 0; i < 2; i++) t.equal(await get(b, '/team/x'), 200)
  const inFlight = [get(a, '/team/hold'), get(b, '/team/hold')].map(async (p) => await p.catch(() => 0))
  // slow: the first goes at once; the next two wait (~10 s, ~20 s), one in each instance.
  t.equal(await get(a, '/slow/1'), 200)
  const queued = [get(a, '/slow/2'), get(b, '/slow/3')].map(async (p) => await p.catch(() => 0))
  for (let i = 0; i < 100 && held.length < 2; i++) await sleep(10)
  t.equal(held.length, 2, 'both held requests reached the upstream')
  // One pushback pause, set through A: both must see it (it lives in the store).
  await a.observer.timed(a.store).pause('team', 30_000)
  // Every instance publishes its figures once a second: wait for a beat of each after the last change.
  // (On a busy machine a beat can come late: read again, up to 5 s, until the two agree.)
  await sleep(1100)
  let [sa, sb] = await Promise.all([status(a), status(b)])
  for (let i = 0; i < 20 && JSON.stringify([team(sa, 'team'), team(sa, 'slow')]) !== JSON.stringify([team(sb, 'team'), team(sb, 'slow')]); i++) {
    await sleep(200);
    [sa, sb] = await Promise.all([status(a), status(b)])
  }
  t.same(team(sa, 'team'), team(sb, 'team'), 'bucket team: both instances report the same')
  t.same(team(sa, 'slow'), team(sb, 'slow'), 'bucket slow: both instances report the same')
  t.same(team(sa, 'team'), {
    limit: 100,
    windowS: 60,
    remaining: 0, // paused
    booked: 7,
    requestsLastMinute: 7,
    rejectedLastMinute: 0,
    usedInWindow: 7,
    queueDepth: 0,
    inFlight: 2,
    liveInstances: 2,
    paused: true
  }, 'team: 7 requests, 2 in flight, paused')
  t.same(team(sa, 'slow'), {
    limit: 1,
    windowS: 10,
    remaining: 0,
    booked: 3,
    requestsLastMinute: 1,
    rejectedLastMinute: 0,
    usedInWindow: 1,
    queueDepth: 2,
    inFlight: 0,
    liveInstances: 2,
    paused: false
  }, 'slow: one forwarded, two waiting (one per instance)')
  const slowA = sa.buckets.find((x) => x.bucket === 'slow')
  t.same([slowA?.local.queueDepth, sb.buckets.find((x) => x.bucket === 'slow')?.local.queueDepth], [1, 1], 'each instance holds one of the waiting requests')
  t.equal(sa.instances.length, 2)
  t.same(new Set(sa.instances.map((i) => i.id)), new Set(sb.instances.map((i) => i.id)), 'both list the same instances')
  t.equal(sa.instance.store, 'redis')
  t.ok(sa.instance.storeReachable)
  const pauseA = Date.parse(sa.buckets.find((x) => x.bucket === 'team')?.pausedUntil ?? '')
  const pauseB = Date.parse(sb.buckets.find((x) => x.bucket === 'team')?.pausedUntil ?? '')
  t.ok(Math.abs(pauseA - pauseB) < 1500 && pauseA > Date.now() + 25_000, 'both see the pause end ~30 s ahead')

  // The same numbers in the terminal.
  let out = ''
  const code = await runStatus(['--url', a.url], { out: (s) => { out += s }, err: (s) => { out += s }, tty: false })
  t.equal(code, 0)
  t.match(out, /2 live instances, store redis/)
  const teamLine = out.split('\n').find((l) => l.startsWith('team '))
  t.ok(teamLine !== undefined, 'a row for bucket team')
  t.match(teamLine, /^team\s+enforce\s+100\/min\s+7%\s+0\s+7\s+0\s+0\s+2\s+/, 'bucket, mode, limit, used, left, req/min, refused/min, queue, in flight')
  t.match(out.split('\n').find((l) => l.startsWith('slow ')), /^slow\s+enforce\s+1\/10s\s+100%\s+0\s+1\s+0\s+2\s+0\s+/)

  // One instance leaves (its waiting client gives up first): the other sees it gone at once.
  for (const answer of held.splice(0)) answer()
  await Promise.all(inFlight)
  leavingB.abort()
  await b.close()
  const after = await status(a)
  t.equal(after.instances.length, 1, 'a closed instance leaves the team')
  t.equal(team(after, 'slow').queueDepth, 1, 'its waiting request no longer counts')
  leaving.abort()
  await Promise.all(queued)
})

t.test('memory store: the status of one instance, budget read without reserving', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([
    { name: 'solo', upstream: up.url, limit: '5/min', burst: 5 },
    { name: 'keyed', prefix: '/keyed', upstream: up.url, limit: '10/s', key: 'header:x-user' }
  ])
  t.teardown(async () => { await s.close(); await up.close() })
  for (let i = 0; i < 2; i++) t.equal((await request(`${s.url}/x`)).statusCode, 200)
  await request(`${s.url}/keyed/x`, { headers: { 'x-user': 'alice' } })
  const first = await status(s)
  const again = await status(s)
  const solo = first.buckets.find((b) => b.bucket === 'solo')
  t.equal(solo?.remaining, 3, 'burst 5, two used')
  t.equal(again.buckets.find((b) => b.bucket === 'solo')?.remaining, 3, 'reading the status reserves nothing')
  t.equal(solo?.requestsLastMinute, 2)
  t.equal(solo?.liveInstances, 1)
  t.equal(first.instance.store, 'memory')
  const keyed = first.buckets.filter((b) => b.route === 'keyed')
  t.equal(keyed.length, 1, 'a per-credential bucket appears once used')
  t.notOk(keyed[0].bucket.includes('alice'), 'its name is the HMAC, never the credential')
})

t.test('sluice status: unreachable URL and bad flags exit 2 with one clear line', async (t) => {
  const port = await freePort()
  let err = ''
  const io = { out: () => {}, err: (s: string) => { err += s }, tty: false }
  t.equal(await runStatus(['--url', `http://127.0.0.1:${port}`], io, {}), 2)
  t.match(err, new RegExp(`^sluice: status: cannot reach Sluice at http://127\\.0\\.0\\.1:${port}/_sluice/status \\(ECONNREFUSED\\).*--url\\n$`))
  err = ''
  t.equal(await runStatus(['--url', 'ftp://x'], io, {}), 2)
  t.match(err, /--url: expected an http/)
  err = ''
  t.equal(await runStatus(['--bogus'], io, {}), 2)
  t.match(err, /Unknown option '--bogus'.*usage: sluice status/)
})

t.test('sluice status --watch redraws until stopped', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'w', upstream: up.url, limit: '10/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const frames: string[] = []
  const stop = new AbortController()
  const running = runStatus(['--url', s.url, '--watch', '--interval', '150ms'], { out: (x) => frames.push(x), err: (x) => frames.push(x), tty: true }, {}, stop.signal)
  await sleep(150)
  await request(`${s.url}/x`)
  for (let i = 0; i < 40 && !frames.some((f) => /^w\s+enforce\s+10\/s\s+\S+\s+\S+\s+1\s/m.test(f)); i++) await sleep(50)
  stop.abort()
  t.equal(await running, 0)
  t.ok(frames.length >= 2, `redrawn (${frames.length} frames)`)
  t.ok(frames.every((f) => f.startsWith('\x1b[2J\x1b[H')), 'each frame clears the screen first')
  t.ok(frames.some((f) => /^w\s+enforce\s+10\/s\s+\S+\s+\S+\s+1\s/m.test(f)), 'a later frame shows the new request')
  t.match(formatStatus({ generatedAt: new Date().toISOString(), instance: { id: 'x', store: 'redis', storeReachable: false }, instances: [], buckets: [], clients: [] }, 'http://h'), /UNREACHABLE.*\n\n.*\n\(no buckets yet\)/s)
})

t.test('Redis down: status still answers, from this instance alone, and the store mode says so', async (t) => {
  const redis = await startRedis()
  const up = await startUpstream()
  const s = await startSluice([{ name: 'team', upstream: up.url, limit: '100/min' }], { redis: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => { await s.close(); await up.close(); await redis.close() })
  t.equal((await request(`${s.url}/x`)).statusCode, 200)
  const up1 = await status(s)
  t.equal(up1.instance.storeReachable, true)
  t.equal(up1.buckets[0].store, 'redis')
  await redis.stop()
  await request(`${s.url}/x`).then(async (r) => await r.body.dump(), () => {})
  const began = Date.now()
  const down = await status(s)
  t.ok(Date.now() - began < 3000, 'answers within the store command timeout')
  t.equal(down.instance.storeReachable, false)
  t.equal(down.buckets[0].remaining, null, 'the shared budget cannot be read')
  t.equal(down.buckets[0].local.requestsLastMinute >= 1, true, "this instance's own figures remain")
  t.not(down.buckets[0].store, 'redis', `the route left Redis (${down.buckets[0].store})`)
  const m = parsePrometheus(await (await request(`${s.url}/_sluice/metrics`)).body.text())
  t.equal(m.value('sluice_store_mode', { route: 'team', mode: 'redis' }), 0)
  t.equal(m.value('sluice_store_mode', { route: 'team' }), 1, 'exactly one mode is current')
  t.equal(m.value('sluice_store_mode', { route: 'team', mode: down.buckets[0].store }), 1)
})
