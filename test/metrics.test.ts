// /_sluice/metrics after a known sequence of requests: exact counters and histograms, strict
// Prometheus text, a registry per instance. Real Sluice (memory store), real loopback upstream.
import t from 'tap'
import { request } from 'undici'
import { parsePrometheus } from './helpers/prometheus'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

async function get (url: string, signal?: AbortSignal): Promise<{ status: number, text: string }> {
  const res = await request(url, { signal })
  return { status: res.statusCode, text: await res.body.text() }
}

t.test('counters and histograms hold exactly what a known sequence of requests did', async (t) => {
  const up = await startUpstream((req, res) => {
    res.statusCode = req.url?.endsWith('/fail') === true ? 500 : 200
    res.setHeader('content-type', 'application/json')
    res.end('{"ok":true}')
  })
  const s = await startSluice([
    { name: 'api', prefix: '/api', upstream: up.url, limit: '3/10s', algorithm: 'sliding-window', maxWait: '0s' },
    // 4/s, burst 1: one start every (1000 + 50) / 4 = 262.5 ms.
    { name: 'paced', prefix: '/paced', upstream: up.url, limit: '4/s' },
    { name: 'slow', prefix: '/slow', upstream: up.url, limit: '1/10s' },
    { name: 'shadow', prefix: '/shadow', upstream: up.url, limit: '1/10s', algorithm: 'sliding-window', maxWait: '15s', mode: 'shadow' }
  ])
  t.teardown(async () => { await s.close(); await up.close() })
  const scrape = async (): Promise<ReturnType<typeof parsePrometheus>> => {
    const res = await request(`${s.url}/_sluice/metrics`)
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
    return parsePrometheus(await res.body.text())
  }

  const before = await scrape()
  t.equal(before.value('sluice_requests_total'), 0, 'nothing counted before any request')
  t.equal(before.value('sluice_store_mode', { route: 'api', mode: 'memory' }), 1, 'store mode per route')
  t.equal(before.value('sluice_store_mode', { route: 'api', mode: 'redis' }), 0)
  t.equal(before.value('sluice_budget_limit', { route: 'api' }), 3)
  t.equal(before.value('sluice_budget_window_seconds', { route: 'api' }), 10)
  t.ok(before.find('process_cpu_user_seconds_total').length === 1 && before.find('nodejs_eventloop_lag_seconds').length === 1, 'default Node process metrics')

  // api: 200, upstream 500 (an error envelope), 200, then no room within maxWait 0 -> RATE_LIMITED.
  t.equal((await get(`${s.url}/api/ok`)).status, 200)
  t.ok((await get(`${s.url}/api/fail`)).status >= 500, 'the upstream 500 comes back as an error')
  t.equal((await get(`${s.url}/api/ok`)).status, 200)
  t.equal((await get(`${s.url}/api/ok`)).status, 429)
  t.equal((await get(`${s.url}/nowhere`)).status, 404, 'an unrouted request')

  // paced: three at once wait ~0, ~262 and ~525 ms.
  const paced = await Promise.all([1, 2, 3].map(async () => await get(`${s.url}/paced/x`)))
  t.same(paced.map((r) => r.status), [200, 200, 200])

  // slow: the first goes at once, the second waits ~10 s; its client leaves after 300 ms.
  t.equal((await get(`${s.url}/slow/a`)).status, 200)
  const leaving = new AbortController()
  const waiting = get(`${s.url}/slow/b`, leaving.signal).catch((err: Error) => err)
  await new Promise((resolve) => setTimeout(resolve, 200))
  const during = await scrape()
  t.equal(during.value('sluice_queue_depth', { route: 'slow', bucket: 'slow' }), 1, 'queue depth while one request waits')
  leaving.abort()
  t.type(await waiting, Error)

  // shadow: nothing waits; enforcement would have let the first go, delayed the second ~10 s and
  // refused the third (~20 s > maxWait 15 s).
  const began = performance.now()
  for (let i = 0; i < 3; i++) t.equal((await get(`${s.url}/shadow/x`)).status, 200)
  t.ok(performance.now() - began < 2000, 'shadow requests are not delayed')

  // Retries and pauses are fed by the request path (upstream pushback); drive the same entry points.
  s.observer.retry('api', 'pushback')
  const pausedFor = await s.observer.timed(s.store).pause('api', 2000)
  t.ok(pausedFor > 1900)

  // Counting happens when a response ends; the cancelled one ends once Sluice noticed the client left.
  let m = await scrape()
  for (let i = 0; i < 50 && m.value('sluice_requests_total', { route: 'slow', outcome: 'cancelled' }) === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    m = await scrape()
  }

  t.equal(m.value('sluice_requests_total', { route: 'api', outcome: 'forwarded' }), 3, 'api: three forwarded (one of them answered 500)')
  t.equal(m.value('sluice_requests_total', { route: 'api', outcome: 'rejected', code: 'RATE_LIMITED' }), 1, 'api: one refused')
  t.equal(m.value('sluice_requests_total', { route: 'paced', outcome: 'forwarded', code: '' }), 3)
  t.equal(m.value('sluice_requests_total', { route: 'slow', outcome: 'forwarded' }), 1)
  t.equal(m.value('sluice_requests_total', { route: 'slow', outcome: 'cancelled' }), 1, 'slow: one cancelled while waiting')
  t.equal(m.value('sluice_requests_total', { route: 'shadow', outcome: 'forwarded' }), 3)
  t.equal(m.value('sluice_requests_total'), 3 + 1 + 3 + 2 + 3, 'nothing else counted (not the 404, not the admin routes)')

  t.equal(m.value('sluice_upstream_responses_total', { route: 'api', class: '2xx' }), 2)
  t.equal(m.value('sluice_upstream_responses_total', { route: 'api', class: '5xx' }), 1)
  t.equal(m.value('sluice_upstream_responses_total'), 2 + 1 + 3 + 1 + 3, 'one upstream response per forwarded request')

  t.equal(m.value('sluice_wait_seconds_count', { route: 'api' }), 3)
  // The wait is measured from arrival to start, so it includes the store round trip (a few ms, more on a busy machine).
  t.equal(m.value('sluice_wait_seconds_bucket', { route: 'api', le: '0.1' }), 3, 'api requests did not wait')
  t.equal(m.value('sluice_wait_seconds_count', { route: 'paced' }), 3)
  t.equal(m.value('sluice_wait_seconds_bucket', { route: 'paced', le: '0.1' }), 1, 'one paced request went at once')
  t.equal(m.value('sluice_wait_seconds_bucket', { route: 'paced', le: '1' }), 3, 'the others within a second')
  const pacedSum = m.value('sluice_wait_seconds_sum', { route: 'paced' })
  // ~0 + ~0.26 + ~0.53 s, less the gaps between the three arrivals (larger on a busy machine).
  t.ok(pacedSum > 0.45 && pacedSum < 0.9, `paced waits add up to ~0.79 s (${pacedSum})`)
  t.equal(m.value('sluice_wait_seconds_count', { route: 'slow' }), 1, 'the cancelled request is not a forwarded wait')

  t.equal(m.value('sluice_shadow_verdicts_total', { route: 'shadow', verdict: 'would_delay' }), 1)
  t.equal(m.value('sluice_shadow_verdicts_total', { route: 'shadow', verdict: 'would_reject', code: 'RATE_LIMITED' }), 1)
  t.equal(m.value('sluice_shadow_wait_seconds_count', { route: 'shadow' }), 2, 'would-be waits of the two that would have been admitted')
  const shadowSum = m.value('sluice_shadow_wait_seconds_sum', { route: 'shadow' })
  // A 10 s window and its 100 ms margin, from the first start, which the window had room for and so
  // is recorded one margin later (store: a burst's record): ~10.2 s.
  t.ok(shadowSum > 9 && shadowSum < 10.3, `the would-be wait is ~10.2 s (${shadowSum})`)
  t.equal(m.value('sluice_wait_seconds_sum', { route: 'shadow' }), 0, 'shadow requests waited for nothing')
  t.equal(m.value('sluice_queue_depth', { route: 'shadow', bucket: 'shadow' }), 1, 'the would-be queue of the shadow route')

  t.equal(m.value('sluice_retries_total', { route: 'api' }), 1)
  t.equal(m.value('sluice_upstream_pauses_total', { route: 'api' }), 1)
  const pauseLeft = m.value('sluice_upstream_pause_remaining_seconds', { route: 'api', bucket: 'api' })
  t.ok(pauseLeft > 1 && pauseLeft <= 2, `pause remaining ${pauseLeft} s`)
  t.equal(m.value('sluice_tokens_remaining', { route: 'api', bucket: 'api' }), 0, 'the last api reservation left no token')
  t.equal(m.value('sluice_in_flight'), 0, 'nothing in flight afterwards')
  t.equal(m.value('sluice_queue_depth', { route: 'slow', bucket: 'slow' }), 0, 'the cancelled request left the queue')
  t.ok(m.value('sluice_store_command_seconds_count', { store: 'memory', command: 'reserve' }) >= 4 + 3 + 2 + 3, 'every reservation timed')
  t.equal(m.value('sluice_store_command_seconds_count', { store: 'memory', command: 'pause' }), 1)
  t.equal(m.value('sluice_store_errors_total'), 0)
})

