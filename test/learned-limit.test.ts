// Issue 20: a limit nobody published, learned from the upstream's pushback and shared by the team.
// A strict emulator below the configured limit; windows of 1 s.
import t from 'tap'
import { request } from 'undici'
import { startEmulator } from '../src/emulator'
import { nextProbe } from '../src/limiter/learned-limit'
import pino from 'pino'
import { DEFAULTS, type SluiceConfig } from '../src/config/schema'
import { parseRoute } from '../src/config/route'
import { createSluice } from '../src/http/app'
import type { SluiceStatus } from '../src/observe/status'
import { formatStatus } from '../src/observe/status-cli'
import { scrapeMetrics } from './helpers/prometheus'
import { startSluice } from './helpers/sluice'
import { post, spread, startLimitedUpstream } from './helpers/limited-upstream'

for (const profile of ['zulip', 'testrail', 'github', 'testmo'] as const) {
  t.test(`${profile}: configured at twice the upstream's limit, Sluice learns it from the first pushback`, async (t) => {
    const emulator = await startEmulator({ profile, limit: 5, windowMs: 1000, testmoPenaltyMs: 1000 })
    // Testmo's 429 has no Retry-After (60 s in real life): a short minPause stands in for it here.
    const s = await startSluice([{ name: 'api', upstream: emulator.url, limit: '10/s', profile, maxWait: '30s', minPause: '1s', maxPause: '2s' }])
    t.teardown(async () => { await s.close(); await emulator.close() })
    const statuses = await spread([s], '/api/x', 20)
    t.same(statuses, Array(20).fill(200), 'every client request succeeds')
    const limited = emulator.stats().limited
    t.ok(limited <= 3, `the upstream answered ${limited} 429s (before learning: one per second of the run)`)
    const view = s.limiters.get('api')!.sources.view()
    t.ok(view.learned !== undefined && view.learned <= 5 && view.learned >= 4, `learned ${view.learned} of the upstream's 5`)
    t.equal(s.limiters.get('api')!.policy.limit, view.learned, 'the limit in force is the learned one')
    t.ok(s.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('limit in force')), 'the change is logged')
  })
}

t.test('nextProbe: one step after quiet windows, doubled waits after failed probes, never above the cap', async (t) => {
  const ctx = { cap: 20, windowMs: 1000, quietWindows: 5, maxStep: Infinity, minQuietMs: 0 }
  const rec = { limit: 10, windowMs: 1000, kind: 'learned' as const, sinceChangeMs: 6000, sincePushbackMs: 6000, failedProbes: 0 }
  t.same(nextProbe(rec, ctx), { op: 'raise', from: 10, to: 11, windowMs: 1000, kind: 'learned', quietMs: 5000 })
  t.equal(nextProbe({ ...rec, sincePushbackMs: 4000 }, ctx), undefined, 'not within 5 windows of a pushback')
  t.equal(nextProbe({ ...rec, failedProbes: 1 }, ctx), undefined, 'a failed probe doubles the quiet time')
  t.equal(nextProbe(rec, { ...ctx, minQuietMs: 60_000 }), undefined, 'and never sooner than the least quiet time')
  t.equal((nextProbe({ ...rec, sinceChangeMs: 61_000, sincePushbackMs: 61_000 }, { ...ctx, minQuietMs: 60_000 }) as { quietMs: number }).quietMs, 60_000)
  t.equal(nextProbe({ ...rec, limit: 19 }, ctx)?.op === 'raise' && (nextProbe({ ...rec, limit: 19 }, ctx) as { to?: number }).to, undefined, 'reaching the configured limit forgets the learned one')
  t.equal((nextProbe({ ...rec, limit: 100 }, { ...ctx, cap: 200, maxStep: 1 }) as { to: number }).to, 101, 'a careful profile steps by one')
  t.equal((nextProbe({ ...rec, limit: 100 }, { ...ctx, cap: 200 }) as { to: number }).to, 105, 'else by a twentieth')
  t.equal((nextProbe({ ...rec, kind: 'shared', sinceChangeMs: 1000, sincePushbackMs: 1000 }, ctx) as { to: number }).to, 12, 'shared: back after one window, by a tenth of the cap')
})

