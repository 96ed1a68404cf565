// RouteLimiter.setLimit: a limit adopted at run time (announced by the upstream) is the one the
// limiter books with, the fair scheduler paces by and refusals name; the route's config is untouched.
import t from 'tap'
import { parseRoute } from '../src/config/route'
import { SluiceError } from '../src/errors'
import { Cancel } from '../src/limiter/cancel'
import { FairScheduler } from '../src/limiter/fair-scheduler'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { MemoryStore } from '../src/store/memory-store'

const upstream = 'http://127.0.0.1:9'

t.test('the policy follows setLimit; the config does not', async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  const tb = new RouteLimiter(parseRoute({ name: 'tb', upstream, limit: '10/s', algorithm: 'token-bucket', burst: 5 }, 'route'), store)
  tb.setLimit(3, 2000)
  t.same([tb.policy.limit, tb.policy.burst, tb.policy.windowMs], [3, 3, 1000], 'limit and burst adopted; a fixed route keeps its window')
  t.same([tb.route.limit.count, tb.route.burst], [10, 5], 'the route config is as configured')
  tb.setLimit(20, 1000)
  t.same([tb.policy.limit, tb.policy.burst], [20, 5], 'the burst never exceeds the configured one')

  const auto = new RouteLimiter(parseRoute({ name: 'auto', upstream, limit: 'auto' }, 'route'), store)
  auto.setLimit(100, 10_000)
  t.same([auto.policy.limit, auto.policy.windowMs, auto.policy.marginMs], [100, 10_000, 100], 'limit: auto adopts the window, with a margin of 1/100 of it')
  auto.setLimit(100, 1000)
  t.equal(auto.policy.marginMs, 50, 'at least 50 ms')
  t.equal(auto.route.limit.windowMs, 60_000, 'the config keeps its window')
})

t.test('after setLimit the fair scheduler paces by the new limit and refusals name it', async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  const route = parseRoute({ name: 'sw', upstream, limit: '10/s', algorithm: 'sliding-window', margin: '100ms', maxWait: '5s' }, 'route')
  const limiter = new RouteLimiter(route, store)
  const fair = new FairScheduler(route, limiter)
  t.teardown(() => fair.close())
  t.equal(fair.slotMs, 110, 'a slot is (window + margin) / limit')
  t.equal(fair.lookaheadUnits, 1)
  limiter.setLimit(5, 1000)
  t.equal(fair.slotMs, 220, 'half the limit: slots twice as long')
  t.equal(fair.lookaheadUnits, 1)
  limiter.setLimit(50, 1000)
  t.equal(fair.slotMs, 22)
  t.equal(fair.lookaheadUnits, 2, 'slots shorter than the look-ahead\'s 40 ms: two units ahead')
  limiter.setLimit(5, 1000)

  // Five of one client: one booked, four held. A sixth could not start within 1 s at 5/s (the five
  // ahead fill the window), though it could at the configured 10/s: refused on arrival.
  const cancels = Array.from({ length: 5 }, () => new Cancel())
  const five = cancels.map(async (c) => await fair.admit({ bucket: 'sw', client: 'x', priority: 'normal', cost: 1, maxWaitMs: 5000, signal: c.signal }).catch((err: unknown) => err))
  const refused = await fair.admit({ bucket: 'sw', client: 'x', priority: 'normal', cost: 1, maxWaitMs: 1000, signal: new Cancel().signal }).catch((err: unknown) => err)
  t.ok(refused instanceof SluiceError, 'refused')
  t.match(refused, { code: 'RATE_LIMITED', details: { limit: 5, window_s: 1, client: 'x' } }, 'by the fair scheduler, naming the limit in force')
  t.equal(fair.stats.refusedAtArrival, 1, 'on arrival')
  for (const c of cancels) c.abort()
  await Promise.all(five)

  // The limiter itself books with the new limit, and says so.
  for (let i = 0; i < 5; i++) await limiter.admit('direct', 0, new Cancel().signal)
  const full = await limiter.admit('direct', 0, new Cancel().signal).catch((err: unknown) => err)
  t.match(full, { code: 'RATE_LIMITED', details: { limit: 5, window_s: 1 } }, 'the sixth of five per second has no room')
})
