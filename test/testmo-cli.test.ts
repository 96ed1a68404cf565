// The Testmo CLI itself (@testmo/testmo-cli, a dev dependency), pointed straight at Sluice's TLS
// listener with nothing changed but the address: parallel submits of thousands of results reach a
// Testmo emulator with a strict limit without one 429; Testmo's own error messages are printed by the
// CLI; a request that cannot start before the CLI gives up (60 s) gets Sluice's own answer first.
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startSluiceProcess, transpiledCli, type SluiceProcess } from './helpers/sluice-process'
import { ARCHIVED_MESSAGE, ARCHIVED_PROJECT, startTestmoEmulator, type TestmoEmulator } from './helpers/testmo-emulator'

const CLI = require.resolve('@testmo/testmo-cli/dist/index.js')
const JOBS = 4
const RESULTS_PER_JOB = 1500

interface Run { code: number | null, stdout: string, stderr: string, ms: number }

function spawnRun (args: string[], env: Record<string, string>): Promise<Run> {
  const started = Date.now()
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }))
  })
}

function junit (job: number, count: number): string {
  const cases = Array.from({ length: count }, (_, i) => `    <testcase classname="job${job}.Suite${i % 10}" name="job ${job} test ${i}" time="0.01"/>`)
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n  <testsuite name="job-${job}" tests="${count}">\n${cases.join('\n')}\n  </testsuite>\n</testsuites>\n`
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-testmo-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let emulator: TestmoEmulator
let sluice: SluiceProcess
let env: Record<string, string>

function submit (job: number, project = 1): Promise<Run> {
  return spawnRun([CLI, 'automation:run:submit', '--instance', sluice.url, '--project-id', String(project), '--name', `job ${job}`,
    '--source', 'ci', '--results', join(dir, `job-${job}`, '*.xml'), '--no-ansi'], env)
}

t.before(async () => {
  const certs = await spawnRun([transpiledCli(), 'cert', join(dir, 'cert')], {})
  if (certs.code !== 0) throw new Error(`sluice cert failed: ${certs.stderr}`)
  // Strict: 10 in any second. Sluice paces the testmo preset at 8/s (flags override the preset).
  emulator = await startTestmoEmulator(10, 1000)
  sluice = await startSluiceProcess(['--preset', 'testmo', '--upstream', emulator.url, '--limit', '8/s',
    '--tls-cert', join(dir, 'cert', 'cert.pem'), '--tls-key', join(dir, 'cert', 'key.pem')])
  env = { TESTMO_TOKEN: 'testmo-token', NODE_EXTRA_CA_CERTS: join(dir, 'cert', 'ca.pem') }
  for (let job = 0; job < JOBS; job++) {
    mkdirSync(join(dir, `job-${job}`))
    // Two files per job: the CLI reads a glob of them, as CI jobs write them.
    writeFileSync(join(dir, `job-${job}`, 'a.xml'), junit(job, RESULTS_PER_JOB / 2))
    writeFileSync(join(dir, `job-${job}`, 'b.xml'), junit(job + 100, RESULTS_PER_JOB / 2))
  }
})
t.teardown(async () => { await sluice?.kill(); await emulator?.close() })

t.test(`${JOBS} parallel submits of ${RESULTS_PER_JOB} results each through https://127.0.0.1:PORT`, async (t) => {
  const runs = await Promise.all(Array.from({ length: JOBS }, async (_, job) => await submit(job)))
  runs.forEach((r, job) => t.equal(r.code, 0, `job ${job} exits 0 after ${r.ms} ms: ${r.stderr.trim()}`))
  t.equal(emulator.tooMany, 0, 'the emulator\'s strict limit was never hit: 0 upstream 429s')
  t.equal(emulator.results.size, JOBS * RESULTS_PER_JOB, `every result arrived (${emulator.results.size})`)
  t.same([...emulator.results.values()].filter((n) => n !== 1), [], 'each exactly once')
  t.equal(emulator.completedRuns.size, JOBS, 'every run was completed')
})

t.test('a Testmo error is printed by the CLI with Testmo\'s own message', async (t) => {
  const r = await submit(0, ARCHIVED_PROJECT)
  t.not(r.code, 0, 'the CLI fails, as it does against Testmo')
  t.match(r.stderr, `Server response (403): ${ARCHIVED_MESSAGE}`, r.stderr.trim())
  t.notMatch(r.stderr, '[none]')
})

t.test('a request that cannot start before the CLI gives up gets Sluice\'s answer at once, with the reason', async (t) => {
  // One 429 without Retry-After: Testmo asks for at least 60 s, longer than the CLI waits for any call.
  emulator.pushBackNext()
  const first = await submit(1)
  t.not(first.code, 0)
  t.match(first.stderr, /Server response \(429\): Too Many Requests/, 'the upstream\'s own 429, its message printed')
  t.ok(first.ms < 15_000, `answered in ${first.ms} ms, long before the CLI's 60 s timeout`)
  const second = await submit(2)
  t.not(second.code, 0)
  t.match(second.stderr, /Server response \(429\): .*paused .*upstream rate limit \(HTTP 429\)/, `Sluice's own 429 names the pause: ${second.stderr.trim()}`)
  t.ok(second.ms < 15_000, `answered in ${second.ms} ms`)
  t.equal(emulator.tooMany, 1, 'nothing else reached the paused upstream')
})
