// One contract for reservations over several limits (reserve-limits.lua and its memory mirror): the
// earliest start every limit allows, booked in all or none; both stores, both algorithms, mixed keys.
import t from 'tap'
import { maxInWindow } from '../src/emulator'
import { RedisStore } from '../src/store/redis-store'
import type { BucketPolicy, LimitBooking, LimitRef } from '../src/store/bucket-store'
import { startRedis } from './helpers/redis'
import { bothStores } from './helpers/stores'

const ALGOS = ['token-bucket', 'sliding-window'] as const
type Algo = typeof ALGOS[number]

function policy (algorithm: Algo, limit: number, windowMs: number, burst = 1): BucketPolicy {
  return { algorithm, limit, windowMs, burst: algorithm === 'token-bucket' ? burst : 1, marginMs: 10 }
}

const ref = (tag: string, state: string): LimitRef => ({ tag, state })

t.test('several limits', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const stores = bothStores(redis)
  for (const [storeName, make] of stores) {
    for (const algo of ALGOS) {
      t.test(`${storeName} ${algo}`, async (t) => {
        const store = await make()
        t.teardown(() => store.close())

        t.test('one limit through reserveLimits books what reserve books', async (t) => {
          const p = policy(algo, 5, 300, algo === 'token-bucket' ? 2 : 1)
          const single: number[] = []
          const multi: number[] = []
          for (let i = 0; i < 12; i++) {
            const a = await store.reserve('one-single', p, 1, 10_000)
            const b = await store.reserveLimits([{ ref: ref('one-multi', 'l'), policy: p, cost: 1 }], ref('one-multi', ''), 10_000)
            single.push(a.startMs as number)
            multi.push(b.startMs as number)
            t.equal(b.binding, 0)
          }
          // The same schedule, each counted from its first start (the calls themselves take time).
          const rel = (xs: number[]): number[] => xs.map((x) => x - xs[0])
          const off = rel(single).map((w, i) => Math.abs(w - rel(multi)[i])).filter((d) => d > 15)
          t.same(off, [], `the same starts (${rel(single).map((w) => w.toFixed(0)).join(',')} vs ${rel(multi).map((w) => w.toFixed(0)).join(',')})`)
        })

        if (storeName === 'redis') {
          t.test('each limit\'s margin is the team\'s: an instance booking with a wider one widens every instance\'s', async (t) => {
            // The first limit: 2 per 200 ms; instance a measured a late path (margin 60 ms), b a quick
            // one (10 ms). The second (100 per 10 s) never binds here.
            const keyPrefix = redis.prefix()
            const [a, b] = [new RedisStore({ url: redis.url, keyPrefix }), new RedisStore({ url: redis.url, keyPrefix })]
            await Promise.all([a.connect(), b.connect()])
            t.teardown(async () => { await a.close(); await b.close() })
            const quick = policy(algo, 2, 200)
            const bookings = (first: BucketPolicy): LimitBooking[] => [{ ref: ref('team', 'first'), policy: first, cost: 1 }, { ref: ref('team', 'loose'), policy: policy(algo, 100, 10_000), cost: 1 }]
            const pause = ref('team', '')
            if (algo === 'token-bucket') {
              // One start per (200 + margin) / 2 ms: 130 ms with a's margin, 105 with b's own.
              const first = await a.reserveLimits(bookings({ ...quick, marginMs: 60 }), pause, 10_000)
              const second = await b.reserveLimits(bookings(quick), pause, 10_000)
              const third = await b.reserveLimits(bookings(quick), pause, 10_000)
              const spacing = (third.startMs as number) - (second.startMs as number)
              t.ok(first.admitted && third.binding === 0 && spacing >= 129.9 && spacing <= 130.1, `b's starts are spaced by a's margin (${spacing.toFixed(1)} ms, not 105)`)
            } else {
              const first = await a.reserveLimits(bookings({ ...quick, marginMs: 60 }), pause, 10_000)
              await a.reserveLimits(bookings({ ...quick, marginMs: 60 }), pause, 10_000)
              const third = await b.reserveLimits(bookings(quick), pause, 10_000)
              const after = (third.startMs as number) - first.limits[0].ticket / 1000
              t.ok(third.binding === 0 && after >= 259 && after <= 262, `b's start is a window and a's 60 ms after a's recorded start (${after.toFixed(1)} ms, not 210)`)
            }
          })
        }

        t.test('a burst meets every limit: no window of either length holds more than its limit', async (t) => {
          const fast = policy(algo, 10, 200, algo === 'token-bucket' ? 5 : 1)
          const slow = policy(algo, 25, 1000, algo === 'token-bucket' ? 10 : 1)
          const bookings: LimitBooking[] = [{ ref: ref('pair', 'fast'), policy: fast, cost: 1 }, { ref: ref('pair', 'slow'), policy: slow, cost: 1 }]
          const starts: number[] = []
          const bindings = new Set<number>()
          for (let i = 0; i < 60; i++) {
            const r = await store.reserveLimits(bookings, ref('pair', ''), 10_000)
            t.ok(r.admitted, `request ${i} admitted`)
            t.equal(r.limits.length, 2)
            bindings.add(r.binding)
            starts.push(r.startMs as number)
          }
          t.ok(maxInWindow(starts, 200) <= 10, `at most 10 in any 200 ms (${maxInWindow(starts, 200)})`)
          t.ok(maxInWindow(starts, 1000) <= 25, `at most 25 in any 1000 ms (${maxInWindow(starts, 1000)})`)
          t.ok(bindings.has(1), 'the 25/s limit binds once the burst is spent')
          const span = Math.max(...starts) - Math.min(...starts)
          if (algo === 'sliding-window') {
            // 25 per 1010 ms: the 51st..60th start two windows after the first 25 did.
            t.ok(span >= 2 * 1010 - 50 && span < 3 * 1010, `the schedule spans ${span.toFixed(0)} ms`)
          } else {
            // The slower bucket binds: its burst of 10 at once, then one every 1010 / (25 - 10 + 1) ms.
            t.ok(Math.abs(span - 50 * 1010 / 16) < 30, `the schedule spans ${span.toFixed(0)} ms, the slower bucket allows ${(50 * 1010 / 16).toFixed(0)} ms`)
          }
        })

        t.test('a wait beyond the bound books nothing in any limit', async (t) => {
          const a = policy(algo, 3, 1000, algo === 'token-bucket' ? 3 : 1)
          const b = policy(algo, 100, 1000, algo === 'token-bucket' ? 100 : 1)
          const bookings: LimitBooking[] = [{ ref: ref('bound', 'a'), policy: a, cost: 1 }, { ref: ref('bound', 'b'), policy: b, cost: 1 }]
          for (let i = 0; i < 3; i++) t.ok((await store.reserveLimits(bookings, ref('bound', ''), 0)).admitted)
          const refused = await store.reserveLimits(bookings, ref('bound', ''), 100)
          t.notOk(refused.admitted)
          t.equal(refused.ticket, undefined)
          t.equal(refused.binding, 0, 'the limit that could not be met')
          t.ok(refused.waitMs > 100)
          const peek = await store.peekLimit(ref('bound', 'b'), ref('bound', ''), b)
          t.equal(peek.booked, 3, 'the other limit holds only the three admitted')
        })

        t.test('a cost of 0 leaves a limit untouched; costs differ per limit', async (t) => {
          const points = policy(algo, 10, 1000, algo === 'token-bucket' ? 10 : 1)
          const content = policy(algo, 2, 1000, algo === 'token-bucket' ? 2 : 1)
          const get = (): LimitBooking[] => [{ ref: ref('cost', 'points'), policy: points, cost: 1 }, { ref: ref('cost', 'content'), policy: content, cost: 0 }]
          const post = (): LimitBooking[] => [{ ref: ref('cost', 'points'), policy: points, cost: 5 }, { ref: ref('cost', 'content'), policy: content, cost: 1 }]
          for (let i = 0; i < 3; i++) t.equal((await store.reserveLimits(get(), ref('cost', ''), 0)).waitMs, 0, 'a GET costs nothing in content')
          t.equal((await store.peekLimit(ref('cost', 'content'), ref('cost', ''), content)).booked, 0)
          const r = await store.reserveLimits(post(), ref('cost', ''), 0)
          t.ok(r.admitted, 'a POST takes 5 points and 1 content')
          t.equal((await store.peekLimit(ref('cost', 'points'), ref('cost', ''), points)).booked, 8)
          t.equal((await store.peekLimit(ref('cost', 'content'), ref('cost', ''), content)).booked, 1)
          const over = await store.reserveLimits(post(), ref('cost', ''), 0)
          t.notOk(over.admitted, 'a second POST exceeds the 10 points')
          t.equal(over.binding, 0)
        })

        t.test('mixed keys: a per-credential limit and a shared one', async (t) => {
          const mine = policy(algo, 4, 500, algo === 'token-bucket' ? 4 : 1)
          const shared = policy(algo, 6, 500, algo === 'token-bucket' ? 6 : 1)
          const forCred = (c: string): LimitBooking[] => [{ ref: ref('mixed', `${c}:mine`), policy: mine, cost: 1 }, { ref: ref('mixed', 'shared'), policy: shared, cost: 1 }]
          const starts: Record<string, number[]> = { a: [], b: [] }
          for (let i = 0; i < 12; i++) {
            const c = i % 3 === 0 ? 'b' : 'a'
            const r = await store.reserveLimits(forCred(c), ref('mixed', `pause-${c}`), 10_000)
            starts[c].push(r.startMs as number)
          }
          t.ok(maxInWindow(starts.a, 500) <= 4, `credential a: ${maxInWindow(starts.a, 500)} <= 4 per 500 ms`)
          t.ok(maxInWindow(starts.b, 500) <= 4, `credential b: ${maxInWindow(starts.b, 500)} <= 4 per 500 ms`)
          const all = [...starts.a, ...starts.b]
          t.ok(maxInWindow(all, 500) <= 6, `both: ${maxInWindow(all, 500)} <= 6 per 500 ms`)
        })

        t.test('each limit gives its part back: a token bucket\'s while it is the newest, a sliding window\'s wherever it is', async (t) => {
          const a = policy(algo, 2, 1000, algo === 'token-bucket' ? 2 : 1)
          const b = policy(algo, 5, 1000, algo === 'token-bucket' ? 5 : 1)
          const bookings: LimitBooking[] = [{ ref: ref('give', 'a'), policy: a, cost: 1 }, { ref: ref('give', 'b'), policy: b, cost: 1 }]
          const r = await store.reserveLimits(bookings, ref('give', ''), 0)
          for (let i = 0; i < 2; i++) t.ok(await store.releaseLimit(bookings[i], r.limits[i].ticket), `limit ${i} given back`)
          t.equal((await store.peekLimit(ref('give', 'a'), ref('give', ''), a)).booked, 0)
          const r1 = await store.reserveLimits(bookings, ref('give', ''), 0)
          await store.reserveLimits(bookings, ref('give', ''), 0)
          if (algo === 'token-bucket') t.notOk(await store.releaseLimit(bookings[0], r1.limits[0].ticket), 'an older one is not')
          else t.ok(await store.releaseLimit(bookings[0], r1.limits[0].ticket), 'an older one is taken out of the list')
        })

        t.test('the request bucket\'s pause holds every limit back', async (t) => {
          const p = policy(algo, 50, 1000, algo === 'token-bucket' ? 50 : 1)
          const bookings: LimitBooking[] = [{ ref: ref('paused', 'a'), policy: p, cost: 1 }, { ref: ref('paused', 'b'), policy: policy(algo, 60, 2000), cost: 1 }]
          await store.pauseLimit(ref('paused', ''), 'paused', 300)
          const r = await store.reserveLimits(bookings, ref('paused', ''), 10_000)
          t.ok(r.waitMs > 250 && r.waitMs <= 300, `waits for the pause (${r.waitMs} ms)`)
          t.equal((await store.peekLimit(ref('paused', 'a'), ref('paused', ''), p)).remaining, 0, 'peek shows the pause')
        })
      })
    }
  }
})
