// A limiter remembers a little per bucket (its newest start, its newest reservation); every distinct
// credential of a keyed route is a bucket, so that memory must not grow with every credential ever seen.
import t from 'tap'
import { parseRoute } from '../src/config/route'
import { Cancel } from '../src/limiter/cancel'
import { RouteLimiter } from '../src/limiter/route-limiter'
import { MemoryStore } from '../src/store/memory-store'

t.test('buckets idle for a window are forgotten once more than 1,024 are remembered', async (t) => {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  // 1000/s: a window of 1 s and a margin of 100 ms; every bucket below starts at once.
  const limiter = new RouteLimiter(parseRoute({ name: 'keyed', upstream: 'http://127.0.0.1:9', limit: '1000/s', maxWait: '1s' }, 'route'), store)
  const remembered = (): { starts: number, newest: number } => {
    const sizes = limiter.stateSizes()
    return { starts: sizes.lastStart, newest: sizes.newest }
  }
  for (let i = 0; i < 1500; i++) await limiter.admit(`old-${i}`, 1000, new Cancel().signal)
  t.equal(remembered().starts, 1500, 'buckets used within the window are all remembered')
  await new Promise((resolve) => setTimeout(resolve, 1200))
  for (let i = 0; i < 600; i++) await limiter.admit(`new-${i}`, 1000, new Cancel().signal)
  const after = remembered()
  t.ok(after.starts <= 600, `the 1,500 idle for a window were forgotten (${after.starts} buckets remembered)`)
  t.ok(after.newest <= after.starts, `and their newest reservations too (${after.newest})`)
})
