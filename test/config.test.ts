// Flags, environment and YAML combine in a fixed order; every mistake names its field.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import t, { type Test } from 'tap'
import { loadConfig } from '../src/config/load'
import { parseDuration, parseRate } from '../src/config/units'
import { ConfigError } from '../src/errors'

const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'))
/** Assert that `fn` throws a ConfigError whose one-line message matches. */
function throwsConfig (t: Test, fn: () => unknown, message: RegExp, name: string): void {
  try {
    fn()
    t.fail(`${name}: no error`)
  } catch (err) {
    t.type(err, ConfigError, `${name}: a ConfigError`)
    t.match((err as Error).message, message, name)
    t.notMatch((err as Error).message, /\n/, `${name}: one line`)
  }
}

function file (name: string, text: string): string {
  const p = join(dir, name)
  writeFileSync(p, text)
  return p
}

t.test('units', async (t) => {
  t.same(parseRate('180/min'), { count: 180, windowMs: 60_000 })
  t.same(parseRate('20/s'), { count: 20, windowMs: 1000 })
  t.same(parseRate('5000/h'), { count: 5000, windowMs: 3_600_000 })
  t.same(parseRate('30/10s'), { count: 30, windowMs: 10_000 })
  t.throws(() => parseRate('0/s'), /at least 1/)
  t.throws(() => parseRate('fast'), /expected a rate/)
  t.equal(parseDuration('500ms'), 500)
  t.equal(parseDuration('30s'), 30_000)
  t.equal(parseDuration('2m'), 120_000)
  t.equal(parseDuration('1.5s'), 1500)
  t.throws(() => parseDuration('soon'), /expected a duration/)
})

t.test('quick start flags, environment and defaults', async (t) => {
  const c = loadConfig(['--upstream', 'https://acme.testrail.io/', '--limit', '180/min'], {})
  t.equal(c.host, '127.0.0.1')
  t.equal(c.port, 8080)
  t.equal(c.redis, undefined, 'memory store by default')
  t.equal(c.routes.length, 1)
  const r = c.routes[0]
  t.equal(r.upstream, 'https://acme.testrail.io')
  t.same(r.limit, { count: 180, windowMs: 60_000 })
  t.equal(r.algorithm, 'token-bucket')
  t.equal(r.burst, 1)
  t.equal(r.maxWaitMs, 60_000)
  t.equal(r.marginMs, 600, 'margin: 1% of a minute')
  t.equal(r.prefix, '/')

  const env = loadConfig(['--limit', '20/s'], { SLUICE_UPSTREAM: 'http://127.0.0.1:9', SLUICE_MAX_WAIT: '5s', SLUICE_PORT: '9090', REDIS_URL: 'redis://127.0.0.1:6379' })
  t.equal(env.routes[0].maxWaitMs, 5000, 'SLUICE_MAX_WAIT')
  t.equal(env.port, 9090)
  t.equal(env.redis, 'redis://127.0.0.1:6379', 'REDIS_URL is honoured')
  t.equal(env.routes[0].marginMs, 100, 'margin at least 100 ms')

  const flagWins = loadConfig(['--upstream', 'http://a', '--limit', '1/s', '--max-wait', '1s', '--redis', 'redis://b:1'], { SLUICE_MAX_WAIT: '9s', REDIS_URL: 'redis://c:2', SLUICE_REDIS: 'redis://d:3' })
  t.equal(flagWins.routes[0].maxWaitMs, 1000, 'a flag wins over its variable')
  t.equal(flagWins.redis, 'redis://b:1', '--redis wins over SLUICE_REDIS and REDIS_URL')

  const fair = loadConfig(['--upstream', 'http://a', '--limit', '1/s', '--client', 'header:X-CI-Job'], { SLUICE_PRIORITY: 'low' })
  t.same(fair.routes[0].client, { header: 'x-ci-job' }, '--client names the client header (lower-cased)')
  t.equal(fair.routes[0].priority, 'low', 'SLUICE_PRIORITY sets the route default')
})

t.test('YAML config with several routes; global flags override the file', async (t) => {
  const path = file('ok.yaml', `
port: 7000
redis: redis://file:6379
routes:
  - name: testrail
    prefix: /testrail/
    upstream: https://acme.testrail.io
    limit: 180/min
    algorithm: sliding-window
  - name: zulip
    prefix: /zulip
    upstream: https://acme.zulipchat.com/api/v1
    limit: 200/min
    key: header:Authorization
    maxWait: 10s
`)
  const c = loadConfig(['--config', path, '--port', '7001'], {})
  t.equal(c.port, 7001, '--port overrides the file')
  t.equal(c.redis, 'redis://file:6379')
  t.equal(c.routes[0].prefix, '/testrail', 'a trailing slash on the prefix is dropped')
  t.same(c.routes[1].key, { kind: 'header', header: 'authorization' })
  t.equal(c.routes[1].upstream, 'https://acme.zulipchat.com/api/v1')
  const redisFlag = loadConfig(['--config', path, '--redis', 'redis://flag:1'], {})
  t.equal(redisFlag.redis, 'redis://flag:1', '--redis overrides the file')
  const example = loadConfig(['--config', join(__dirname, '..', 'config', 'sluice.example.yaml')], {})
  t.ok(example.routes.length >= 3, 'the shipped example is valid')
})

