// The fair scheduler's per-client queue: oldest first, any entry droppable, count and units kept.
import t from 'tap'
import { HeldQueue } from '../src/limiter/held-queue'

type Entry = Parameters<HeldQueue['push']>[0]

function entry (name: string, cost = 1): Entry {
  return { req: { cost, name } as unknown as Entry['req'], arrived: 0, deadline: 0, done: false, resolve: () => {}, reject: () => {}, onAbort: () => {} }
}

const nameOf = (e: Entry | undefined): string | undefined => (e?.req as unknown as { name: string } | undefined)?.name

t.test('oldest first; dropping from the middle or the front keeps order, count and units', async (t) => {
  const q = new HeldQueue()
  const [a, b, c, d] = [entry('a'), entry('b', 3), entry('c'), entry('d', 2)]
  for (const e of [a, b, c, d]) q.push(e)
  t.equal(q.length, 4)
  t.equal(q.units, 7)
  t.equal(nameOf(q.first()), 'a')
  t.ok(q.remove(c), 'one in the middle is dropped')
  t.notOk(q.remove(c), 'and only once')
  t.ok(q.remove(a), 'the first is taken')
  t.equal(nameOf(q.first()), 'b', 'the next oldest is first')
  t.equal(q.length, 2)
  t.equal(q.units, 5)
  q.unshift(a)
  t.equal(nameOf(q.first()), 'a', 'one put back goes in front')
  t.equal(q.units, 6)
  for (const e of [a, b, d]) q.remove(e)
  t.equal(q.length, 0)
  t.equal(q.units, 0)
  t.equal(q.first(), undefined, 'empty')
})

t.test('a long queue taken from the front stays in order across compaction', async (t) => {
  const q = new HeldQueue()
  const all = Array.from({ length: 5000 }, (_, i) => entry(String(i)))
  for (const e of all) q.push(e)
  // Drop every third from anywhere, then take the rest from the front.
  for (let i = 2; i < all.length; i += 3) q.remove(all[i])
  const taken: string[] = []
  for (let e = q.first(); e !== undefined; e = q.first()) {
    taken.push(nameOf(e) as string)
    q.remove(e)
  }
  const expected = all.filter((_, i) => i % 3 !== 2).map((e) => nameOf(e) as string)
  t.same(taken, expected, `${taken.length} taken in arrival order`)
  t.equal(q.length, 0)
})
