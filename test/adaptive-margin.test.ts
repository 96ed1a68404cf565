// The adaptive margin's estimator (limiter/adaptive-margin.ts): pure, driven by a table of samples.
import t from 'tap'
import { AdaptiveMargin, fullWindow, pushbackCause, quantile } from '../src/limiter/adaptive-margin'
import { parseRoute } from '../src/config/route'

function feed (m: AdaptiveMargin, n: number, latenessMs: number, responseMs: number | undefined, at: { now: number }, stepMs = 50): void {
  for (let i = 0; i < n; i++) {
    at.now += stepMs
    m.sample(latenessMs, responseMs, at.now)
  }
}

t.test('starts at the cap, narrows slowly to what the path needs, never below the floor', async (t) => {
  const m = new AdaptiveMargin({ capMs: 100 })
  const at = { now: 0 }
  t.equal(m.marginMs, 100, 'unmeasured: the configured margin')
  feed(m, 7, 2, 1, at)
  t.equal(m.marginMs, 100, 'fewer than minSamples (8): still the cap')
  feed(m, 1, 2, 1, at)
  t.ok(m.marginMs < 100 && m.marginMs > 5, `first estimate narrows part of the way (${m.marginMs})`)
  t.equal(m.neededMs, 5, 'needed: 1.5 × 2 ms is below the 5 ms floor')
  feed(m, 400, 2, 1, at)
  t.ok(m.marginMs - 5 < 0.5, `after 20 s the margin is at the floor (${m.marginMs})`)
})

t.test('the estimate: safety × (p99 lateness + half the spread of response times)', async (t) => {
  const rows: Array<[string, number[], number[], number]> = [
    ['flat', [4], [10], 6],
    ['response spread 10..30 ms adds 10', [4], [10, 30], 21],
    ['capped', [80], [10], 50]
  ]
  for (const [name, late, resp, want] of rows) {
    const m = new AdaptiveMargin({ capMs: 50 })
    let now = 0
    for (let i = 0; i < 256; i++) m.sample(late[i % late.length], resp[i % resp.length], (now += 10))
    t.equal(m.neededMs, want, name)
  }
})

t.test('widens at once on a late sample, narrows with a half-life', async (t) => {
  const m = new AdaptiveMargin({ capMs: 200 })
  const at = { now: 0 }
  feed(m, 600, 2, 1, at)
  t.equal(Math.round(m.marginMs), 5)
  m.sample(40, 1, (at.now += 1))
  t.equal(m.marginMs, 60, 'one sample 40 ms late: 1.5 × 40 at once')
  feed(m, 16, 2, 1, at, 62.5)
  t.equal(m.marginMs, 60, 'held while the late sample is within the horizon (window + cap = 1.2 s)')
  feed(m, 24, 2, 1, at, 62.5)
  // Beyond the horizon (1.2 s after the late sample) the estimate is the floor again; estimates come
  // every 250 ms at this rate, so the last one, 1.05–1.3 s later, took the margin 2.1 to 2.6
  // half-lives (0.5 s: half the 1 s window) of the way back: neither held nor at the floor.
  t.ok(m.marginMs > 5 + 55 * Math.pow(2, -1300 / 500) && m.marginMs < 5 + 55 * Math.pow(2, -1050 / 500), `narrowing by its half-life (${m.marginMs.toFixed(1)})`)
  feed(m, 300, 2, 1, at)
  t.ok(m.marginMs < 10, `back near the floor (${m.marginMs})`)
  feed(m, 16, 30, 1, at)
  t.equal(m.marginMs, 45, 'lateness that persists (16 samples 30 ms late): widened at once to 1.5 × 30')
})

