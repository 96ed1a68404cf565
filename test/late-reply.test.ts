// A reservation's answer read late — Redis decided at once, but this event loop was busy (a burst of
// arrivals) — must not send the request long after the start Redis recorded: the next window is
// counted from that start. The limiter measures lateness in the store's clock too, and books again.
import t from 'tap'
import { parseRoute } from '../src/config/schema'
import { Cancel } from '../src/limiter/cancel'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { RedisStore } from '../src/store/redis-store'
import { startRedis } from './helpers/redis'

function busy (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* the event loop stays blocked, as under a burst */ }
}

t.test('an answer read 200 ms after Redis sent it is a late start: booked again, not sent late', async (t) => {
  const redis = await startRedis()
  const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => {
    await store.close()
    await redis.close()
  })
  // 20/s, margin 100 ms: a start may be at most 50 ms late (checked below with room for a loaded machine).
  const route = parseRoute({ name: 'late', upstream: 'http://127.0.0.1:9', limit: '20/s', algorithm: 'sliding-window', maxWait: '5s' }, 'route')
  const limiter = new RouteLimiter(route, store)
  await store.connect()
  // One reservation on an idle machine first: the limiter learns the store's clock from it.
  await limiter.admit('late', 5000, new Cancel().signal)
  t.equal(limiter.stats.lateRetries, 0, 'an answer read at once is on time')

  // Redis answers within a millisecond; its answer to the next reservation waits here for 200 ms.
  const reserve = store.reserve.bind(store)
  let blocks = 1
  store.reserve = async (...args) => {
    const answer = reserve(...args)
    if (blocks-- > 0) setImmediate(() => busy(200))
    return await answer
  }
  const { reservation } = await limiter.admit('late', 5000, new Cancel().signal)
  t.ok(limiter.stats.lateRetries >= 1, `the late start was given up and booked again (${limiter.stats.lateRetries} time(s))`)
  t.ok(reservation.startMs !== undefined && Math.abs(Date.now() - reservation.startMs) < 75,
    `the request leaves at the start Redis recorded for it (${(Date.now() - (reservation.startMs ?? 0)).toFixed(0)} ms after it)`)
})

t.test('a distant Redis (round trip longer than the margin) is not lateness: nothing is booked twice', async (t) => {
  const redis = await startRedis()
  const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => {
    await store.close()
    await redis.close()
  })
  // 20 ms each way, as to a Redis in another region, for every command (the clock sample on
  // connection too); a 20 ms margin allows 10 ms of lateness.
  const away = async <T>(command: () => Promise<T>): Promise<T> => {
    await new Promise((resolve) => setTimeout(resolve, 20))
    const answer = await command()
    await new Promise((resolve) => setTimeout(resolve, 20))
    return answer
  }
  const time = store.client.time.bind(store.client)
  store.client.time = async () => await away(async () => await time())
  const reserve = store.reserve.bind(store)
  store.reserve = async (...args) => await away(async () => await reserve(...args))
  await store.connect()
  const route = parseRoute({ name: 'far', upstream: 'http://127.0.0.1:9', limit: '100/s', algorithm: 'sliding-window', margin: '20ms', maxWait: '5s' }, 'route')
  const limiter = new RouteLimiter(route, store)
  for (let i = 0; i < 5; i++) await limiter.admit('far', 5000, new Cancel().signal)
  t.equal(limiter.stats.lateRetries, 0, 'five requests, each admitted on its first reservation')
  t.equal(limiter.stats.lateForwarded, 0, 'and none counted as sent late')
})

t.test('a cold instance knows Redis\'s clock before its first reservation: the very first answer read late is caught', async (t) => {
  const redis = await startRedis()
  const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => {
    await store.close()
    await redis.close()
  })
  await store.connect()
  // The TIME samples taken on connection (bounded wait: three round trips on loopback).
  for (let i = 0; i < 100 && store.clockOffset() === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  const offset = store.clockOffset()
  t.ok(offset !== undefined && offset.rttMs < 50, `Redis's clock was sampled on connection (round trip ${offset?.rttMs.toFixed(2)} ms)`)
  const route = parseRoute({ name: 'cold', upstream: 'http://127.0.0.1:9', limit: '20/s', algorithm: 'sliding-window', maxWait: '5s' }, 'route')
  const limiter = new RouteLimiter(route, store)
  const reserve = store.reserve.bind(store)
  let blocks = 1
  store.reserve = async (...args) => {
    const answer = reserve(...args)
    if (blocks-- > 0) setImmediate(() => busy(200))
    return await answer
  }
  // The first reservation of this limiter, its answer held 200 ms: no earlier reservation taught it the clock.
  await limiter.admit('cold', 5000, new Cancel().signal)
  t.ok(limiter.stats.lateRetries >= 1, `booked again (${limiter.stats.lateRetries} time(s)) instead of leaving 200 ms after its start`)
})
