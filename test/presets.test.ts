// Presets: every shipped file is a valid route, flags and variables override it, a config-file route
// can name one, and an unknown name is an error that lists the known ones.
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { loadConfig } from '../src/config/load'
import { costsOf } from '../src/config/cost-rules'
import { loadPreset, presetNames } from '../src/config/preset'
import { parseRoute } from '../src/config/route'
import { ConfigError } from '../src/errors'

const EXPECTED = {
  'testrail-professional': { count: 180, windowMs: 60_000, key: 'instance', profile: 'testrail' },
  'testrail-enterprise': { count: 300, windowMs: 60_000, key: 'instance', profile: 'testrail' },
  testmo: { count: 60, windowMs: 60_000, key: 'instance', profile: 'testmo' },
  zulip: { count: 200, windowMs: 60_000, key: 'header', profile: 'zulip' },
  github: { count: 5000, windowMs: 3_600_000, key: 'header', profile: 'github' },
  'jira-cloud': { count: 10, windowMs: 1000, key: 'instance', profile: 'generic' }
} as const

function configError (t: Test, fn: () => unknown, field: string, includes: RegExp): void {
  try {
    fn()
    t.fail(`expected a ConfigError on ${field}`)
  } catch (err) {
    t.type(err, ConfigError)
    t.equal((err as ConfigError).field, field)
    t.match((err as Error).message, includes)
  }
}

t.test('the shipped presets are exactly the documented ones', async (t) => {
  t.same(presetNames(), Object.keys(EXPECTED).sort())
})

t.test('every preset parses into a valid route with the documented limit', async (t) => {
  for (const [name, want] of Object.entries(EXPECTED)) {
    const fields = loadPreset(name, '--preset')
    const route = parseRoute({ ...fields, upstream: 'https://api.example.com' }, `preset ${name}`)
    t.equal(route.limit.count, want.count, `${name} limit`)
    t.equal(route.limit.windowMs, want.windowMs, `${name} window`)
    t.equal(route.key.kind, want.key, `${name} key`)
    if (route.key.kind === 'header') t.equal(route.key.header, 'authorization', `${name} keyed by the credential`)
    t.equal(route.profile, want.profile, `${name} profile`)
    // Through the quick start, as `sluice --preset NAME --upstream URL` does.
    const config = loadConfig(['--preset', name, '--upstream', 'https://api.example.com'], {})
    t.same(config.routes[0], route, `${name} through --preset`)
  }
})

t.test('github supplies its upstream; the others need --upstream', async (t) => {
  t.equal(loadConfig(['--preset', 'github'], {}).routes[0].upstream, 'https://api.github.com')
  t.equal(loadConfig(['--preset', 'github'], {}).routes[0].concurrency, 100, 'GitHub\'s 100 concurrent requests per token')
  configError(t, () => loadConfig(['--preset', 'testrail-professional'], {}), '--upstream', /is required/)
})

t.test('flags and SLUICE_* variables override the preset', async (t) => {
  const base = ['--preset', 'testrail-professional', '--upstream', 'https://acme.testrail.io']
  const r = loadConfig([...base, '--limit', '150/min', '--max-wait', '5s', '--name', 'tr'], {}).routes[0]
  t.equal(r.limit.count, 150)
  t.equal(r.maxWaitMs, 5000)
  t.equal(r.name, 'tr')
  t.equal(r.algorithm, 'sliding-window', 'what is not overridden comes from the preset')
  t.equal(r.profile, 'testrail')

  const env = { SLUICE_PRESET: 'testrail-enterprise', SLUICE_UPSTREAM: 'https://acme.testrail.io', SLUICE_MAX_WAIT: '10s' }
  const e = loadConfig([], env).routes[0]
  t.equal(e.limit.count, 300, 'SLUICE_PRESET chooses the preset')
  t.equal(e.maxWaitMs, 10_000, 'a variable wins over the preset')
  t.equal(loadConfig(['--max-wait', '3s'], env).routes[0].maxWaitMs, 3000, 'a flag wins over the variable')
  t.equal(loadConfig(['--preset', 'testrail-professional'], env).routes[0].limit.count, 180, '--preset wins over SLUICE_PRESET')
  t.equal(loadConfig([], { ...env, SLUICE_LIMIT: '', SLUICE_ALGORITHM: '' }).routes[0].limit.count, 300, 'an empty variable counts as unset')

  const g = loadConfig(['--preset', 'github', '--algorithm', 'sliding-window'], {}).routes[0]
  t.equal(g.algorithm, 'sliding-window', 'switching algorithm drops the preset\'s token-bucket burst')
  t.equal(loadConfig(['--preset', 'github', '--burst', '5'], {}).routes[0].burst, 5)
})