t.test('the half-life is 1.5 s, or half the window when that is shorter', async (t) => {
  // From the cap (200 ms) to a need of 5 ms (the floor): the first estimate, at the 8th sample, takes
  // half the gap at once; then estimates every 250 ms (a sample every 62.5 ms) narrow it for 1 s more.
  for (const [windowMs, halfLifeMs] of [[1000, 500], [2000, 1000], [10_000, 1500]]) {
    const m = new AdaptiveMargin({ capMs: 200, windowMs })
    const at = { now: 0 }
    feed(m, 8, 2, 1, at, 62.5)
    t.equal(m.marginMs, 5 + 195 / 2, `${windowMs} ms window: half the gap at the first estimate`)
    feed(m, 16, 2, 1, at, 62.5)
    const want = 5 + 195 / 2 * Math.pow(2, -1000 / halfLifeMs)
    t.ok(Math.abs(m.marginMs - want) < 1e-9, `${windowMs} ms window: ${halfLifeMs} ms half-life (${m.marginMs.toFixed(2)}, ${want.toFixed(2)})`)
  }
})

t.test('the widest margin of the last window: a jitter pushback goes back to it', async (t) => {
  // Narrowing from the cap (200 ms) to the floor within one window (1 s and the 200 ms cap): the
  // window's starts were booked with margins up to 200 ms, so a 429 in it means the narrowing since
  // went too far.
  const m = new AdaptiveMargin({ capMs: 200, windowMs: 1000 })
  const at = { now: 0 }
  feed(m, 16, 2, 1, at, 62.5)
  t.ok(m.marginMs < 60, `narrowed within the window (${m.marginMs.toFixed(1)} ms)`)
  t.equal(m.widestInWindow(at.now), 200, 'the widest margin of the last window and cap is still the cap')
  t.equal(m.pushback(19, 20, at.now), 'jitter')
  t.equal(m.marginMs, 200, 'back to the widest of the window, more than twice the narrowed one')
  // Two windows later with the margin held, the widest of the window is the margin in force.
  const n = new AdaptiveMargin({ capMs: 200, windowMs: 1000 })
  feed(n, 100, 2, 1, at, 62.5)
  const narrowed = n.marginMs
  t.ok(n.widestInWindow(at.now) - narrowed < 1, `settled: the widest of the window is about today's (${n.widestInWindow(at.now).toFixed(1)}, ${narrowed.toFixed(1)})`)
  n.pushback(19, 20, at.now)
  t.ok(Math.abs(n.marginMs - 2 * narrowed) < 2, `then a jitter pushback doubles it (${n.marginMs.toFixed(1)})`)
})

t.test('a burst\'s late first requests hold the margin for the horizon, not for the 256 samples', async (t) => {
  // A cold process admitting a burst: its first 16 requests leave 80 ms late; then about 7 requests a
  // second leave 2 ms late, as one of three instances sharing 20/s does. 256 samples take 37 s here.
  const m = new AdaptiveMargin({ capMs: 100, windowMs: 1000 })
  const at = { now: 0 }
  feed(m, 16, 80, 1, at, 5)
  t.equal(m.marginMs, 100, 'the burst: at the cap')
  feed(m, 16, 2, 1, at, 60)
  t.equal(m.marginMs, 100, 'within the horizon (window + cap) the late ones still count')
  feed(m, 32, 2, 1, at, 150)
  t.ok(m.marginMs < 50, `4 s later, with the burst beyond the horizon, the margin narrows (${m.marginMs})`)
  t.equal(m.neededMs, 5, 'what the path needs now: the floor')
  const quiet = new AdaptiveMargin({ capMs: 100, windowMs: 1000 })
  feed(quiet, 16, 30, 1, at, 60_000)
  t.equal(quiet.neededMs, 45, 'a quiet route (a request a minute): the latest minSamples count, however old')
})

