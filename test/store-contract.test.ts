// One contract, every store, both algorithms: what a reservation promises. The Redis store runs it
// against each deployment it supports: one server, a 3-primary cluster and a Sentinel-guarded primary
// (one of each per file; the last two skip with a message where redis-server or redis-cli is absent).
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { maxInWindow } from '../src/emulator'
import { MemoryStore } from '../src/store/memory-store'
import { RedisStore } from '../src/store/redis-store'
import { hasClientPresence, hasStartRecorder, type BucketPolicy, type BucketStore, type StateLossNotice, type TeamBoard } from '../src/store/bucket-store'
import { startRedis } from './helpers/redis'
import { startRedisCluster } from './helpers/redis-cluster'
import { missingRedisBinaries, until } from './helpers/redis-node'
import { startRedisSentinel } from './helpers/redis-sentinel'

const ALGOS = ['token-bucket', 'sliding-window'] as const

function policy (algorithm: BucketPolicy['algorithm'], limit: number, windowMs: number, burst = 1): BucketPolicy {
  return { algorithm, limit, windowMs, burst: algorithm === 'token-bucket' ? burst : 1, marginMs: 10 }
}

type Store = BucketStore & TeamBoard & Partial<StateLossNotice>
/** A store of one kind; stores made with the same `prefix` share their state (Redis keys). */
type Make = (prefix?: string) => Promise<Store>

const missing = missingRedisBinaries()

