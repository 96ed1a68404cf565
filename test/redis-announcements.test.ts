// What one instance announces on Redis's channels reaches another's listeners, parsed
// (store/redis-announcements.ts): a pause, a freed lease, a learned limit, a bucket's state lost.
import t from 'tap'
import { RedisStore } from '../src/store/redis-store'
import { startRedis } from './helpers/redis'

function next<A extends unknown[]> (subscribe: (listener: (...args: A) => void) => void): () => Promise<A> {
  const heard: A[] = []
  const waiting: Array<(args: A) => void> = []
  subscribe((...args) => { const w = waiting.shift(); if (w !== undefined) w(args); else heard.push(args) })
  return async () => {
    const h = heard.shift()
    if (h !== undefined) return h
    return await new Promise<A>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('nothing heard within 5 s')), 5000)
      waiting.push((args) => { clearTimeout(timer); resolve(args) })
    })
  }
}

t.test('announcements reach the other instance', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const keyPrefix = redis.prefix()
  const listener = new RedisStore({ url: redis.url, keyPrefix })
  const speaker = new RedisStore({ url: redis.url, keyPrefix })
  t.teardown(async () => { await listener.close(); await speaker.close() })
  await listener.connect()
  await speaker.connect()
  const paused = next<[string, number]>((l) => listener.onPause(l))
  const freed = next<[string]>((l) => listener.onLeaseFreed(l))
  const learned = next<[string]>((l) => listener.onLearned(l))
  const lost = next<[string, number]>((l) => listener.onStateLost(l))
  // The subscriber connects on the first listener: wait until Redis counts it on each channel.
  const admin = redis.client()
  t.teardown(() => { admin.disconnect() })
  for (let i = 0; i < 100; i++) {
    const counts = await admin.pubsub('NUMSUB', `${keyPrefix}paused`, `${keyPrefix}lease-freed`, `${keyPrefix}learned`) as Array<string | number>
    if (counts.filter((_, j) => j % 2 === 1).every((n) => Number(n) === 1)) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  await speaker.pause('api|key', 1500)
  const [bucket, delayMs] = await paused()
  t.equal(bucket, 'api|key', 'a pause: the bucket, with a bar in its name')
  t.ok(delayMs > 1400 && delayMs <= 1500, `and how long (${delayMs} ms)`)

  const lease = await speaker.acquireLease('gate', 1, 'lease-1', 5000)
  t.ok(lease.acquired, 'a lease taken')
  await speaker.releaseLease('gate', 'lease-1')
  t.same(await freed(), ['gate'], 'a lease freed: the bucket')

  await speaker.changeLearned('learn', { op: 'lower', limit: 5, windowMs: 1000, kind: 'learned', probeMs: 0 }, 60_000)
  t.same(await learned(), ['learn'], 'a limit learned: the bucket')

  // includes/generation.lua announces a lost state on the pause channel as "bucket|generation|lost";
  // malformed messages are ignored, not passed on as a pause or a loss.
  await admin.publish(`${keyPrefix}paused`, 'no-bar-here')
  await admin.publish(`${keyPrefix}paused`, 'api|not-a-number|lost')
  await admin.publish(`${keyPrefix}paused`, 'api|key|7|lost')
  t.same(await lost(), ['api|key', 7], 'a state lost: the bucket and its generation')
  await admin.publish(`${keyPrefix}paused`, 'after|250000')
  t.same(await paused(), ['after', 250], 'the malformed messages before it reached no listener')
})
