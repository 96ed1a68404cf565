// The compiled command, as users and the container run it: `node dist/src/cli.js`. dist/ is built by
// `npm ci` (the prepare script). When any source is newer than dist/src/cli.js, this file compiles a
// private copy under .tap/ instead (never rewriting dist/, which other test files may be running).
import { spawn, spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, extname, join, relative } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { SERVE_OPTIONS } from '../src/config/load'
import { startRedis } from './helpers/redis'

const ROOT = join(__dirname, '..')

function newestSource (dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path))
    else newest = Math.max(newest, statSync(path).mtimeMs)
  }
  return newest
}

function copyAssets (from: string, to: string): void {
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const path = join(from, entry.name)
    if (entry.isDirectory()) copyAssets(path, to)
    else if (['.lua', '.html'].includes(extname(entry.name))) {
      const target = join(to, relative(ROOT, path))
      mkdirSync(dirname(target), { recursive: true })
      copyFileSync(path, target)
    }
  }
}

/** dist/src/cli.js when it is up to date, else a fresh private build laid out like the package. */
function compiledCli (): { cli: string, cleanup: () => void } {
  const shipped = join(ROOT, 'dist', 'src', 'cli.js')
  let built = 0
  try {
    built = statSync(shipped).mtimeMs
  } catch {}
  if (built >= newestSource(join(ROOT, 'src'))) return { cli: shipped, cleanup: () => {} }
  mkdirSync(join(ROOT, '.tap'), { recursive: true })
  const dir = mkdtempSync(join(ROOT, '.tap', 'cli-build-'))
  const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(dir, 'dist')],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 })
  if (tsc.status !== 0) throw new Error(`tsc failed:\n${tsc.stdout}\n${tsc.stderr}`)
  copyAssets(join(ROOT, 'src'), join(dir, 'dist'))
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'))
  cpSync(join(ROOT, 'config'), join(dir, 'config'), { recursive: true })
  return { cli: join(dir, 'dist', 'src', 'cli.js'), cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

const { cli: CLI, cleanup } = compiledCli()
t.teardown(cleanup)

function run (args: string[], env: Record<string, string> = {}): { status: number | null, stdout: string, stderr: string } {
  // Only PATH and HOME from the outside: a SLUICE_* or REDIS_URL of the developer must not leak in.
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env } })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('--version prints the package version', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  const r = run(['--version'])
  t.equal(r.status, 0)
  t.equal(r.stdout, `${pkg.version}\n`)
})

t.test('--help shows usage, the presets and examples', async (t) => {
  for (const args of [['--help'], ['-h'], ['--preset', 'github', '--help']]) {
    const r = run(args)
    t.equal(r.status, 0, args.join(' '))
    t.match(r.stdout, /Usage:/)
    t.match(r.stdout, /--preset NAME/)
    t.match(r.stdout, /github, jira-cloud, testmo, testrail-enterprise, testrail-professional, zulip/)
    t.match(r.stdout, /Examples:\n {2}sluice --upstream https:\/\/acme\.testrail\.io --limit 180\/min/)
  }
  const help = run(['--help']).stdout
  const missing = Object.keys(SERVE_OPTIONS).filter((flag) => !new RegExp(`\\s--${flag}\\s`).test(help))
  t.same(missing, [], 'every flag the command accepts is in --help')
})

t.test('bad flags and config stop with exit status 2 and one line naming the field', async (t) => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [['--upstream', 'https://acme.testrail.io', '--limit', '3/yr'], {}, /^sluice: config error: --limit: unknown rate unit "yr"/],
    [['--upstream', 'https://acme.testrail.io', '--limit', '180/min', '--bogus', 'x'], {}, /^sluice: config error: --bogus: /],
    [['--limit', '180/min'], {}, /^sluice: config error: --upstream: is required/],
    [['--preset', 'testrail', '--upstream', 'https://acme.testrail.io'], {}, /^sluice: config error: --preset: unknown preset "testrail"; known presets are github, /],
    [[], { SLUICE_PRESET: 'zulip', SLUICE_UPSTREAM: 'https://z.example', SLUICE_MAX_WAIT: 'soon' }, /^sluice: config error: --max-wait: expected a duration/],
    [['--preset', 'github', '--port', '99999'], {}, /^sluice: config error: port: expected an integer from 0 to 65535/],
    [['check-config', 'does/not/exist.yaml'], {}, /^sluice: config error: --config: cannot read does\/not\/exist\.yaml: ENOENT/],
    [['check-config'], {}, /^sluice: config error: check-config: expected a config file/]
  ]
  for (const [args, env, message] of cases) {
    const r = run(args, env)
    t.equal(r.status, 2, `exit 2: ${args.join(' ')}`)
    t.match(r.stderr, message)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    t.equal(r.stdout, '', 'nothing on stdout')
  }
})