t.test('contract', async (t) => {
  const [redis, cluster, sentinel] = await Promise.all([
    startRedis(),
    missing === undefined ? startRedisCluster() : undefined,
    missing === undefined ? startRedisSentinel() : undefined
  ])
  t.teardown(async () => { await Promise.all([redis.close(), cluster?.close(), sentinel?.close()]) })
  if (missing !== undefined) t.comment(`cluster and sentinel topologies skipped: ${missing}`)

  const redisStore = (url: string): Make => async (prefix = redis.prefix()) => {
    const s = new RedisStore({ url, keyPrefix: prefix })
    await s.connect()
    return s
  }
  const memory = new MemoryStore()
  const stores: Array<[string, Make]> = [['memory', async (prefix) => prefix === undefined ? new MemoryStore() : memory], ['redis', redisStore(redis.url)]]
  if (cluster !== undefined) stores.push(['redis cluster', redisStore(`redis+cluster://${cluster.seeds.map((s) => `${s.host}:${s.port}`).join(',')}`)])
  if (sentinel !== undefined) stores.push(['redis sentinel', redisStore(`redis+sentinel://${sentinel.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}/${sentinel.name}`)])
  t.teardown(() => memory.close())

  for (const [storeName, make] of stores) {
    for (const algo of ALGOS) {
      t.test(`${storeName} ${algo}`, async (t) => {
        const store = await make()
        t.teardown(() => store.close())

        t.test('a burst is spread so no window holds more than the limit', async (t) => {
          const p = policy(algo, 10, 200, algo === 'token-bucket' ? 4 : 1)
          const starts: number[] = []
          const calledAt: number[] = []
          let first = 0
          for (let i = 0; i < 35; i++) {
            calledAt.push(Date.now())
            const r = await store.reserve('burst', p, 1, 10_000)
            t.ok(r.admitted, `request ${i} admitted`)
            if (r.waitMs === 0) first++
            starts.push(r.startMs as number)
          }
          // At least the burst starts without waiting (more only when the calls themselves took longer
          // than an emission interval, which a loaded machine can make happen); the window check bounds it.
          t.ok(first >= (algo === 'token-bucket' ? 4 : 10), `the bucket lets its burst start at once (${first} without waiting)`)
          t.ok(maxInWindow(starts, 200) <= 10, `max in any 200 ms window is ${maxInWindow(starts, 200)} <= 10`)
          if (algo === 'token-bucket') {
            // 4 at once, then one every 210 / (10 - 4 + 1) = 30 ms. Not sooner: the window check above. Not
            // later (wasted budget): each start is at most 30 ms after the one before it, or, when its call
            // itself came later than that (a loaded machine), when the call came.
            const late = starts.slice(4).map((s, i) => ({ s, prev: starts[i + 3], at: calledAt[i + 4] }))
              .filter(({ s, prev, at }) => s > Math.max(prev + 30, at) + 25)
            t.same(late, [], `no start later than 30 ms after the one before it or than its call (gaps ${starts.slice(4).map((s, i) => (s - starts[i + 3]).toFixed(0)).join(' ')})`)
            const span = Math.max(...starts) - Math.min(...starts)
            const callsMs = calledAt[calledAt.length - 1] - calledAt[0]
            if (callsMs < (35 - 4) * 30) t.ok(span > (35 - 4) * 30 - 25, `calls faster than the schedule: it spans ${span.toFixed(0)} ms, the budget allows ${(35 - 4) * 30} ms`)
          } else {
            // Each start is the one `limit` before it plus window + margin (210 ms): not sooner, which would be
            // over the limit, and not later, which would waste the budget. The first ten start when their calls
            // arrive, so a loaded machine spreads them and every later window repeats that spread; the span
            // then grows with it and is not the thing to check.
            const sorted = [...starts].sort((a, b) => a - b)
            const gaps = sorted.slice(10).map((s, i) => s - sorted[i])
            const off = gaps.filter((g) => g < 210 - 1 || g > 210 + 25)
            t.same(off, [], `each start is 210 ms after the one ten before it (gaps ${Math.min(...gaps).toFixed(0)}–${Math.max(...gaps).toFixed(0)} ms)`)
          }
        })

        t.test('a wait beyond the bound reserves nothing', async (t) => {
          const p = policy(algo, 5, 1000, 5)
          for (let i = 0; i < 5; i++) t.ok((await store.reserve('bound', p, 1, 0)).admitted)
          const refused = await store.reserve('bound', p, 1, 100)
          t.notOk(refused.admitted, 'refused')
          t.equal(refused.ticket, undefined)
          t.ok(refused.waitMs > 100, `it says how long it would have waited (${refused.waitMs} ms)`)
          t.equal(refused.remaining, 0)
          const again = await store.reserve('bound', p, 1, 5000)
          t.ok(again.admitted)
          t.ok(Math.abs(again.waitMs - refused.waitMs) < 50, 'the refusal did not move the schedule')
        })

        t.test('remaining counts down and reset is within the window', async (t) => {
          const p = policy(algo, 3, 1000, algo === 'token-bucket' ? 3 : 1)
          const a = await store.reserve('remaining', p, 1, 0)
          const b = await store.reserve('remaining', p, 1, 0)
          const c = await store.reserve('remaining', p, 1, 0)
          t.same([a.remaining, b.remaining, c.remaining], [2, 1, 0])
          t.ok(c.resetMs > 0 && c.resetMs <= 1010 * 3, `reset ${c.resetMs} ms`)
        })

        t.test('the newest reservation can be given back; an older one only in a sliding window', async (t) => {
          const p = policy(algo, 2, 1000)
          await store.reserve('release', p, 1, 10_000)
          await sleep(100)
          await store.reserve('release', p, 1, 10_000)
          // Sliding window: starts 0 and 100 ms (each recorded one pad later), then 1 s and 1.1 s.
          const older = await store.reserve('release', p, 1, 10_000)
          const newest = await store.reserve('release', p, 1, 10_000)
          t.ok(newest.waitMs > 0)
          t.equal(await store.release('release', p, 1, newest.ticket as number), true, 'the newest is given back')
          const next = await store.reserve('release', p, 1, 10_000)
          t.ok(Math.abs(next.waitMs - newest.waitMs) < 50, `the next request takes the freed slot (${next.waitMs.toFixed(0)} vs ${newest.waitMs.toFixed(0)} ms)`)
          if (algo === 'token-bucket') {
            t.equal(await store.release('release', p, 1, older.ticket as number), false, 'an older one stays (the bucket is its next start)')
            return
          }
          // Its request never left: the list without it is what the upstream saw, and the 1 s window
          // from 100 ms holds one start, so the next reservation needs no third window.
          t.equal(await store.release('release', p, 1, older.ticket as number), true, 'an older one is taken out of the list')
          t.equal(await store.release('release', p, 1, older.ticket as number), false, 'once: nothing is taken that was not booked')
          t.equal(await store.release('release', p, 2, next.ticket as number), false, 'two entries asked for where one was booked: none is taken')
          const again = await store.reserve('release', p, 1, 10_000)
          t.ok(again.waitMs < next.waitMs + 50, `the freed start is booked again in the second window (${again.waitMs.toFixed(0)} ms, not a window after ${next.waitMs.toFixed(0)})`)
          const after = await store.reserve('release', p, 1, 10_000)
          t.ok(after.waitMs > older.waitMs + 900, `the second window is full again (${after.waitMs.toFixed(0)} ms)`)
        })

        t.test('a cost takes several units in one reservation', async (t) => {
          const p = policy(algo, 6, 1000, algo === 'token-bucket' ? 6 : 1)
          t.ok((await store.reserve('cost', p, 5, 0)).admitted, 'cost 5 of 6 fits at once')
          const r = await store.reserve('cost', p, 2, 0)
          t.notOk(r.admitted, 'cost 2 more does not fit now')
          t.ok((await store.reserve('cost', p, 1, 0)).admitted, 'cost 1 still does')
        })

        t.test('a pause holds every reservation back, and a shorter pause never shortens it', async (t) => {
          const p = policy(algo, 100, 1000, algo === 'token-bucket' ? 100 : 1)
          t.ok((await store.reserve('pause', p, 1, 0)).waitMs < 5)
          const left = await store.pause('pause', 300)
          t.ok(left > 290 && left <= 300, `paused for ${left} ms`)
          const shorter = await store.pause('pause', 50)
          t.ok(shorter > 250, `a shorter pause keeps the longer one (${shorter} ms left)`)
          const r = await store.reserve('pause', p, 1, 10_000)
          t.ok(r.waitMs > 250 && r.waitMs <= 300, `the next start waits out the pause (${r.waitMs} ms)`)
          t.notOk((await store.reserve('pause', p, 1, 100)).admitted, 'and one that cannot wait that long is refused')
          await store.pause('pause', 600)
          const longer = await store.reserve('pause', p, 1, 10_000)
          t.ok(longer.waitMs > 550, `a longer pause extends it (${longer.waitMs} ms)`)
        })

        if (algo === 'sliding-window') {
          t.test('a start the window had room for is recorded one margin later; one that waited for its slot is not', async (t) => {
            // limit 3 per 200 ms, margin 10 ms: a window is 210 ms.
            const p = policy(algo, 3, 200)
            const burst = [await store.reserve('pad', p, 1, 10_000), await store.reserve('pad', p, 1, 10_000), await store.reserve('pad', p, 1, 10_000)]
            t.ok(burst.every((r) => r.waitMs < 5), 'the burst starts at once')
            const next = await store.reserve('pad', p, 1, 10_000)
            const afterBurst = (next.startMs as number) - (burst[0].startMs as number)
            t.ok(afterBurst >= 219 && afterBurst <= 222, `the next window begins a window and a margin after the burst's record (${afterBurst.toFixed(1)} ms, not 210)`)
            await store.reserve('pad', p, 1, 10_000)
            await store.reserve('pad', p, 1, 10_000)
            const third = await store.reserve('pad', p, 1, 10_000)
            const afterWaited = (third.startMs as number) - (next.startMs as number)
            t.ok(afterWaited >= 209 && afterWaited <= 212, `a start that waited for its slot is recorded as it is: the window after it is 210 ms (${afterWaited.toFixed(1)} ms)`)
            // A busy bucket's start booked after its slot came due (the start 3 places back is more than a
            // window old): the window had room, but it is no first window, so no pad.
            await new Promise((resolve) => setTimeout(resolve, Math.max(0, (third.startMs as number) + 240 - Date.now())))
            const due = await store.reserve('pad', p, 1, 10_000)
            t.ok(due.waitMs < 5, 'booked after its slot came due: starts at once')
            t.ok((due.ticket as number) / 1000 - (due.startMs as number) < 1, `recorded as it starts, not a margin later (${((due.ticket as number) / 1000 - (due.startMs as number)).toFixed(1)} ms)`)
          })
        }

        t.test('a late start is recorded again at when it leaves, unless a start booked since counts against that', async (t) => {
          // limit 2 per 200 ms, margin 10 ms: a window is 210 ms.
          const p = policy(algo, 2, 200)
          const a = await store.reserve('late', p, 1, 10_000)
          if (algo === 'token-bucket') {
            t.equal(await store.postpone('late', p, 1, a.ticket as number, 50), undefined, 'a token bucket books from the bucket, not from a start: never moved')
            return
          }
          const moved = await store.postpone('late', p, 1, a.ticket as number, 50)
          const ahead = (moved ?? 0) / 1000 - Date.now()
          t.ok(moved !== undefined && ahead > 30 && ahead <= 55, `nothing booked after it: recorded 50 ms from the store's now (${ahead.toFixed(1)} ms from here)`)
          // b joins a's record (never before the newest); c and d are the next window, 210 ms after it.
          await store.reserve('late', p, 1, 10_000)
          const c = await store.reserve('late', p, 1, 10_000)
          await store.reserve('late', p, 1, 10_000)
          t.equal(Math.round((c.ticket as number) - (moved as number)), 210_000, 'the next window is counted from the new record')
          t.equal(await store.postpone('late', p, 1, moved as number, 100), undefined, 'moved 50 ms later, it would be 160 ms before the start 2 places after it: it stays')
          t.equal(await store.postpone('late', p, 1, c.ticket as number, 0), undefined, 'a start still ahead is not late: it stays')
          if (algo !== 'sliding-window') return
          // Starts booked when the margin was 10 ms (x at 0 and y at 50 ms, each recorded a pad later;
          // z a window of 210 ms after x). The margin is 30 ms now: x and z are closer than today's
          // window, but moving y 20 ms later adds no start to a window that holds x or z with it.
          const name = `narrower-${Math.random().toString(36).slice(2)}`
          const x = await store.reserve(name, p, 1, 10_000)
          await sleep(50)
          const y = await store.reserve(name, p, 1, 10_000)
          const z = await store.reserve(name, p, 1, 10_000)
          t.equal(Math.round((z.ticket as number) - (x.ticket as number)), 210_000, 'z is a window after x')
          const wider = { ...p, marginMs: 30 }
          const movedY = await store.postpone(name, wider, 1, y.ticket as number, 20)
          t.ok(movedY !== undefined, 'y moves: no window of 230 ms holding its new time and not its old one holds more than 2')
          t.ok((z.ticket as number) - (movedY ?? Infinity) < 230_000, 'z stays closer to it than a window of today\'s margin, as it was to x')
        })

        if (algo === 'sliding-window' && storeName !== 'memory') {
          t.test('the margin is the team\'s: an instance booking with a wider one widens every instance\'s for a window', async (t) => {
            // limit 2 per 200 ms; instance a measured a late path (margin 60 ms), b a quick one (10 ms).
            const prefix = `team-margin-${Math.random().toString(36).slice(2)}:`
            const [a, b] = [await make(prefix), await make(prefix)]
            t.teardown(async () => { await a.close(); await b.close() })
            const wide = { ...policy(algo, 2, 200), marginMs: 60 }
            const first = await a.reserve('team', wide, 1, 10_000)
            await a.reserve('team', wide, 1, 10_000)
            const third = await b.reserve('team', policy(algo, 2, 200), 1, 10_000)
            const after = (third.startMs as number) - (first.ticket as number) / 1000
            t.ok(after >= 259 && after <= 262, `b's start is a window and a's 60 ms after a's recorded start (${after.toFixed(1)} ms, not 210)`)
            await new Promise((resolve) => setTimeout(resolve, Math.max(0, (third.startMs as number) + 300 - Date.now())))
            // A window later nobody booked with 60 ms: b's own margin again (the start 2 back is a's second).
            const fourth = await b.reserve('team', policy(algo, 2, 200), 1, 10_000)
            const fifth = await b.reserve('team', policy(algo, 2, 200), 1, 10_000)
            const sixth = await b.reserve('team', policy(algo, 2, 200), 1, 10_000)
            const own = (sixth.startMs as number) - (fourth.ticket as number) / 1000
            t.ok(fifth.admitted && own >= 209 && own <= 212, `then b's own margin: 210 ms after the start 2 back (${own.toFixed(1)} ms)`)
          })
        }

        t.test('a start sent later than its margin covers pushes the next starts back (token bucket)', async (t) => {
          // limit 2 per 200 ms, burst 1: one start per (200 + 10) / 2 = 105 ms.
          const p = policy(algo, 2, 200)
          const name = `pushed-${Math.random().toString(36).slice(2)}`
          if (algo === 'sliding-window') {
            t.equal(await store.pushBack(name, p, 50), false, 'a sliding window is not pushed back (its list of starts cannot move)')
            return
          }
          const first = await store.reserve(name, p, 1, 10_000)
          const second = await store.reserve(name, p, 1, 10_000)
          t.ok(await store.pushBack(name, p, 50), 'pushed back')
          const third = await store.reserve(name, p, 1, 10_000)
          const gap = (third.startMs as number) - (second.startMs as number)
          t.ok(first.admitted && gap >= 154.9 && gap <= 156, `the next start comes the 50 ms later: 155 ms after the one booked before (${gap.toFixed(1)} ms)`)
          // An idle bucket: the late start counts as booked when it left, so nothing starts within an interval.
          await new Promise((resolve) => setTimeout(resolve, 400))
          // Bounded by when the push back was sent and when its answer came (a busy machine may read it late).
          const sentAt = Date.now()
          t.ok(await store.pushBack(name, p, 1), 'pushed back when idle')
          const answeredAt = Date.now()
          const fourth = await store.reserve(name, p, 1, 10_000)
          const start = fourth.startMs as number
          t.ok(start >= sentAt + 95 && start <= answeredAt + 110, `the next start is an interval later, not at once (${(start - sentAt).toFixed(1)} ms after the push back was sent, ${(start - answeredAt).toFixed(1)} after its answer)`)
          // A bucket whose state is gone (idle past its TTL, or swept): held again, with the same bound.
          const gone = `${name}-gone`
          t.ok(await store.pushBack(gone, p, 1), 'pushed back without state')
          const goneAt = Date.now()
          const fresh = await store.reserve(gone, p, 1, 10_000)
          const afterGone = (fresh.startMs as number) - goneAt
          t.ok(afterGone >= 95 && afterGone <= 110, `its next start is an interval later too (${afterGone.toFixed(1)} ms)`)
        })

        if (algo === 'token-bucket' && storeName !== 'memory') {
          t.test('the margin is the team\'s: an instance booking with a wider one spaces every instance\'s starts for a window', async (t) => {
            // limit 2 per 200 ms, burst 1: one start per (200 + margin) / 2 ms. Instance a measured a
            // late path (margin 60 ms: 130 ms apart), b a quick one (10 ms: 105 ms apart).
            const prefix = `team-margin-${Math.random().toString(36).slice(2)}:`
            const [a, b] = [await make(prefix), await make(prefix)]
            t.teardown(async () => { await a.close(); await b.close() })
            const quick = policy(algo, 2, 200)
            const first = await a.reserve('team', { ...quick, marginMs: 60 }, 1, 10_000)
            const second = await b.reserve('team', quick, 1, 10_000)
            const third = await b.reserve('team', quick, 1, 10_000)
            const spacing = (third.startMs as number) - (second.startMs as number)
            t.ok(first.admitted && spacing >= 129.9 && spacing <= 130.1, `b's starts are spaced by a's margin (${spacing.toFixed(1)} ms, not 105)`)
            // A window and margin (260 ms) after a booked, nobody has booked with 60 ms: b's own spacing again.
            await new Promise((resolve) => setTimeout(resolve, 300))
            const fourth = await b.reserve('team', quick, 1, 10_000)
            const fifth = await b.reserve('team', quick, 1, 10_000)
            const own = (fifth.startMs as number) - (fourth.startMs as number)
            t.ok(own >= 104.9 && own <= 105.1, `then b's own margin: 105 ms apart (${own.toFixed(1)} ms)`)
          })
        }

        if (algo === 'sliding-window') {
          t.test('what the list trimmed still counts after the newest are given back', async (t) => {
            // limit 2 per 1 s (+10 ms margin): the list keeps the newest starts and trims older ones, here
            // future ones of a backlog. Giving back the newest, each the newest then, until the store
            // refuses (the list is empty) leaves starts still planned that only the trimmed part knew.
            const p = policy(algo, 2, 1000)
            const booked = []
            for (let i = 0; i < 80; i++) booked.push(await store.reserve('trim', p, 1, 60_000))
            t.ok(booked.every((r) => r.admitted), 'a backlog of 80 booked (40 windows)')
            let given = 0
            while (given < booked.length && await store.release('trim', p, 1, booked[booked.length - 1 - given].ticket as number)) given++
            t.ok(given > 0 && given < booked.length, `the ${given} newest given back, newest first, until the list was empty`)
            const newestPlanned = booked[booked.length - 1 - given].startMs as number
            const next = await store.reserve('trim', p, 1, 60_000)
            const after = (next.startMs as number) - newestPlanned
            t.ok(after >= -1, `the next start is not before the newest start still planned (${after.toFixed(0)} ms after it)`)
            t.ok(after <= 1015, `nor more than a window and its margin after it (${after.toFixed(0)} ms)`)
          })
        }

        if (algo === 'sliding-window') {
          t.test('peek counts what is booked, a backlog longer than the store keeps included', async (t) => {
            // limit 5 per 1 s (+10 ms margin): 3 starts, then 97 more waiting. The sliding window keeps
            // only the newest 37 to 69 starts; the rest of the backlog is counted from the ones it keeps,
            // exactly once the first start is a margin old, and up to `limit` more before that.
            const p = policy(algo, 5, 1000)
            for (let i = 0; i < 3; i++) await store.reserve('peek', p, 1, 0)
            const few = await store.peek('peek', p)
            t.same([few.booked, few.remaining], [3, 2], `3 booked, 2 remaining (${few.booked}, ${few.remaining})`)
            let newest = 0
            for (let i = 3; i < 100; i++) {
              const r = await store.reserve('peek', p, 1, 60_000)
              if (!r.admitted) throw new Error(`request ${i} refused`)
              newest = r.startMs as number
            }
            const many = await store.peek('peek', p)
            const resetAt = Date.now() + many.resetMs
            t.ok(many.booked >= 100 && many.booked <= 105, `the backlog of 100 is counted as ${many.booked}`)
            await new Promise((resolve) => setTimeout(resolve, 20))
            const later = await store.peek('peek', p)
            t.equal(later.booked, 100, 'and as 100 exactly once the first start is a margin old')
            t.equal(many.remaining, 0, 'nothing remains')
            t.ok(resetAt >= newest + 1000 && resetAt <= newest + 1000 + 60, `the budget is back a window after the newest start (${(resetAt - newest).toFixed(0)} ms after it)`)
          })
        }

        t.test('every other operation answers: releases, recorded starts, leases, heartbeats, presence', async (t) => {
          // Each Lua script and the MULTI of leave once: on a cluster, any two keys of one call in two slots fail (CROSSSLOT).
          const p = policy(algo, 5, 1000)
          const r = await store.reserve('ops', p, 1, 0)
          t.equal(await store.release('ops', p, 1, r.ticket as number), true, 'the only reservation is given back')
          if (hasStartRecorder(store)) {
            await store.recordStarts('ops', p, [Date.now() - 5, Date.now()])
            t.equal((await store.peek('ops', p)).booked, 2, 'two starts recorded')
          }
          t.ok((await store.acquireLease('ops', 1, 'l1', 5000)).acquired, 'a lease')
          const busy = await store.acquireLease('ops', 1, 'l2', 5000)
          t.ok(!busy.acquired && busy.retryInMs > 4000, `the only slot is taken for ${busy.retryInMs} ms`)
          await store.renewLeases('ops', ['l1'], 5000)
          await store.releaseLease('ops', 'l1')
          t.ok((await store.acquireLease('ops', 1, 'l2', 5000)).acquired, 'free again once given back')
          t.equal(await store.heartbeat('i1', '{"n":1}', 5000), 1, 'one live instance')
          t.same([...await store.liveInstances()], [['i1', '{"n":1}']], 'and its snapshot')
          await store.leave('i1')
          t.equal((await store.liveInstances()).size, 0, 'gone after leave')
          if (hasClientPresence(store)) t.same(await store.clientPresence('ops', 'i1', ['c1', 'c2'], 5000), [1, 1], 'each client seen in one instance')
        })

        t.test('a reservation tells the generation of the bucket\'s state; while it is the one expected, nothing changes', async (t) => {
          const p = policy(algo, 5, 1000, algo === 'token-bucket' ? 5 : 1)
          const first = await store.reserve('gen', p, 1, 0)
          t.type(first.generation, 'number', `generation ${first.generation}`)
          const again = await store.reserve('gen', p, 1, 0, { expect: first.generation, gatherMs: 100 })
          t.ok(again.admitted, 'admitted as ever')
          t.equal(again.generation, first.generation, 'the same state answered')
          t.notOk(again.stateLost)
          const refused = await store.reserve('gen', p, 1, 0, { expect: first.generation, gatherMs: 100 })
          t.equal(refused.generation, first.generation, 'a refusal tells it too')
        })

        t.test('another generation than expected: nothing is booked, the loss is announced, and every booking waits out the gather', async (t) => {
          const p = policy(algo, 5, 1000, algo === 'token-bucket' ? 5 : 1)
          const heard: Array<[string, number]> = []
          store.onStateLost?.((bucket, generation) => heard.push([bucket, generation]))
          // Redis: the subscriber connection subscribes in the background.
          await new Promise((resolve) => setTimeout(resolve, 200))
          const first = await store.reserve('lost', p, 1, 0)
          const generation = first.generation as number
          const lost = await store.reserve('lost', p, 1, 10_000, { expect: generation - 1, gatherMs: 150 })
          t.equal(lost.stateLost, true, 'the state is not the one the caller booked in')
          t.notOk(lost.admitted, 'nothing booked')
          t.equal(lost.generation, generation, 'the reply tells the generation there is')
          t.ok(lost.waitMs > 100 && lost.waitMs <= 150, `book again after the gather (${lost.waitMs.toFixed(0)} ms)`)
          const other = await store.reserve('lost', p, 1, 10_000)
          t.equal(other.stateLost, true, 'while it lasts, any other booking waits too (its instance may not have recorded its starts yet)')
          for (let i = 0; i < 50 && heard.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
          t.same(heard, [['lost', generation]], 'every instance hears of the loss, once')
          await new Promise((resolve) => setTimeout(resolve, lost.waitMs + 10))
          const after = await store.reserve('lost', p, 1, 10_000, { expect: generation, gatherMs: 150 })
          t.ok(after.admitted, 'after the gather, bookings go on')
          t.equal(after.generation, generation)
        })

        t.test('buckets are independent', async (t) => {
          const p = policy(algo, 1, 1000)
          t.ok((await store.reserve('a', p, 1, 0)).admitted)
          t.notOk((await store.reserve('a', p, 1, 0)).admitted)
          t.ok((await store.reserve('b', p, 1, 0)).admitted)
        })
      })
    }
  }
  for (const [storeName, make] of stores) {
    t.test(`${storeName}: a pause and a freed lease reach every instance sharing the store`, async (t) => {
      const prefix = redis.prefix()
      const [a, b] = [await make(prefix), await make(prefix)]
      t.teardown(async () => { await Promise.all([a.close(), b.close()]) })
      const paused: Array<[string, number]> = []
      const freed: string[] = []
      b.onPause((bucket, delayMs) => paused.push([bucket, delayMs]))
      b.onLeaseFreed((bucket) => freed.push(bucket))
      // The subscription is made in the background: announce until it is heard (each pause a longer one).
      let n = 0
      await until('the pause heard by the other instance', 5000, async () => {
        await a.pause(`bucket-${n}`, 1000 + 100 * n++)
        return paused.length > 0 ? true : undefined
      })
      t.equal(paused[0][0].startsWith('bucket-'), true, `the paused bucket's name (${paused[0][0]})`)
      t.ok(paused[0][1] > 900 && paused[0][1] <= 1000 + 100 * n, `and the pause's length (${paused[0][1]} ms)`)
      await until('the freed lease heard by the other instance', 5000, async () => {
        await a.acquireLease('leased', 1, 'x', 5000)
        await a.releaseLease('leased', 'x')
        return freed.length > 0 ? true : undefined
      })
      t.same(freed[0], 'leased', 'the freed bucket\'s name')
    })
  }
})
