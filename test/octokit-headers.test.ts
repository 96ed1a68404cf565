// Issue 20, item 5: headers a client library can trust. Octokit with its throttling plugin, through
// Sluice's GitHub preset, against a GitHub-shaped emulator: successful answers carry GitHub's own
// X-RateLimit-* untouched (Sluice's view is in RateLimit/RateLimit-Policy), and a limit Sluice cannot
// wait out reaches Octokit as a primary rate limit (remaining 0, reset at Retry-After): onRateLimit fires.
import t from 'tap'
import { Octokit } from '@octokit/rest'
import { throttling } from '@octokit/plugin-throttling'
import { loadPreset } from '../src/config/preset'
import { startEmulator } from '../src/emulator'
import { startSluice } from './helpers/sluice'

t.test('Octokit\'s throttling plugin sees GitHub\'s headers, and onRateLimit fires for a limit Sluice cannot wait out', async (t) => {
  const emulator = await startEmulator({ profile: 'github', limit: 3, windowMs: 60_000, announce: true })
  const s = await startSluice([{ ...loadPreset('github', '--preset'), upstream: emulator.url, maxWait: '2s' }])
  t.teardown(async () => { await s.close(); await emulator.close() })

  const limited: number[] = []
  let secondary = 0
  const ThrottledOctokit = Octokit.plugin(throttling)
  const octokit = new ThrottledOctokit({
    auth: 'ghp_test-token',
    baseUrl: s.url,
    throttle: {
      onRateLimit: (retryAfter: number) => { limited.push(retryAfter); return false },
      onSecondaryRateLimit: () => { secondary++; return false }
    }
  })

  for (let i = 0; i < 3; i++) {
    const res = await octokit.request('GET /repos/{owner}/{repo}', { owner: 'o', repo: `r${i}` })
    t.equal(res.status, 200)
    t.equal(res.headers['x-ratelimit-limit'], '3', 'GitHub\'s own limit, untouched')
    t.equal(res.headers['x-ratelimit-remaining'], String(2 - i), 'GitHub\'s own remaining, untouched')
    t.equal(res.headers['x-ratelimit-used'], String(i + 1), 'with its x-ratelimit-used: one consistent set')
    t.match(res.headers['ratelimit-policy'], /^"github(:[a-z-]+)?";q=\d+;w=\d+(, "github:[a-z-]+";q=\d+;w=\d+)*$/, 'Sluice\'s view is in RateLimit-Policy')
  }
  for (let i = 0; i < 2; i++) {
    const err = await octokit.request('GET /repos/{owner}/{repo}', { owner: 'o', repo: 'over' }).then(() => undefined, (e: { status: number, response?: { headers: Record<string, string> } }) => e)
    t.equal(err?.status, 429, `request ${i + 4}: Sluice cannot wait out GitHub's reset within 2 s`)
    const headers = err?.response?.headers ?? {}
    t.equal(headers['x-ratelimit-remaining'], '0', 'the refusal says remaining 0')
    t.ok(Math.abs(Number(headers['x-ratelimit-reset']) - Math.ceil(Date.now() / 1000) - Number(headers['retry-after'])) <= 1, 'and a reset at its Retry-After')
  }
  t.equal(limited.length, 2, 'onRateLimit fired for both')
  t.ok(limited.every((s) => s > 2), `with GitHub's wait (${limited.join(', ')} s)`)
  t.equal(secondary, 0, 'never taken for a secondary limit')
})
