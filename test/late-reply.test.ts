// A reservation's answer read late — Redis decided at once, but this event loop was busy (a burst of
// arrivals) — must not send the request long after the start Redis recorded: the next window is
// counted from that start. The limiter measures lateness in the store's clock too, and books again.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { parseRoute } from '../src/config/route'
import { Cancel } from '../src/limiter/cancel'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { RedisStore } from '../src/store/redis-store'
import { startRedis, type TestRedis } from './helpers/redis'

function busy (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* the event loop stays blocked, as under a burst */ }
}

/** A store of its own (key prefix) on the file's Redis, closed with the test; not connected yet. */
function storeFor (t: Test, redis: TestRedis): RedisStore {
  const store = new RedisStore({ url: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => { await store.close() })
  return store
}

/** Redis answers within a millisecond; its answer to the next reservation waits here for `ms`. */
function holdNextAnswer (store: RedisStore, ms: number): void {
  const reserve = store.reserve.bind(store)
  let blocks = 1
  store.reserve = async (...args) => {
    const answer = reserve(...args)
    if (blocks-- > 0) setImmediate(() => busy(ms))
    return await answer
  }
}

/** A TCP relay on loopback to `target` that delays every chunk by `ms`, in each direction. */
async function delayingRelay (target: URL, ms: number): Promise<{ url: string, close: () => Promise<void> }> {
  const sockets = new Set<Socket>()
  const relay = (from: Socket, to: Socket): void => {
    from.on('data', (chunk) => { setTimeout(() => { if (!to.destroyed) to.write(chunk) }, ms) })
    from.on('close', () => { setTimeout(() => to.destroy(), ms) })
    from.on('error', () => from.destroy())
  }
  const server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname)
    for (const s of [client, upstream]) sockets.add(s)
    relay(client, upstream)
    relay(upstream, client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const url = new URL(target)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return {
    url: url.toString(),
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

function slidingRoute (name: string, limit: string, margin?: string): ReturnType<typeof parseRoute> {
  return parseRoute({ name, upstream: 'http://127.0.0.1:9', limit, algorithm: 'sliding-window', maxWait: '5s', ...(margin === undefined ? {} : { margin }) }, 'route')
}

t.test('late answers', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())

  t.test('an answer read 200 ms after Redis sent it is a late start: recorded again at when it leaves, not sent late', async (t) => {
    const store = storeFor(t, redis)
    // 20/s, margin 100 ms: a start may be at most 50 ms late (checked below with room for a loaded machine).
    const limiter = new RouteLimiter(slidingRoute('late', '20/s'), store)
    await store.connect()
    await limiter.admit('late', 5000, new Cancel().signal)
    t.equal(limiter.stats.lateRetries + limiter.stats.lateMoved, 0, 'an answer read at once is on time')

    holdNextAnswer(store, 200)
    const { reservation } = await limiter.admit('late', 5000, new Cancel().signal)
    // Nothing is booked after it: its record moves to when it leaves, and it leaves now.
    t.equal(limiter.stats.lateMoved, 1, 'the late start was recorded again')
    t.equal(limiter.stats.lateRetries, 0, 'and not booked again')
    const afterRecord = Date.now() - (reservation.ticket ?? 0) / 1000
    t.ok(Math.abs(afterRecord) < 75, `the request leaves at the start Redis now holds for it (${afterRecord.toFixed(0)} ms after it)`)
  })

  t.test('a late start whose next window is booked already is booked again', async (t) => {
    // 1 per second, margin 100 ms: x and y are booked together, y a window and a margin after x's
    // record. Both answers are read 200 ms late: x, recorded at its start + 100 ms (a first window's
    // pad), would leave 100 ms after its record, which y's start does not allow moving it to.
    const store = storeFor(t, redis)
    const limiter = new RouteLimiter(slidingRoute('booked', '1/s'), store)
    await store.connect()
    holdNextAnswer(store, 200)
    const given: boolean[] = []
    const release = store.release.bind(store)
    store.release = async (...args) => {
      const done = await release(...args)
      given.push(done)
      return done
    }
    const [x, y] = await Promise.all([limiter.admit('booked', 5000, new Cancel().signal), limiter.admit('booked', 5000, new Cancel().signal)])
    t.ok(limiter.stats.lateRetries >= 1, `booked again (${limiter.stats.lateRetries} time(s), ${limiter.stats.lateMoved} moved)`)
    // Not the newest (y was booked after it), but it never left: taken out of the list, so the
    // window it was in does not count it beside the start booked again.
    t.same(given, Array(limiter.stats.lateRetries).fill(true), 'each start given up was taken out of the list')
    const starts = [x, y].map((a) => (a.reservation.ticket ?? 0) / 1000).sort((a, b) => a - b)
    t.ok(starts[1] - starts[0] >= 1100, `the two starts as recorded stay a window and a margin apart (${(starts[1] - starts[0]).toFixed(0)} ms)`)
  })

  t.test('a start the window had room for is recorded one margin later: read that much late, it is still on time', async (t) => {
    // 20/s, margin 100 ms: a roomy start is recorded 100 ms after it is made (the pad), and the next
    // window is counted from there. An answer read 90 ms late leaves before that recorded start.
    const store = storeFor(t, redis)
    const limiter = new RouteLimiter(slidingRoute('roomy', '20/s'), store)
    await store.connect()
    await limiter.admit('roomy', 5000, new Cancel().signal)
    holdNextAnswer(store, 90)
    const { reservation } = await limiter.admit('roomy', 5000, new Cancel().signal)
    const leftAfterRecordedMs = Date.now() - (reservation.ticket ?? 0) / 1000
    t.equal(limiter.stats.lateRetries, 0, 'not booked again')
    t.ok(leftAfterRecordedMs <= 50, `left ${leftAfterRecordedMs.toFixed(0)} ms after the start Redis recorded (at most half the margin)`)

    // A token bucket records no such pad: the same late answer is booked again.
    const bucket = new RouteLimiter(parseRoute({ name: 'roomy-tb', upstream: 'http://127.0.0.1:9', limit: '20/s', algorithm: 'token-bucket', burst: 5, maxWait: '5s' }, 'route'), store)
    await bucket.admit('roomy-tb', 5000, new Cancel().signal)
    holdNextAnswer(store, 90)
    await bucket.admit('roomy-tb', 5000, new Cancel().signal)
    t.ok(bucket.stats.lateRetries >= 1, `a token bucket's start read 90 ms late is booked again (${bucket.stats.lateRetries})`)
  })

  t.test('late starts of a burst with room after them: each recorded again, none given back', async (t) => {
    const store = storeFor(t, redis)
    const limiter = new RouteLimiter(slidingRoute('burst', '100/s', '40ms'), store)
    await store.connect()
    await limiter.admit('burst', 5000, new Cancel().signal)
    let releases = 0
    const release = store.release.bind(store)
    store.release = async (...args) => {
      releases++
      return await release(...args)
    }
    // Three reservations sent together, their answers read 100 ms late (one blocked turn of the loop).
    holdNextAnswer(store, 100)
    const admitted = await Promise.all([0, 1, 2].map(async () => await limiter.admit('burst', 5000, new Cancel().signal)))
    t.equal(admitted.length, 3, 'all three admitted')
    t.equal(limiter.stats.lateMoved, 3, 'all three were late, and recorded again at when they left (nothing booked after them)')
    t.equal(releases, 0, 'nothing given back')
  })

  t.test('a distant Redis (round trip longer than the margin) is not lateness: nothing is booked twice', async (t) => {
    // 20 ms each way, as to a Redis in another region, for everything (the clock sample on connection
    // too): a loopback relay that holds every chunk 20 ms. A 20 ms margin allows 10 ms of lateness.
    const far = await delayingRelay(new URL(redis.url), 20)
    t.teardown(far.close)
    const store = new RedisStore({ url: far.url, keyPrefix: redis.prefix() })
    t.teardown(async () => { await store.close() })
    await store.connect()
    const limiter = new RouteLimiter(slidingRoute('far', '100/s', '20ms'), store)
    for (let i = 0; i < 5; i++) await limiter.admit('far', 5000, new Cancel().signal)
    t.equal(limiter.stats.lateRetries, 0, 'five requests, each admitted on its first reservation')
    t.equal(limiter.stats.lateForwarded, 0, 'and none counted as sent late')
  })

  t.test('a cold instance knows Redis\'s clock before its first reservation: the very first answer read late is caught', async (t) => {
    const store = storeFor(t, redis)
    await store.connect()
    // The TIME samples taken on connection (bounded wait: three round trips on loopback).
    for (let i = 0; i < 100 && store.clockOffset() === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 10))
    const offset = store.clockOffset()
    t.ok(offset !== undefined && offset.rttMs < 50, `Redis's clock was sampled on connection (round trip ${offset?.rttMs.toFixed(2)} ms)`)
    const limiter = new RouteLimiter(slidingRoute('cold', '20/s'), store)
    // The first reservation of this limiter, its answer held 200 ms.
    holdNextAnswer(store, 200)
    await limiter.admit('cold', 5000, new Cancel().signal)
    t.ok(limiter.stats.lateRetries + limiter.stats.lateMoved >= 1, `booked or recorded again (${limiter.stats.lateRetries} / ${limiter.stats.lateMoved}) instead of leaving 200 ms after its start`)
  })
})