t.test('a bad override names the flag', async (t) => {
  configError(t, () => loadConfig(['--preset', 'zulip', '--upstream', 'https://z.example', '--limit', '3/yr'], {}), '--limit', /unknown rate unit "yr"/)
})

t.test('an unknown preset is an error listing the known ones', async (t) => {
  configError(t, () => loadConfig(['--preset', 'testrail', '--upstream', 'https://acme.testrail.io'], {}), '--preset',
    /unknown preset "testrail"; known presets are github, jira-cloud, testmo, testrail-enterprise, testrail-professional, zulip/)
  configError(t, () => loadConfig(['--preset', '../package', '--upstream', 'https://x.example'], {}), '--preset', /unknown preset/)
  configError(t, () => loadConfig([], { SLUICE_PRESET: 'nope', SLUICE_UPSTREAM: 'https://x.example' }), '--preset', /unknown preset "nope"/)
})

t.test('config-file routes can name a preset; --preset with --config is an error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-presets-'))
  const file = join(dir, 'sluice.yaml')
  writeFileSync(file, [
    'routes:',
    '  - preset: github',
    '    prefix: /github',
    '  - preset: testrail-professional',
    '    prefix: /testrail',
    '    upstream: https://acme.testrail.io',
    '    maxWait: 20s'
  ].join('\n'))
  const config = loadConfig(['--config', file], {})
  t.equal(config.routes[0].upstream, 'https://api.github.com')
  t.equal(config.routes[0].limit.count, 5000)
  t.equal(config.routes[1].limit.count, 180)
  t.equal(config.routes[1].maxWaitMs, 20_000, 'the route\'s own field wins')

  writeFileSync(file, 'routes:\n  - preset: jira\n    upstream: https://acme.atlassian.net\n')
  configError(t, () => loadConfig(['--config', file], {}), 'routes[0].preset', /unknown preset "jira"; known presets are/)
  configError(t, () => loadConfig(['--config', file, '--preset', 'github'], {}), '--preset', /cannot be combined with --config/)
})

// The clients each preset assumes and how long they wait for one call (README "Presets"): a request
// held up to maxWait and then answered within the upstream timeout must reach the client before it
// gives up. The Testmo CLI gives up after 60 s (@testmo/testmo-api's ApiClient timeout); the clients
// of the other presets (testrail-api, zulip-js, Octokit) set no timeout of their own.
const CLIENT_TIMEOUT_MS: Readonly<Record<string, number | undefined>> = { testmo: 60_000 }

t.test('each preset answers within the timeout of the clients it assumes', async (t) => {
  for (const name of presetNames()) {
    const route = loadConfig(['--preset', name, '--upstream', 'https://api.example.com'], {}).routes[0]
    const clientMs = CLIENT_TIMEOUT_MS[name]
    if (clientMs === undefined) continue
    t.ok(route.maxWaitMs + route.timeoutMs < clientMs, `${name}: maxWait ${route.maxWaitMs} ms + timeout ${route.timeoutMs} ms < the client's ${clientMs} ms`)
  }
})

t.test('github books every limit GitHub documents, with its point costs', async (t) => {
  const route = loadConfig(['--preset', 'github'], {}).routes[0]
  t.same(route.limits?.map((l) => [l.name, l.rate.count, l.rate.windowMs, l.algorithm]), [
    ['primary', 5000, 3_600_000, 'token-bucket'],
    ['points', 900, 60_000, 'sliding-window'],
    ['content', 80, 60_000, 'sliding-window'],
    ['content-hourly', 500, 3_600_000, 'sliding-window']
  ])
  const names = (route.limits ?? []).map((l) => l.name)
  t.same(costsOf(route.cost, names, 'GET', '/repos/a/b'), [1, 1, 0, 0], 'a read: 1 point, no content')
  t.same(costsOf(route.cost, names, 'POST', '/repos/a/b/issues'), [1, 5, 1, 1], 'a write: 5 points, 1 content')
  t.equal(route.concurrency, 100)
  const own = loadConfig(['--preset', 'github', '--limit', '15000/h'], {}).routes[0]
  t.equal(own.limits, undefined, 'a limit of one\'s own replaces the list')
  t.same(own.cost, [], 'and the costs that named its limits')
})