t.test('the learned limit is seen everywhere: metrics, status, sluice status, refusal details', async (t) => {
  const emulator = await startEmulator({ profile: 'zulip', limit: 4, windowMs: 1000 })
  const s = await startSluice([{ name: 'api', upstream: emulator.url, limit: '8/s', profile: 'zulip', maxWait: '30s' }])
  t.teardown(async () => { await s.close(); await emulator.close() })
  t.same(await spread([s], '/api/x', 12), Array(12).fill(200))
  const learned = s.limiters.get('api')!.sources.view().learned
  t.ok(learned !== undefined && learned <= 4, `learned ${learned}`)
  const metrics = await scrapeMetrics(s.url)
  t.equal(metrics.value('sluice_budget_limit', { route: 'api' }), learned, 'sluice_budget_limit is the limit in force, not the configured one')
  t.equal(metrics.value('sluice_budget_limit_source', { route: 'api', source: 'configured' }), 8)
  t.equal(metrics.value('sluice_budget_limit_source', { route: 'api', source: 'learned' }), learned)
  t.equal(metrics.find('sluice_budget_limit_source', { route: 'api', source: 'announced' }).length, 0, 'a source that says nothing is absent')
  const res = await request(`${s.url}/_sluice/status`)
  const status = await res.body.json() as SluiceStatus
  const bucket = status.buckets.find((b) => b.route === 'api')!
  t.same(bucket.limitSources, { configured: 8, announced: null, learned }, 'status names the three sources')
  t.equal(bucket.limit, learned)
  t.match(formatStatus(status, s.url), new RegExp(`${learned}/s \\(learned; configured 8\\)`), 'sluice status says where the limit comes from')
  const refused = await request(`${s.url}/api/x`, { method: 'POST', headers: { prefer: 'wait=0' }, body: '' })
  const envelope = await refused.body.json() as { error: { code: string, details: Record<string, unknown> } }
  if (envelope.error.code === 'RATE_LIMITED') t.same(envelope.error.details.limit_sources, { configured: 8, learned }, 'a refusal\'s details name them')
  else t.equal(refused.statusCode, 200, 'room right away: nothing refused')
})

t.test('limit: auto without headers climbs from its start until the first pushback, then settles below it', async (t) => {
  // The upstream allows 8 per 500 ms and says nothing about it; the route starts at 3 per 500 ms.
  const up = await startLimitedUpstream(8, 500)
  const route = parseRoute({ name: 'auto', upstream: up.url, limit: 'auto', profile: 'zulip', maxWait: '30s', minPause: '500ms' }, 'route')
  route.limit = { count: 3, windowMs: 500 }
  route.marginMs = 50
  const s = await createSluice({ host: '127.0.0.1', port: 0, redis: undefined, keyPrefix: DEFAULTS.keyPrefix, hashSecret: 'x', logLevel: 'warn', routes: [route] } as SluiceConfig, { logger: pino({ level: 'silent' }) })
  const url = await s.listen()
  t.teardown(async () => { await s.close(); await up.close() })
  const seen: number[] = []
  const until = Date.now() + 9000
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (Date.now() < until) {
      t.equal(await post(`${url}/x`), 200)
      seen.push(s.limiters.get('auto')!.policy.limit)
    }
  }))
  t.comment(seen.filter((v, i) => i === 0 || v !== seen[i - 1]).join(' > '))
  // A pushback near the end is learned LEARN_DELAY_MS after it.
  await new Promise((resolve) => setTimeout(resolve, 500))
  const top = Math.max(...seen)
  t.ok(top > 3, `climbed from 3 to ${top}`)
  t.ok(up.limited >= 1 && up.limited <= 4, `until the upstream pushed back (${up.limited} times)`)
  const end = s.limiters.get('auto')!.policy.limit
  t.ok(end >= 5 && end <= 8, `and settled at ${end}, at or below the upstream's 8`)
})