t.test('admission events: a request that cannot start behind its own client\'s queue is counted as refused on arrival', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'one', prefix: '/one', upstream: up.url, limit: '1/10s', maxWait: '15s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  const events = async (): Promise<ReturnType<typeof parsePrometheus>> => parsePrometheus((await get(`${s.url}/_sluice/metrics`)).text)
  const before = await events()
  for (const event of ['late_start_rebooked', 'late_start_forwarded', 'late_start_moved', 'refused_at_arrival', 'held_timeout', 'low_priority_probe', 'low_priority_probe_refused']) {
    t.equal(before.value('sluice_admission_events_total', { route: 'one', event }), 0, `${event}: a series from the start`)
  }
  t.equal((await get(`${s.url}/one/a`)).status, 200)
  // The second waits ~10 s for its slot; a third of the same client, willing to wait 5 s, cannot start
  // before the second: refused at once, by the fair queue.
  const leaving = new AbortController()
  const waiting = get(`${s.url}/one/b`, leaving.signal).catch((err: Error) => err)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const third = await request(`${s.url}/one/c`, { headers: { prefer: 'wait=5' } })
  await third.body.dump()
  t.equal(third.statusCode, 429)
  t.equal((await events()).value('sluice_admission_events_total', { route: 'one', event: 'refused_at_arrival' }), 1)
  leaving.abort()
  t.type(await waiting, Error)
})

