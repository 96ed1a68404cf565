// bodyTimeout: an upstream that sends its headers and then falls silent (a trickle slower than the
// bound) has its response cut; the client's connection ends instead of hanging, the concurrency
// lease is released for the next request, and the cut is logged and counted.
import t from 'tap'
import { request } from 'undici'
import { scrapeMetrics } from './helpers/prometheus'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

t.test('a trickling body is cut after bodyTimeout and its concurrency slot goes to the next request', async (t) => {
  const timers = new Set<NodeJS.Timeout>()
  const up = await startUpstream((req, res) => {
    if (req.url === '/fast') {
      res.end('fast')
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('a')
    // One byte every 2 s: far slower than the 400 ms bound, forever.
    const timer = setInterval(() => { if (!res.destroyed) res.write('b') }, 2000)
    timers.add(timer)
    res.once('close', () => clearInterval(timer))
  })
  const s = await startSluice([{ upstream: up.url, limit: '100/s', concurrency: 1, maxWait: '10s', bodyTimeout: '400ms' }])
  t.teardown(async () => { for (const timer of timers) clearInterval(timer); await s.close(); await up.close() })

  const began = Date.now()
  const slow = await request(`${s.url}/slow`)
  t.equal(slow.statusCode, 200, 'headers came through')
  const second = request(`${s.url}/fast`).then(async (r) => ({ status: r.statusCode, body: await r.body.text(), at: Date.now() - began }))
  const ended = await slow.body.text().then(() => 'complete', (err: Error) => `error: ${err.message}`)
  const cutAt = Date.now() - began
  t.match(ended, /^error/, `the client saw the connection end, not a complete body (${ended})`)
  t.ok(cutAt < 3000, `cut within the bound, not held (${cutAt} ms)`)
  const next = await second
  t.same([next.status, next.body], [200, 'fast'], 'the waiting request got the released slot')
  t.ok(next.at < 3000, `promptly (${next.at} ms)`)
  const line = s.logs.find((l) => l.msg === 'upstream body fell silent for bodyTimeout; response cut')
  t.ok(line, 'the cut is logged')
  t.equal(line?.bodyTimeoutMs, 400)
  const metrics = await scrapeMetrics(s.url)
  t.equal(metrics.value('sluice_upstream_body_timeouts_total', { route: 'default' }), 1, 'and counted')
})

t.test('bodyTimeout is a route setting with a 30 s default', async (t) => {
  const { parseRoute } = await import('../src/config/route')
  t.equal(parseRoute({ upstream: 'http://127.0.0.1:1', limit: '1/s' }, 'r').bodyTimeoutMs, 30_000)
  t.equal(parseRoute({ upstream: 'http://127.0.0.1:1', limit: '1/s', bodyTimeout: '2s' }, 'r').bodyTimeoutMs, 2000)
  t.throws(() => parseRoute({ upstream: 'http://127.0.0.1:1', limit: '1/s', bodyTimeout: 'soon' }, 'r'), /r\.bodyTimeout/)
})