t.test('pushback: jitter widens and holds; a lower limit leaves the margin alone', async (t) => {
  const rows: Array<[number, number, number, string]> = [
    [20, 20, 1, 'jitter'],
    [19, 20, 1, 'jitter'],
    [18, 20, 1, 'lower-limit'],
    [10, 20, 1, 'lower-limit'],
    [18, 20, 3, 'jitter'],
    [16, 20, 3, 'lower-limit'],
    // A token bucket's backlog at 20 per 1 s + 50 ms books 19.05 in any 1 s: 18 before is "one less".
    [18, fullWindow(20, 1000, 50), 1, 'jitter'],
    [17, fullWindow(20, 1000, 50), 1, 'lower-limit']
  ]
  for (const [booked, full, slack, cause] of rows) t.equal(pushbackCause(booked, full, slack), cause, `${booked} of ${full} (slack ${slack})`)
  const m = new AdaptiveMargin({ capMs: 100 })
  const at = { now: 0 }
  feed(m, 600, 2, 1, at)
  const before = m.marginMs
  t.equal(m.pushback(10, 20, at.now), 'lower-limit')
  t.equal(m.marginMs, before, 'unchanged by a lower limit')
  t.equal(m.pushback(19, 20, at.now), 'jitter')
  t.equal(m.marginMs, 2 * before, 'doubled by jitter')
  feed(m, 200, 2, 1, at) // 10 s
  t.equal(m.marginMs, 2 * before, 'held for 30 s after a jitter pushback')
  feed(m, 600, 2, 1, at)
  t.ok(m.marginMs < 2 * before, 'then narrows again')
  m.cold(80)
  t.equal(m.marginMs, 80, 'a cold pool: the cold margin')
  m.cold(500)
  t.equal(m.marginMs, 100, 'never above the cap')
})

t.test('quantile', async (t) => {
  t.equal(quantile([], 0.99), 0)
  t.equal(quantile([1, 2, 3, 4], 0.5), 2)
  t.equal(quantile([1, 2, 3, 4], 0.99), 4)
  t.equal(quantile([1, 2, 3, 4], 0.01), 1)
})

t.test('config: margin is the cap; "fixed" keeps it', async (t) => {
  const upstream = 'http://127.0.0.1:9'
  t.match(parseRoute({ name: 'a', upstream, limit: '20/s' }, 'r'), { marginMs: 100, marginFixed: false })
  t.match(parseRoute({ name: 'a', upstream, limit: '20/s', margin: '30ms' }, 'r'), { marginMs: 30, marginFixed: false })
  t.match(parseRoute({ name: 'a', upstream, limit: '20/s', margin: 'fixed' }, 'r'), { marginMs: 100, marginFixed: true })
  t.match(parseRoute({ name: 'a', upstream, limit: '20/s', margin: '50ms fixed' }, 'r'), { marginMs: 50, marginFixed: true })
  t.throws(() => parseRoute({ name: 'a', upstream, limit: '20/s', margin: 'wide' }, 'r'), { name: 'ConfigError', field: 'r.margin' })
})

t.test('the margin covers the latest request of the last window, however few of the samples it is', async (t) => {
  // A 10 s window: two requests 60 ms late at its start (a burst of arrivals held the event loop),
  // then 2 ms late every 30 ms. The next window's starts are booked against those two.
  const m = new AdaptiveMargin({ capMs: 100, windowMs: 10_000 })
  let now = 0
  m.sample(60, 1, (now += 10))
  m.sample(60, 1, (now += 10))
  while (now < 9000) m.sample(2, 1, (now += 30))
  t.equal(m.neededMs, 90, 'within the window: 1.5 × 60 ms, though the p99 of the last 256 samples is 2 ms')
  t.ok(m.marginMs >= 90, `and the margin stays there (${m.marginMs.toFixed(1)} ms)`)
  while (now < 11_000) m.sample(2, 1, (now += 30))
  t.equal(m.neededMs, 5, 'a window and cap later: the floor')
  m.setWindow(1000)
  m.sample(30, 1, (now += 30))
  while (now < 11_500) m.sample(2, 1, (now += 30))
  t.equal(m.neededMs, 45, 'after the window changes, the new one counts (1.5 × 30 ms)')
})
