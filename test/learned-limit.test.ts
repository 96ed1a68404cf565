// Issue 20: a limit nobody published, learned from the upstream's pushback and shared by the team.
// A strict emulator below the configured limit; windows of 1 s.
import t from 'tap'
import { request } from 'undici'
import { startEmulator } from '../src/emulator'
import { nextProbe } from '../src/limiter/learned-limit'
import { startSluice, type TestSluice } from './helpers/sluice'

async function post (url: string): Promise<number> {
  const res = await request(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"content":"x"}' })
  await res.body.text()
  return res.statusCode
}

async function burst (sluices: TestSluice[], path: string, n: number): Promise<number[]> {
  return await Promise.all(Array.from({ length: n }, async (_, i) => await post(`${sluices[i % sluices.length].url}${path}`)))
}

for (const profile of ['zulip', 'testrail', 'github', 'testmo'] as const) {
  t.test(`${profile}: configured at twice the upstream's limit, Sluice learns it from the first pushback`, async (t) => {
    const emulator = await startEmulator({ profile, limit: 5, windowMs: 1000, testmoPenaltyMs: 1000 })
    // Testmo's 429 has no Retry-After (60 s in real life): a short minPause stands in for it here.
    const s = await startSluice([{ name: 'api', upstream: emulator.url, limit: '10/s', profile, maxWait: '30s', minPause: '1s', maxPause: '2s' }])
    t.teardown(async () => { await s.close(); await emulator.close() })
    const statuses = await burst([s], '/api/x', 20)
    t.same(statuses, Array(20).fill(200), 'every client request succeeds')
    const limited = emulator.stats().limited
    t.ok(limited <= 3, `the upstream answered ${limited} 429s (before learning: one per second of the run)`)
    const view = s.limiters.get('api')!.limits.view()
    t.ok(view.learned !== undefined && view.learned <= 5 && view.learned >= 4, `learned ${view.learned} of the upstream's 5`)
    t.equal(s.limiters.get('api')!.policy.limit, view.learned, 'the limit in force is the learned one')
    t.ok(s.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('limit in force')), 'the change is logged')
  })
}

t.test('nextProbe: one step after quiet windows, doubled waits after failed probes, never above the cap', async (t) => {
  const ctx = { cap: 20, windowMs: 1000, quietWindows: 5, maxStep: Infinity }
  const rec = { limit: 10, windowMs: 1000, kind: 'learned' as const, sinceChangeMs: 6000, sincePushbackMs: 6000, failedProbes: 0 }
  t.same(nextProbe(rec, ctx), { op: 'raise', from: 10, to: 11, windowMs: 1000, kind: 'learned', quietMs: 5000 })
  t.equal(nextProbe({ ...rec, sincePushbackMs: 4000 }, ctx), undefined, 'not within 5 windows of a pushback')
  t.equal(nextProbe({ ...rec, failedProbes: 1 }, ctx), undefined, 'a failed probe doubles the quiet time')
  t.equal(nextProbe({ ...rec, limit: 19 }, ctx)?.op === 'raise' && (nextProbe({ ...rec, limit: 19 }, ctx) as { to?: number }).to, undefined, 'reaching the configured limit forgets the learned one')
  t.equal((nextProbe({ ...rec, limit: 100 }, { ...ctx, cap: 200, maxStep: 1 }) as { to: number }).to, 101, 'a careful profile steps by one')
  t.equal((nextProbe({ ...rec, limit: 100 }, { ...ctx, cap: 200 }) as { to: number }).to, 105, 'else by a twentieth')
  t.equal((nextProbe({ ...rec, kind: 'shared', sinceChangeMs: 1000, sincePushbackMs: 1000 }, ctx) as { to: number }).to, 12, 'shared: back after one window, by a tenth of the cap')
})
