// `sluice demo` end to end with small numbers: in process (memory store; two instances on a real
// Redis; --keep), and once as a child process through the CLI, judged by its exit status and text.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { DEMO_DEFAULTS, demoMaxWaitMs, parseDemoArgs, runDemo, type DemoOptions, type DemoSummary } from '../src/demo/demo'
import { startRedis } from './helpers/redis'
import { ConfigError } from '../src/errors'

const ROOT = join(__dirname, '..')

class Sink extends Writable {
  text = ''
  private readonly waiters: Array<{ pattern: RegExp, resolve: () => void }> = []
  override _write (chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString()
    for (const w of [...this.waiters]) {
      if (w.pattern.test(this.text)) {
        this.waiters.splice(this.waiters.indexOf(w), 1)
        w.resolve()
      }
    }
    cb()
  }

  /** Resolves once the text written so far matches `pattern`. */
  async until (pattern: RegExp): Promise<void> {
    if (pattern.test(this.text)) return
    await new Promise<void>((resolve) => this.waiters.push({ pattern, resolve }))
  }
}

function small (overrides: Partial<DemoOptions> = {}): DemoOptions {
  return { ...DEMO_DEFAULTS, requests: 40, limit: { count: 10, windowMs: 1000 }, ...overrides }
}

/** One row of the summary table: its two numbers. */
function row (text: string, label: string): [number, number] {
  const m = new RegExp(`^${label}[^\\n]*?\\s+(\\d+(?:\\.\\d+)?)(?: s)?\\s+(\\d+(?:\\.\\d+)?)(?: s)?$`, 'm').exec(text)
  if (m === null) throw new Error(`no row "${label}" in:\n${text}`)
  return [Number(m[1]), Number(m[2])]
}

function checkSummary (t: Test, summary: DemoSummary, text: string, requests: number, limit: number): void {
  const { direct, sluice } = summary
  t.equal(direct.sent, requests, 'direct: every request sent')
  t.equal(sluice.sent, requests, 'through Sluice: every request sent')
  t.ok(direct.upstream429s >= 1, `direct: the API answered 429 (${direct.upstream429s} times)`)
  t.equal(direct.failures, direct.upstream429s, 'direct: each 429 is a failed post for the naive client')
  t.equal(sluice.failures, 0, 'through Sluice: no client-visible failure')
  t.equal(sluice.upstream429s, 0, 'through Sluice: the API answered no 429')
  t.equal(sluice.ok, requests, 'through Sluice: every post succeeded')
  t.ok(direct.peakInWindow > limit, `direct: ${direct.peakInWindow} arrivals in one window, above the limit`)
  t.ok(sluice.peakInWindow <= limit, `through Sluice: peak ${sluice.peakInWindow} <= limit ${limit}`)
  t.ok(sluice.durationMs >= summary.minimumMs, `Sluice took at least the theoretical minimum (${Math.round(sluice.durationMs)} >= ${summary.minimumMs} ms)`)
  t.equal(summary.ok, true)

  // The printed table says the same.
  t.same(row(text, 'requests sent'), [requests, requests])
  t.same(row(text, 'upstream 429s'), [direct.upstream429s, 0])
  t.same(row(text, 'client-visible failures'), [direct.failures, 0])
  t.same(row(text, 'peak in any'), [direct.peakInWindow, sluice.peakInWindow])
  t.match(text, /^total time \(minimum \d+\.\d s\)/m)
  t.match(text, new RegExp(`^OK: through Sluice ${requests} of ${requests} posts succeeded`, 'm'))
  t.match(text, /counts a 429 as a failed post \(no retry\)/, 'says how the naive client treats a 429')
  t.match(text, /^maxWait: /m, 'explains maxWait')
  t.match(text, /^health {4}http:\/\/127\.0\.0\.1:\d+\/_sluice\/health|^dashboard http:\/\/127\.0\.0\.1:\d+\/_sluice\/$/m, 'points at the running Sluice')
  t.notOk(text.includes('\u001b['), 'no escape codes when the output is not a terminal')
  t.match(text, new RegExp(`^ +${requests}/${requests} {2}ok ${requests} {2}failed 0 `, 'm'), 'plain progress lines')
}

t.test('the demo: a burst fails straight at the API and succeeds through Sluice (memory store)', async (t) => {
  const out = new Sink()
  const summary = await runDemo(small(), out)
  checkSummary(t, summary, out.text, 40, 10)
  t.equal(summary.instances, 1)
  t.match(out.text, /memory store/)
})

t.test('with --redis: two Sluice instances split the burst and share one budget', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.close())
  const out = new Sink()
  const summary = await runDemo(small({ requests: 30, redis: redis.url }), out)
  // Each instance alone would let 10 per window through: a peak within 10 means they shared one budget.
  checkSummary(t, summary, out.text, 30, 10)
  t.equal(summary.instances, 2)
  t.equal(new Set(summary.sluiceUrls).size, 2, 'two instances listened')
  t.match(out.text, /through 2 Sluices/)
  const keys = await redis.client().keys('sluice-demo:*')
  t.ok(keys.every((k) => /^sluice-demo:[0-9a-f]{8}:/.test(k)), 'keys only under a fresh demo prefix')
})