const BAD: Array<[string, string[], Record<string, string>, RegExp]> = [
  ['missing upstream', ['--limit', '1/s'], {}, /^config error: --upstream: is required/],
  ['missing limit', ['--upstream', 'http://a'], {}, /^config error: --limit: is required/],
  ['bad rate unit', ['--upstream', 'http://a', '--limit', '3/yr'], {}, /^config error: --limit: unknown rate unit "yr"/],
  ['bad duration', ['--upstream', 'http://a', '--limit', '3/s', '--max-wait', 'forever'], {}, /^config error: --max-wait: expected a duration/],
  ['bad algorithm', ['--upstream', 'http://a', '--limit', '3/s', '--algorithm', 'leaky'], {}, /^config error: --algorithm: expected one of token-bucket, sliding-window, got "leaky"/],
  ['burst above limit', ['--upstream', 'http://a', '--limit', '3/s', '--burst', '4'], {}, /^config error: --burst: expected an integer from 1 to 3, got "4"/],
  ['ftp upstream', ['--upstream', 'ftp://a', '--limit', '3/s'], {}, /^config error: --upstream: expected an http:\/\/ or https:\/\/ URL, got protocol ftp:/],
  ['credentials in upstream', ['--upstream', 'https://u:p@a', '--limit', '3/s'], {}, /^config error: --upstream: credentials in the upstream URL are not allowed/],
  ['bad key', ['--upstream', 'http://a', '--limit', '3/s', '--key', 'cookie'], {}, /^config error: --key: expected "instance" or "header:<name>"/],
  ['bad port', ['--upstream', 'http://a', '--limit', '3/s', '--port', '99999'], {}, /^config error: port: expected an integer from 0 to 65535/],
  ['bad redis', ['--upstream', 'http://a', '--limit', '3/s', '--redis', 'http://x'], {}, /^config error: redis: expected a redis:\/\/ or rediss:\/\/ URL/],
  ['unknown flag', ['--upstream', 'http://a', '--limt', '3/s'], {}, /^config error: --limt: Unknown option '--limt'/],
  ['env counts too', ['--upstream', 'http://a'], { SLUICE_LIMIT: '3/lightyear' }, /^config error: --limit: unknown rate unit/],
  ['reserved prefix', ['--upstream', 'http://a', '--limit', '3/s', '--prefix', '/_sluice/x'], {}, /^config error: --prefix: \/_sluice is reserved/],
  ['bad client', ['--upstream', 'http://a', '--limit', '3/s', '--client', 'bogus'], {}, /^config error: --client: expected "header:<name>"/],
  ['bad priority', ['--upstream', 'http://a', '--limit', '3/s', '--priority', 'urgent'], {}, /^config error: --priority: expected one of high, normal, low, got "urgent"/]
]

t.test('bad flags name the field', async (t) => {
  for (const [name, argv, env, message] of BAD) {
    throwsConfig(t, () => loadConfig(argv, env), message, name)
  }
})

t.test('bad files name the field', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['not yaml', 'routes: [\n  - {', /^config error: --config: .* is not valid YAML/],
    ['no routes', 'port: 1\n', /^config error: routes: expected a list of routes/],
    ['unknown top-level', 'routes: []\nprot: 1\n', /^config error: prot: unknown top-level field/],
    ['unknown route field', 'routes:\n  - {upstream: "http://a", limit: 1/s, limt: 2}\n', /^config error: routes\[0\]\.limt: unknown field/],
    ['route error path', 'routes:\n  - {upstream: "http://a", limit: 1/s}\n  - {name: b, prefix: /b, upstream: "http://b", limit: 1/s, maxQueue: -1}\n', /^config error: routes\[1\]\.maxQueue: expected an integer from 0/],
    ['duplicate prefix', 'routes:\n  - {name: a, upstream: "http://a", limit: 1/s}\n  - {name: b, upstream: "http://b", limit: 1/s}\n', /^config error: routes\[1\]\.prefix: duplicate prefix "\/"/],
    ['burst with sliding window', 'routes:\n  - {upstream: "http://a", limit: 5/s, algorithm: sliding-window, burst: 2}\n', /^config error: routes\[0\]\.burst: applies to token-bucket only/]
  ]
  for (const [name, text, message] of cases) {
    const path = file(`${name.replace(/\W/g, '-')}.yaml`, text)
    throwsConfig(t, () => loadConfig(['--config', path], {}), message, name)
  }
  t.throws(() => loadConfig(['--config', join(dir, 'missing.yaml')], {}), /config error: --config: cannot read .*missing\.yaml: ENOENT/)
  const path = file('mix.yaml', 'routes:\n  - {upstream: "http://a", limit: 1/s}\n')
  t.throws(() => loadConfig(['--config', path, '--limit', '5/s'], {}), /config error: --limit: describes the single quick-start route and cannot be combined with --config/)
})

t.test('the CLI exits 2 with one line naming the field, and starts nothing', async (t) => {
  const cli = join(__dirname, '..', 'src', 'cli.ts')
  const run = (args: string[]): ReturnType<typeof spawnSync> => spawnSync(process.execPath, [...process.execArgv, cli, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, SLUICE_UPSTREAM: '', SLUICE_LIMIT: '' } })
  const bad = run(['--upstream', 'http://127.0.0.1:9', '--limit', '3/yr', '--port', '0'])
  t.equal(bad.status, 2)
  t.equal(bad.stdout, '')
  t.match(bad.stderr, /^sluice: config error: --limit: unknown rate unit "yr" in "3\/yr": use \/s, \/min or \/h\n$/)
  const check = run(['check-config', join(__dirname, '..', 'config', 'sluice.example.yaml')])
  t.equal(check.status, 0)
  t.match(check.stdout, /route testrail: \/testrail -> https:\/\/acme\.testrail\.io {2}180\/min/)
})
