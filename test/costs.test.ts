// Weighted costs: rules by method and path, validated with the field named, and a mix of cost-1 and
// cost-5 requests through Sluice and Redis never exceeds the budget in points in any window.
import t from 'tap'
import { request } from 'undici'
import { parseRoute } from '../src/config/route'
import { costOf, pathBelow } from '../src/config/cost-rules'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { startUpstreamProcess } from './helpers/upstream-process'
import { ConfigError } from '../src/errors'

/** Most points in any window of `windowMs` (each hit weighs its points). */
function maxPointsInWindow (hits: Array<{ t: number, points: number }>, windowMs: number): number {
  const s = [...hits].sort((a, b) => a.t - b.t)
  let best = 0
  let sum = 0
  let j = 0
  for (let i = 0; i < s.length; i++) {
    sum += s[i].points
    while (s[i].t - s[j].t >= windowMs) sum -= s[j++].points
    best = Math.max(best, sum)
  }
  return best
}

const base = { name: 'gh', upstream: 'http://127.0.0.1:1', limit: '50/s', algorithm: 'sliding-window' }

t.test('cost rules: first match by method and path below the mount, else 1', async (t) => {
  const route = parseRoute({
    ...base,
    prefix: '/github',
    cost: [
      { method: 'post', path: '/repos/*/bulk', cost: 10 },
      { method: 'POST', path: '/repos/*', cost: 5 },
      { path: '/search/*', cost: '2' }
    ]
  }, 'routes[0]')
  const cost = (method: string, url: string): number => costOf(route.cost, method, pathBelow(route.prefix, url))
  t.equal(cost('POST', '/github/repos/acme/app/issues'), 5, '* spans segments')
  t.equal(cost('POST', '/github/repos/acme/app/bulk'), 10, 'the first matching rule wins')
  t.equal(cost('GET', '/github/repos/acme/app/issues'), 1, 'another method: the default 1')
  t.equal(cost('get', '/github/search/code?q=repos'), 2, 'no method: any method; the query is not part of the path')
  t.equal(cost('POST', '/github/gists'), 1, 'no rule matches: 1')
  t.equal(cost('POST', '/github'), 1, 'the mount itself is /')
  t.equal(cost('POST', '/github/%72epos/acme'), 5, 'a percent-encoded path costs what it decodes to (as the upstream reads it)')
  t.equal(cost('POST', '/git%68ub/repos/acme'), 5, 'also when the mount is encoded (the router decodes it to route)')
  t.same(parseRoute(base, 'routes[0]').cost, [], 'no rules by default')
})

t.test('cost rules are validated and every error names its field', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ path: '/x', cost: 51 }, /^config error: routes\[0\]\.cost\[0\]\.cost: expected an integer from 1 to 50 .*got 51/],
    [{ path: '/x', cost: 0 }, /routes\[0\]\.cost\[0\]\.cost: expected an integer from 1 to 50/],
    [{ path: '/x', cost: 1.5 }, /routes\[0\]\.cost\[0\]\.cost:/],
    [{ path: '/x' }, /routes\[0\]\.cost\[0\]\.cost: .*got undefined/],
    [{ path: 'repos/*', cost: 2 }, /routes\[0\]\.cost\[0\]\.path: expected a path pattern starting with \//],
    [{ method: 'PO ST', path: '/x', cost: 2 }, /routes\[0\]\.cost\[0\]\.method: expected an HTTP method/],
    [{ path: '/x', cost: 2, weight: 3 }, /routes\[0\]\.cost\[0\]\.weight: unknown field/],
    ['POST /x 5', /routes\[0\]\.cost\[0\]: expected a mapping/]
  ]
  for (const [rule, message] of cases) {
    t.throws(() => parseRoute({ ...base, cost: [rule] }, 'routes[0]'), message, JSON.stringify(rule))
  }
  t.throws(() => parseRoute({ ...base, cost: { path: '/x', cost: 2 } }, 'routes[0]'), /routes\[0\]\.cost: expected a list/)
  try {
    parseRoute({ ...base, algorithm: 'token-bucket', burst: 4, cost: [{ path: '/x', cost: 5 }] }, 'routes[2]')
    t.fail('no error')
  } catch (err) {
    t.type(err, ConfigError)
    t.equal((err as ConfigError).field, 'routes[2].cost[0].cost', 'a token bucket: the error names the field')
    t.match((err as Error).message, /from 1 to 4 \(the route's burst: .*raise burst/, 'and says a cost above burst needs a larger burst')
  }
  t.equal(parseRoute({ ...base, algorithm: 'token-bucket', burst: 5, cost: [{ path: '/x', cost: 5 }] }, 'r').cost[0].cost, 5, 'cost up to burst is fine')
})

t.test('a mix of cost-1 and cost-5 requests never exceeds the budget in points', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  for (const algorithm of ['sliding-window', 'token-bucket'] as const) {
    t.test(algorithm, async (t) => {
      const up = await startUpstreamProcess()
      const burst = algorithm === 'token-bucket' ? { burst: 5 } : {}
      const sluice = await startSluice([{ name: 'mix', upstream: up.url, limit: '50/s', algorithm, ...burst, maxWait: '20s', margin: '100ms', cost: [{ method: 'POST', path: '/bulk/*', cost: 5 }] }],
        { redis: redis.url, keyPrefix: redis.prefix() })
      t.teardown(async () => {
        await sluice.close()
        await up.close()
      })
      // The margin is 100 ms instead of 50: on a shared machine the first forwards of a cold process
      // arrive late after their slot. The client's 84 connections are opened first.
      await Promise.all(Array.from({ length: 84 }, async () => { await (await request(`${sluice.url}/_sluice/health`)).body.text() }))
      // 60 GETs (1 point) and 24 POSTs (5 points): 180 points, 3.6 windows of the 50-point budget.
      const calls = Array.from({ length: 84 }, (_, i) => i % 7 < 2
        ? request(`${sluice.url}/bulk/${i}`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })
        : request(`${sluice.url}/item/${i}`))
      const statuses = await Promise.all(calls.map(async (p) => {
        const res = await p
        await res.body.text()
        return res.statusCode
      }))
      t.equal(statuses.filter((s) => s === 200).length, 84, 'every request succeeds')
      const hits = (await up.hits()).map((h) => ({ t: h.t, points: h.method === 'POST' ? 5 : 1 }))
      t.equal(hits.reduce((n, h) => n + h.points, 0), 180, 'all 180 points reached the upstream')
      const peak = maxPointsInWindow(hits, 1000)
      t.ok(peak <= 50, `at most ${peak} points in any 1 s window (budget 50)`)
      const span = Math.max(...hits.map((h) => h.t)) - Math.min(...hits.map((h) => h.t))
      // Counted as requests, 84 would fit in 2 windows; counted as points they need more than 3.
      t.ok(span >= 2 * 1000, `the schedule took ${span.toFixed(0)} ms: the points were charged`)
    })
  }
})