t.test('--keep keeps Sluice and the API running until stopped', async (t) => {
  const out = new Sink()
  const stop = new AbortController()
  const running = runDemo(small({ requests: 10, keep: true }), out, { stop: stop.signal })
  await out.until(/Kept running/)
  const url = /curl .* '(http:\/\/127\.0\.0\.1:\d+)(\/index\.php\?[^']+)'/.exec(out.text)
  t.ok(url, 'prints a curl command for the running Sluice')
  const res = await fetch(`${url![1]}${url![2]}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"status_id":1}' })
  t.equal(res.status, 200, 'a client of our own goes through')
  t.match(await res.json(), { ok: true, method: 'POST' }, 'answered by the emulated API')
  stop.abort()
  const summary = await running
  t.equal(summary.sluice.failures, 0)
  t.match(out.text, /stop: stopping\./)
  await t.rejects(fetch(`${url![1]}/_sluice/health`), 'stopped afterwards')
})

t.test('flags: defaults, values and errors that name the flag', async (t) => {
  const d = parseDemoArgs([])
  t.same([d.requests, d.limit, d.concurrency, d.keep, d.port, d.redis], [150, { count: 30, windowMs: 10_000 }, 20, false, 0, undefined])
  const o = parseDemoArgs(['--requests', '20', '--limit', '10/1s', '--keep', '--port', '9000', '--redis', 'redis://127.0.0.1:6379'])
  t.same([o.requests, o.limit, o.keep, o.port, o.redis], [20, { count: 10, windowMs: 1000 }, true, 9000, 'redis://127.0.0.1:6379'])
  const fails = (argv: string[], field: string, message: RegExp): void => {
    let caught: unknown
    try { parseDemoArgs(argv) } catch (err) { caught = err }
    t.ok(caught instanceof ConfigError, `${argv.join(' ')}: a ConfigError`)
    t.equal((caught as ConfigError).field, field, `${argv.join(' ')}: names ${field}`)
    t.match((caught as Error).message, message)
  }
  fails(['--limit', '3/yr'], '--limit', /unknown rate unit "yr"/)
  fails(['--requests', '0'], '--requests', /expected an integer from 1 to 100000, got "0"/)
  fails(['--requests', '5000'], '--requests', /take at least 1660 s; the demo is bounded to 5 min/)
  fails(['--redis', 'http://x'], '--redis', /redis:\/\//)
  fails(['--bogus'], '--bogus', /Unknown option/)
})

t.test('maxWait fits the whole burst, never below the default 60 s', async (t) => {
  const limit = { count: 30, windowMs: 10_000 }
  t.equal(demoMaxWaitMs(150, limit, 250), 60_000, '150 posts: last slot 41 s, the default fits')
  // 300 posts: the last slot is 9 windows of 10.25 s = 92.25 s away, plus one window of slack.
  t.equal(demoMaxWaitMs(300, limit, 250), 103_000)
})

/** The compiled CLI when dist/ is newer than every source file; otherwise the sources through tap's TypeScript loader. */
function cliCommand (): { args: string[], compiled: boolean } {
  const newestSourceMs = (dir: string): number => Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) =>
    e.isDirectory() ? newestSourceMs(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs))
  const compiled = join(ROOT, 'dist', 'src', 'cli.js')
  if (existsSync(compiled) && existsSync(join(ROOT, 'dist', 'src', 'demo', 'demo.js')) && statSync(compiled).mtimeMs >= newestSourceMs(join(ROOT, 'src'))) {
    return { args: [compiled], compiled: true }
  }
  return { args: ['--import', '@tapjs/typescript/import', join(ROOT, 'src', 'cli.ts')], compiled: false }
}

t.test('the CLI: sluice demo --requests 20 --limit 10/1s exits 0 with the summary', async (t) => {
  const { args, compiled } = cliCommand()
  t.comment(compiled ? 'running dist/src/cli.js' : 'dist is stale or missing: running src/cli.ts through the TypeScript loader')
  const child = spawn(process.execPath, [...args, 'demo', '--requests', '20', '--limit', '10/1s'], {
    cwd: ROOT,
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  clearTimeout(timer)
  t.equal(code, 0, `exit status 0 (stderr: ${stderr.slice(0, 500)})`)
  t.same(row(stdout, 'requests sent'), [20, 20])
  t.same(row(stdout, 'client-visible failures')[1], 0)
  t.ok(row(stdout, 'upstream 429s')[0] >= 1, 'the direct run met 429s')
  t.match(stdout, /^OK: through Sluice 20 of 20 posts succeeded/m)
})