t.test('check-config prints the effective routes', async (t) => {
  const r = run(['check-config', 'config/sluice.example.yaml'])
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /route testrail: \/testrail -> https:\/\/acme\.testrail\.io {2}180\/min \(sliding-window/)
  t.match(r.stdout, /config OK\n$/)
  t.match(r.stdout, /\n {2}upstream: timeout 30000ms, connectTimeout 10000ms, retries 2 \(GET, HEAD, PUT, DELETE, OPTIONS\)/)
  t.match(r.stdout, /\n {2}shaping: mode enforce, onStoreError local, concurrency no cap, client header:x-sluice-client, priority normal/)
  // Every setting of a route is shown; the weights are keyed by client header values, so only counted.
  const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, [
    'redis: redis://:s3cret-pw@127.0.0.1:6390/0',
    'routes:',
    '  - { name: gh, preset: github, upstream: "http://127.0.0.1:9", mode: shadow, onStoreError: closed, retryMethods: [POST],',
    '      cost: [{ method: POST, path: "/repos/*", cost: 5 }], weights: { nightly-team-x: 3 } }'
  ].join('\n'))
  const full = run(['check-config', file])
  t.equal(full.status, 0, full.stderr)
  t.match(full.stdout, /^store: redis \(redis:\/\/:\*\*\*@127\.0\.0\.1:6390\/0, key prefix "sluice:"\)/)
  t.match(full.stdout, /retries 2 \(GET, HEAD, PUT, DELETE, OPTIONS, POST\)/)
  t.match(full.stdout, /shaping: mode shadow, onStoreError closed, concurrency 100, .*cost POST \/repos\/\* = 5, weights 1/)
  t.notMatch(full.stdout, /s3cret-pw|nightly-team-x/, 'no password, no client name')
  // ioredis also reads a password from the query.
  writeFileSync(file, 'redis: redis://127.0.0.1:6390/?password=QUERY-PW-9&db=0\nroutes:\n  - { upstream: "http://127.0.0.1:9", limit: 1/s }\n')
  const query = run(['check-config', file])
  t.match(query.stdout, /^store: redis \(redis:\/\/127\.0\.0\.1:6390\/\?password=\*\*\*&db=0,/)
  t.notMatch(query.stdout, /QUERY-PW-9/)
})

t.test('the start-up log names the shared Redis with its password masked', async (t) => {
  const redis = await startRedis(['--requirepass', 's3cret-pw'])
  t.teardown(() => redis.close())
  const url = redis.url.replace('redis://', 'redis://:s3cret-pw@')
  const prefix = redis.prefix()
  const child = spawn(process.execPath, [CLI, '--upstream', 'http://127.0.0.1:9', '--limit', '1/s', '--port', '0', '--redis', url, '--key-prefix', prefix], {
    cwd: ROOT, env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
  t.teardown(() => { clearTimeout(killer); child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const line = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.stdout.on('data', () => {
      const found = out.split('\n').find((l) => l.includes('sluice listening on'))
      if (found !== undefined) resolve(JSON.parse(found) as Record<string, unknown>)
    })
    child.once('exit', () => reject(new Error(`exited before listening: ${out}`)))
  })
  t.equal(line.store, 'redis')
  t.equal(line.redis, redis.url.replace('redis://', 'redis://:***@'), `the URL, masked: ${String(line.redis)}`)
  t.equal(line.keyPrefix, prefix, 'and the key prefix')
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit on SIGTERM')
  t.notMatch(out, /s3cret-pw/, 'the password never reaches the output')
})

t.test('the compiled CLI serves with a preset and stops on SIGTERM', async (t) => {
  const child = spawn(process.execPath, [CLI, '--preset', 'github', '--upstream', 'http://127.0.0.1:9', '--port', '0'], {
    cwd: ROOT, env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe']
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const killer = setTimeout(() => child.kill('SIGKILL'), 15_000)
  t.teardown(() => { clearTimeout(killer); child.kill('SIGKILL') })
  const url = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const m = /sluice listening on (http:\/\/[^"\s]+)/.exec(out)
      if (m !== null) resolve(m[1])
    })
    child.once('exit', () => reject(new Error(`exited before listening: ${out}`)))
  })
  const health = await request(`${url}/_sluice/health`)
  t.equal(health.statusCode, 200)
  t.same(await health.body.json(), { status: 'ok' })
  // The github preset keys by credential: a request without Authorization is refused before any upstream call.
  const bare = await request(`${url}/rate_limit`)
  t.equal(bare.statusCode, 400)
  t.match(await bare.body.json(), { error: { code: 'BAD_REQUEST' } })
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit on SIGTERM')
})
