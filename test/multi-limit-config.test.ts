// Several limits per route: the list syntax (YAML, comma-separated flag and variable), per-limit
// fields, cost rules that name their limits, and every bad input exits with the field named.
import t, { type Test } from 'tap'
import { loadConfig } from '../src/config/load'
import { costsOf } from '../src/config/cost-rules'
import { parseRoute } from '../src/config/route'
import { ConfigError } from '../src/errors'

function fails (t: Test, fn: () => unknown, field: string, message: RegExp): void {
  try {
    fn()
    t.fail(`expected a ConfigError on ${field}`)
  } catch (err) {
    t.type(err, ConfigError)
    t.equal((err as ConfigError).field, field, `names ${field}`)
    t.match((err as Error).message, message)
    t.notMatch((err as Error).message, /\n/, 'one line')
  }
}

const up = 'https://api.example.com'

t.test('a single rate stays a single limit (no limits field)', async (t) => {
  t.equal(parseRoute({ upstream: up, limit: '180/min' }, 'r').limits, undefined)
  t.equal(parseRoute({ upstream: up, limit: ['180/min'] }, 'r').limits, undefined, 'a one-rate list is the same')
  t.same(parseRoute({ upstream: up, limit: ['180/min'] }, 'r'), parseRoute({ upstream: up, limit: '180/min' }, 'r'))
})

t.test('a YAML list, a flag and a variable give the same limits', async (t) => {
  const yaml = parseRoute({ upstream: up, limit: ['5000/h', '900/min'] }, 'r')
  const flag = loadConfig(['--upstream', up, '--limit', '5000/h,900/min'], {}).routes[0]
  const env = loadConfig([], { SLUICE_UPSTREAM: up, SLUICE_LIMIT: '5000/h, 900/min' }).routes[0]
  t.same(yaml.limits?.map((l) => [l.name, l.rate.count, l.rate.windowMs]), [['5000/h', 5000, 3_600_000], ['900/min', 900, 60_000]])
  t.same(flag.limits, yaml.limits)
  t.same(env.limits, yaml.limits)
  t.same(yaml.limit, { count: 5000, windowMs: 3_600_000 }, 'limit is the first, for what reads one')
  t.equal(yaml.limits?.[1].marginMs, 600, 'each limit gets the margin of its own window')
})

t.test('items as mappings: a per-credential limit with a shared one', async (t) => {
  const r = parseRoute({
    upstream: up,
    limit: [{ rate: '200/min', key: 'header:authorization', name: 'user' }, { rate: '1000/min', key: 'instance', name: 'server', algorithm: 'sliding-window' }]
  }, 'r')
  t.same(r.key, { kind: 'header', header: 'authorization' }, 'the keyed item keys the route')
  t.same(r.limits?.map((l) => [l.name, l.key.kind, l.algorithm]), [['user', 'header', 'token-bucket'], ['server', 'instance', 'sliding-window']])
  const burst = parseRoute({ upstream: up, limit: [{ rate: '10/s', burst: 5 }, '1000/h'] }, 'r')
  t.same(burst.limits?.map((l) => l.burst), [5, 1])
})

t.test('cost rules charge the limits they name; the others 1', async (t) => {
  const r = parseRoute({
    upstream: up,
    algorithm: 'sliding-window',
    limit: ['5000/h', { rate: '900/min', name: 'points' }, { rate: '80/min', name: 'content', cost: [{ method: 'GET', cost: 0 }] }],
    cost: [{ method: 'POST', cost: 5, limits: ['points'] }, { method: 'PATCH', cost: 5, limits: ['900/min'] }]
  }, 'r')
  const names = (r.limits ?? []).map((l) => l.name)
  t.same(costsOf(r.cost, names, 'GET', '/x'), [1, 1, 0])
  t.same(costsOf(r.cost, names, 'POST', '/x'), [1, 5, 1])
  t.same(costsOf(r.cost, names, 'patch', '/x'), [1, 5, 1], 'a limit named by its rate')
})

t.test('bad input names the field', async (t) => {
  fails(t, () => parseRoute({ upstream: up, limit: [] }, 'routes[0]'), 'routes[0].limit', /at least one rate/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', '20/1s'] }, 'routes[0]'), 'routes[0].limit[1]', /same window/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', 'fast'] }, 'routes[0]'), 'routes[0].limit[1]', /expected a rate/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', { rate: '100/min', speed: 1 }] }, 'routes[0]'), 'routes[0].limit[1].speed', /unknown field/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', '100/min'], cost: [{ method: 'POST', cost: 11 }] }, 'routes[0]'), 'routes[0].cost[0].cost', /from 1 to 1 .*10\/s/)
  fails(t, () => parseRoute({ upstream: up, algorithm: 'sliding-window', limit: ['10/s', '100/min'], cost: [{ method: 'POST', cost: 11 }] }, 'routes[0]'), 'routes[0].cost[0].cost', /from 1 to 10 .*limit 10\/s/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', '100/min'], cost: [{ cost: 1, limits: ['7/h'] }] }, 'routes[0]'), 'routes[0].cost[0].limits[0]', /names no limit/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', '100/min'], cost: [{ cost: 0 }] }, 'routes[0]'), 'routes[0].cost[0].cost', /from 1 to/)
  fails(t, () => parseRoute({ upstream: up, limit: '10/s', cost: [{ cost: 1, limits: ['10/s'] }] }, 'routes[0]'), 'routes[0].cost[0].limits', /several limits/)
  fails(t, () => parseRoute({ upstream: up, key: 'instance', limit: [{ rate: '10/s', key: 'header:authorization' }, '100/min'] }, 'routes[0]'), 'routes[0].limit[0].key', /route's key is instance/)
  fails(t, () => parseRoute({ upstream: up, limit: [{ rate: '10/s', key: 'header:a' }, { rate: '100/min', key: 'header:b' }] }, 'routes[0]'), 'routes[0].limit[1].key', /same header/)
  fails(t, () => parseRoute({ upstream: up, limit: ['10/s', '10/s'] }, 'routes[0]'), 'routes[0].limit[1]', /same window/)
  fails(t, () => parseRoute({ upstream: up, limit: [{ rate: '10/s', key: 'header:a' }, { rate: '10/s', key: 'instance' }] }, 'routes[0]'), 'routes[0].limit[1].name', /duplicate limit name/)
  fails(t, () => loadConfig(['--upstream', up, '--limit', '10/s,nope'], {}), '--limit', /item 2: expected a rate/)
})
