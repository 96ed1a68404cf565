// Graceful shutdown of the real command: requests queued for their slot at the moment of SIGTERM
// proceed until the drain timeout, the rest are answered 503 SHUTTING_DOWN with Retry-After and their
// reservations go back to Redis; in-flight ones finish; nothing is dropped; the process exits 0.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../src/config/load'
import { startRedis } from './helpers/redis'
import { startSluiceProcess, type SluiceProcess } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, json: any, at: number }

/** One request on its own connection; resolves with the answer, or rejects when none came. */
async function send (url: string, path: string): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        let json: unknown
        try { json = JSON.parse(Buffer.concat(chunks).toString()) } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json, at: performance.now() })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function waitForLog (p: SluiceProcess, msg: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const line = p.logs.find((l) => l.msg === msg)
    if (line !== undefined) return line
    if (performance.now() > deadline) throw new Error(`no log line "${msg}" within ${timeoutMs} ms`)
    await sleep(20)
  }
}

t.test('SIGTERM with requests queued: they proceed until the drain timeout, the rest get 503 SHUTTING_DOWN, reservations go back', async (t) => {
  const redis = await startRedis()
  const up = await startUpstream((req, res, body) => {
    const delay = req.url?.includes('slow') === true ? 1500 : 0
    setTimeout(() => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ ok: true, url: req.url, body }))
    }, delay)
  })
  const prefix = redis.prefix()
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '2/s', '--algorithm', 'sliding-window', '--margin', '10ms', '--max-wait', '30s',
    '--drain-timeout', '1500ms', '--redis', redis.url, '--key-prefix', prefix])
  t.teardown(async () => { await p.kill(); await up.close(); await redis.close() })

  // 2 per second: /slow and q0 start at once (/slow stays in flight 1.5 s), q1-q2 after ~1 s,
  // q3-q4 after ~2 s, ... q9-q10 after ~5 s.
  const began = performance.now()
  const slow = send(p.url, '/slow')
  await sleep(50)
  const queued = Array.from({ length: 11 }, (_, i) => send(p.url, `/q${i}`))
  while (up.hits.length < 2 && performance.now() - began < 5000) await sleep(10)
  await sleep(100)
  // Nothing per waiting request lives in Redis: the bucket's keys, whatever the queue.
  const keys = await redis.client().keys(`${prefix}*`)
  const signalAt = performance.now()
  const atSignal = up.hits.length
  t.ok(atSignal >= 2 && atSignal <= 6, `at the signal: ${atSignal} forwarded, the rest waiting`)
  // A bucket's own keys only (redis-keys.ts: its state, floor, team margin, generation, pause, answer
  // log, learned limit), however many wait: none per waiting request.
  const bucketKeys = keys.filter((k) => k.includes('{default}'))
  const parts = new Set(['sw', 'sw-floor', 'sw-margin', 'tb-margin', 'gen', 'pause', 'answers', 'learned'])
  t.ok(bucketKeys.every((k) => parts.has(k.slice(k.lastIndexOf(':') + 1))) && bucketKeys.length <= parts.size, `${12 - atSignal} waiting, ${keys.length} keys in Redis: ${keys.join(' ')}`)
  p.child.kill('SIGTERM')
  await waitForLog(p, 'shutting down')
  const refused = await send(p.url, '/late').then(() => 'answered', (err: NodeJS.ErrnoException) => err.code)
  t.equal(refused, 'ECONNREFUSED', 'a new connection after the signal is not accepted')

  const answers = await Promise.all([slow, ...queued])
  const code = await p.exited
  const exitedAt = performance.now()
  t.equal(code, 0, 'the process exits 0')

  t.equal(answers[0]?.status, 200, 'the request in flight at the upstream finished')
  const ok = answers.filter((a) => a.status === 200)
  const cut = answers.filter((a) => a.status === 503)
  t.equal(ok.length + cut.length, 12, 'every request got an answer: 200 or 503')
  // Slots come in pairs every ~1 s, so the 1.5 s drain timeout lets at least one more pair proceed.
  t.ok(ok.length >= atSignal + 2, `waits whose slot came within the drain timeout were forwarded (${ok.length - atSignal} after the signal)`)
  t.ok(cut.length >= 2, `the rest were cut short (${cut.length})`)
  t.same(up.hits.map((h) => h.url).sort(), answers.flatMap((a, i) => a.status === 200 ? [i === 0 ? '/slow' : `/q${i - 1}`] : []).sort(), 'the upstream saw exactly the forwarded ones')
  t.same(answers.slice(1).map((a) => a.status), [...Array(ok.length - 1).fill(200), ...Array(cut.length).fill(503)], 'in order of their slots: the first forwarded, the later ones cut')
  for (const a of cut) {
    t.equal(a.json?.success, false)
    t.equal(a.json?.error?.code, 'SHUTTING_DOWN')
    t.equal(a.headers['retry-after'], '1', 'with Retry-After')
    t.ok(a.at - signalAt >= 1400 && a.at - signalAt < 2600, `answered at the drain timeout (${Math.round(a.at - signalAt)} ms after the signal)`)
  }
  t.ok(exitedAt - signalAt < 3500, `exited soon after the drain (${Math.round(exitedAt - signalAt)} ms after the signal, ${Math.round(exitedAt - began)} ms in all)`)

  // The cut requests' reserved starts (all still in the future) were given back: none is left.
  const client = redis.client()
  const [sec, micro] = await client.time()
  const nowUs = Number(sec) * 1e6 + Number(micro)
  const starts = (await client.lrange(`${prefix}{default}:sw`, 0, -1)).map(Number)
  t.equal(starts.filter((s) => s > nowUs).length, 0, `no reservation in the future is left in Redis (${starts.length} starts kept, all past)`)

  const done = p.logs.find((l) => l.msg === 'shut down')
  t.equal(done?.cutShort, cut.length, 'the log says how many waits were cut short')
  t.equal(done?.abandoned, 0, 'and that nothing was abandoned')
})