t.test('two instances in one process keep separate registries', async (t) => {
  const up = await startUpstream()
  const a = await startSluice([{ name: 'a', upstream: up.url, limit: '100/s' }])
  const b = await startSluice([{ name: 'a', upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await a.close(); await b.close(); await up.close() })
  for (let i = 0; i < 3; i++) await get(`${a.url}/x`)
  await get(`${b.url}/x`)
  const ma = parsePrometheus((await get(`${a.url}/_sluice/metrics`)).text)
  const mb = parsePrometheus((await get(`${b.url}/_sluice/metrics`)).text)
  t.equal(ma.value('sluice_requests_total', { route: 'a' }), 3)
  t.equal(mb.value('sluice_requests_total', { route: 'a' }), 1)
})

t.test('the parser refuses what Prometheus would refuse', async (t) => {
  t.throws(() => parsePrometheus('# TYPE x counter\nx 1'), /newline/)
  t.throws(() => parsePrometheus('y 1\n'), /undeclared/)
  t.throws(() => parsePrometheus('# TYPE x counter\nx{a="1" 1\n'), /bad sample|bad labels/)
  t.throws(() => parsePrometheus('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n'), /cumulative/)
  t.throws(() => parsePrometheus('# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_count 3\nh_sum 1\n'), /_count/)
  t.equal(parsePrometheus('# HELP x a\n# TYPE x gauge\nx{a="q\\"b"} 2.5\n').value('x', { a: 'q"b' }), 2.5)
})