t.test('SIGTERM: when everything finishes within the drain timeout, nothing is refused and the process does not linger', async (t) => {
  const up = await startUpstream()
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '2/s', '--algorithm', 'sliding-window', '--margin', '10ms', '--drain-timeout', '20s'])
  t.teardown(async () => { await p.kill(); await up.close() })
  const answers = Promise.all(Array.from({ length: 4 }, (_, i) => send(p.url, `/r${i}`)))
  await sleep(300)
  const signalAt = performance.now()
  p.child.kill('SIGTERM')
  t.same((await answers).map((a) => a.status), [200, 200, 200, 200], 'all four forwarded, two of them after the signal')
  t.equal(await p.exited, 0)
  const ms = performance.now() - signalAt
  t.ok(ms < 3000, `exits as soon as the last one is done, not at the 20 s drain timeout (${Math.round(ms)} ms)`)
  t.equal(up.hits.length, 4)
})

t.test('a second signal ends the drain at once', async (t) => {
  const up = await startUpstream()
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '1/s', '--algorithm', 'sliding-window', '--margin', '10ms', '--drain-timeout', '30s'])
  t.teardown(async () => { await p.kill(); await up.close() })
  const answers = Promise.all(Array.from({ length: 6 }, (_, i) => send(p.url, `/r${i}`)))
  await sleep(300)
  p.child.kill('SIGINT')
  await waitForLog(p, 'shutting down')
  await sleep(200)
  const secondAt = performance.now()
  p.child.kill('SIGINT')
  const all = await answers
  t.equal(await p.exited, 0)
  t.equal(all[0]?.status, 200)
  t.same(all.slice(1).map((a) => a.json?.error?.code), Array(5).fill('SHUTTING_DOWN'), 'the five still waiting are answered 503 SHUTTING_DOWN')
  t.ok(Math.max(...all.map((a) => a.at)) - secondAt < 1000, 'right after the second signal')
  t.equal(up.hits.length, 1)
})

t.test('a request waiting to be sent again after upstream pushback is answered at the drain timeout too', async (t) => {
  let pushedBack = false
  const up = await startUpstream((req, res) => {
    res.setHeader('content-type', 'application/json')
    if (!pushedBack) {
      pushedBack = true
      res.statusCode = 429
      res.setHeader('retry-after', '20')
      res.end('{"error":"slow down"}')
      return
    }
    res.end('{"ok":true}')
  })
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '10/s', '--max-wait', '60s', '--drain-timeout', '1s'])
  t.teardown(async () => { await p.kill(); await up.close() })
  const answer = send(p.url, '/pushed-back')
  while (up.hits.length < 1) await sleep(20)
  await sleep(200)
  const signalAt = performance.now()
  p.child.kill('SIGTERM')
  const a = await answer
  t.equal(a.status, 503)
  t.equal(a.json?.error?.code, 'SHUTTING_DOWN', 'not held for the 20 s pause, not dropped')
  t.ok(a.at - signalAt < 2500, `answered at the 1 s drain timeout (${Math.round(a.at - signalAt)} ms)`)
  t.equal(await p.exited, 0)
  t.equal(up.hits.length, 1, 'not sent again')
})

t.test('drainTimeout and adminRoutes: flag, environment, file, and a bad value names its field', async (t) => {
  const base = ['--upstream', 'http://127.0.0.1:9', '--limit', '1/s']
  t.equal(loadConfig(base, {}).drainTimeoutMs, 30_000, 'default 30 s')
  t.equal(loadConfig([...base, '--drain-timeout', '5s'], {}).drainTimeoutMs, 5000)
  t.equal(loadConfig(base, { SLUICE_DRAIN_TIMEOUT: '1500ms' }).drainTimeoutMs, 1500, 'SLUICE_DRAIN_TIMEOUT')
  t.equal(loadConfig([...base, '--drain-timeout', '2s'], { SLUICE_DRAIN_TIMEOUT: '9s' }).drainTimeoutMs, 2000, 'the flag wins')
  t.throws(() => loadConfig([...base, '--drain-timeout', 'soon'], {}), /config error: drainTimeout: expected a duration/)
  t.equal(loadConfig(base, {}).adminRoutes, 'all')
  t.equal(loadConfig([...base, '--admin-routes', 'essential'], {}).adminRoutes, 'essential')
  t.throws(() => loadConfig(base, { SLUICE_ADMIN_ROUTES: 'none' }), /config error: adminRoutes: expected all .* or essential/)
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cfg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, 'drainTimeout: 45s\nadminRoutes: essential\nroutes:\n  - { upstream: "http://127.0.0.1:9", limit: 1/s }\n')
  const fromFile = loadConfig(['--config', file], {})
  t.same([fromFile.drainTimeoutMs, fromFile.adminRoutes], [45_000, 'essential'], 'from a config file')
})
