// Delays read from upstream answers. Every result is in milliseconds; the classic bug in
// this field is seconds where ms were meant, so the expected values are written out.
import t from 'tap'
import { clampDelayMs, parseRateLimitHeaders, parseResetHeader, parseRetryAfter, retryAfterTextMs, upstreamDelayMs } from '../src/upstream/retry-after'
import { getProfile, isProfileName, PROFILE_NAMES } from '../src/profiles'
import { decodeErrorBody } from '../src/upstream/normalize'

const NOW_MS = Date.parse('2025-01-01T00:00:00Z')
const NOW_S = NOW_MS / 1000

t.test('parseRetryAfter', async t => {
  const cases: Array<[string | undefined, number | undefined, string]> = [
    ['1', 1000, 'integer seconds'],
    ['120', 120_000, 'integer seconds'],
    [' 30 ', 30_000, 'surrounding whitespace'],
    ['28.7', 28_700, 'Zulip float seconds'],
    ['0', 0, 'zero stays zero; clamping is the caller\'s job'],
    ['Wed, 01 Jan 2025 00:02:00 GMT', 120_000, 'IMF-fixdate'],
    ['Wednesday, 01-Jan-25 00:01:00 GMT', 60_000, 'RFC 850 date'],
    ['Tue, 31 Dec 2024 23:00:00 GMT', 0, 'a date in the past is no wait'],
    [undefined, undefined, 'missing'],
    ['', undefined, 'empty'],
    ['-5', undefined, 'negative'],
    ['1e3', undefined, 'exponent is not delay-seconds'],
    ['5 seconds', undefined, 'trailing words'],
    ['soon', undefined, 'words'],
    ['Wed, 99 Foo 2025 99:99:99 GMT', undefined, 'an unparseable date']
  ]
  for (const [value, expected, why] of cases) {
    t.equal(parseRetryAfter(value, NOW_MS), expected, `${JSON.stringify(value)}: ${why}`)
  }
  t.equal(parseRetryAfter('2025', NOW_MS), 2_025_000, 'digits are delay-seconds, never a year')
  // asctime carries no zone and Date.parse reads it as local time; only that it parses is portable.
  t.type(parseRetryAfter('Wed Jan  1 00:00:30 2025', NOW_MS), 'number', 'asctime date')
})

t.test('parseResetHeader detects epoch seconds, epoch ms, delta seconds and ISO 8601', async t => {
  t.equal(parseResetHeader(String(NOW_S + 600), NOW_MS), 600_000, 'epoch seconds (GitHub, Zulip)')
  t.equal(parseResetHeader(String(NOW_MS + 1500), NOW_MS), 1500, 'epoch milliseconds')
  t.equal(parseResetHeader('30', NOW_MS), 30_000, 'delta seconds (IETF drafts)')
  t.equal(parseResetHeader('1.5', NOW_MS), 1500, 'fractional delta seconds')
  t.equal(parseResetHeader('1000000000', NOW_MS), 1_000_000_000_000, 'exactly 1e9 is still a delta (the threshold is exclusive)')
  t.equal(parseResetHeader('1000000001', NOW_MS), 0, 'just above 1e9 is an epoch in 2001: already past')
  t.equal(parseResetHeader(String(NOW_S - 10), NOW_MS), 0, 'an epoch in the past is no wait')
  t.equal(parseResetHeader('2025-01-01T00:00:45Z', NOW_MS), 45_000, 'ISO 8601 UTC')
  t.equal(parseResetHeader('2025-01-01T01:00:45+01:00', NOW_MS), 45_000, 'ISO 8601 with offset')
  t.equal(parseResetHeader('2025-01-01T00:00:45.250Z', NOW_MS), 45_250, 'ISO 8601 with fraction')
  t.equal(parseResetHeader('Wed, 01 Jan 2025 00:00:10 GMT', NOW_MS), 10_000, 'HTTP-date')
  t.equal(parseResetHeader('tomorrow', NOW_MS), undefined)
  t.equal(parseResetHeader('-30', NOW_MS), undefined)
  t.equal(parseResetHeader(undefined, NOW_MS), undefined)
})

t.test('parseRateLimitHeaders: X-RateLimit-*', async t => {
  t.same(parseRateLimitHeaders({
    'x-ratelimit-limit': '5000',
    'x-ratelimit-remaining': '0',
    'x-ratelimit-reset': String(NOW_S + 60)
  }, NOW_MS), { limit: 5000, remaining: 0, resetMs: 60_000 })
  t.same(parseRateLimitHeaders({ 'X-RateLimit-Limit': '180', 'X-RateLimit-Remaining': '17' }, NOW_MS), { limit: 180, remaining: 17 }, 'header names in any case')
  t.same(parseRateLimitHeaders({ 'RateLimit-Limit': '100', 'RateLimit-Remaining': '5', 'RateLimit-Reset': '20' }, NOW_MS), { limit: 100, remaining: 5, resetMs: 20_000 }, 'unprefixed draft 06 fields')
  t.same(parseRateLimitHeaders({ 'x-ratelimit-limit': 'lots', 'x-ratelimit-remaining': '-1' }, NOW_MS), {}, 'garbage is ignored, not guessed at')
  t.same(parseRateLimitHeaders({}, NOW_MS), {})
})

t.test('parseRateLimitHeaders: IETF draft 11 structured fields', async t => {
  t.same(parseRateLimitHeaders({
    ratelimit: '"default";r=0;t=30',
    'ratelimit-policy': '"default";q=180;w=60'
  }, NOW_MS), { limit: 180, remaining: 0, resetMs: 30_000, windowMs: 60_000 })
  t.same(parseRateLimitHeaders({
    ratelimit: '"burst";r=40;t=1, "daily";r=0;t=3600',
    'ratelimit-policy': '"burst";q=100;w=1, "daily";q=5000;w=86400'
  }, NOW_MS), { limit: 5000, remaining: 0, resetMs: 3_600_000, windowMs: 86_400_000 }, 'the most constrained policy wins and its own policy is used')
  t.same(parseRateLimitHeaders({ ratelimit: ['"a";r=9;t=5', '"b";r=2;t=8'] }, NOW_MS), { remaining: 2, resetMs: 8000 }, 'repeated header lines form one list')
  t.same(parseRateLimitHeaders({ ratelimit: 'limit=100, remaining=0, reset=45', 'ratelimit-policy': '100;w=60' }, NOW_MS),
    { limit: 100, remaining: 0, resetMs: 45_000, windowMs: 60_000 }, 'the older dictionary form (drafts up to 07)')
  t.same(parseRateLimitHeaders({ 'x-ratelimit-remaining': '3', ratelimit: '"d";r=0;t=9' }, NOW_MS), { remaining: 3, resetMs: 9000 }, 'X- headers take precedence per field')
  t.same(parseRateLimitHeaders({ ratelimit: '"x;y";r=1;t=2' }, NOW_MS), { remaining: 1, resetMs: 2000 }, 'a ; inside a quoted name does not split')
  t.same(parseRateLimitHeaders({ ratelimit: ';;,,=,"', 'ratelimit-policy': 'q=;w=x' }, NOW_MS), {}, 'nonsense yields nothing')
})

t.test('retryAfterTextMs', async t => {
  t.equal(retryAfterTextMs('API Rate Limit Exceeded - 180 per minute maximum allowed. Retry after 1 seconds.'), 1000, 'TestRail')
  t.equal(retryAfterTextMs('retry after 12 second'), 12_000)
  t.equal(retryAfterTextMs('Please try again in 2.5 s'), 2500)
  t.equal(retryAfterTextMs('Retry after 2 minutes'), 120_000, 'minutes are converted')
  t.equal(retryAfterTextMs('Please try again in a few minutes.'), undefined, 'no number, no delay')
  t.equal(retryAfterTextMs('Retry after 180 per minute'), undefined, 'a number without a time unit is not a delay')
  t.equal(retryAfterTextMs(undefined), undefined)
})

t.test('clampDelayMs', async t => {
  t.equal(clampDelayMs(0, 1000, 60_000), 1000, 'some APIs send 0')
  t.equal(clampDelayMs(5000, 1000, 60_000), 5000)
  t.equal(clampDelayMs(31_536_000_000, 1000, 60_000), 60_000, 'a reset a year away')
  t.equal(clampDelayMs(Number.NaN, 1000, 60_000), 1000, 'NaN becomes the floor')
  t.equal(clampDelayMs(Number.POSITIVE_INFINITY, 1000, 60_000), 60_000)
})

t.test('upstreamDelayMs reads the sources in order', async t => {
  const all = {
    headers: { 'retry-after': '5', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '40' },
    bodyRetryAfterS: 20,
    text: 'Retry after 60 seconds',
    nowMs: NOW_MS
  }
  t.equal(upstreamDelayMs(all), 5000, '1. Retry-After')
  t.equal(upstreamDelayMs({ ...all, headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '40' } }), 20_000, '2. body retry-after')
  t.equal(upstreamDelayMs({ ...all, headers: { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': '40' }, bodyRetryAfterS: undefined }), 40_000, '3. reset')
  t.equal(upstreamDelayMs({ headers: { ratelimit: '"d";r=0;t=7' }, nowMs: NOW_MS, text: 'Retry after 60 seconds' }), 7000, '3. IETF reset')
  t.equal(upstreamDelayMs({ headers: { 'x-ratelimit-remaining': '12', 'x-ratelimit-reset': '40' }, text: 'Retry after 60 seconds', nowMs: NOW_MS }), 60_000,
    'a reset is skipped while requests remain: it belongs to another limit; 4. text')
  t.equal(upstreamDelayMs({ headers: {}, nowMs: NOW_MS }), undefined, 'nothing said: the profile default applies')
  t.equal(upstreamDelayMs({ headers: { 'retry-after': 'garbage' }, bodyRetryAfterS: 3, nowMs: NOW_MS }), 3000, 'an unreadable Retry-After falls through')
  t.equal(upstreamDelayMs({ headers: {}, bodyRetryAfterS: -1, nowMs: NOW_MS }), undefined, 'a negative body delay is ignored')
})

t.test('profiles: registry', async t => {
  t.same([...PROFILE_NAMES].sort(), ['generic', 'github', 'testmo', 'testrail', 'zulip'])
  for (const name of PROFILE_NAMES) t.equal(getProfile(name).name, name)
  t.ok(isProfileName('zulip'))
  t.notOk(isProfileName('toString'), 'inherited object keys are not profiles')
  t.notOk(isProfileName(undefined))
})

t.test('profiles: pushback and default delays', async t => {
  const parse = (name: 'generic' | 'testrail' | 'testmo' | 'zulip' | 'github', body: string) => getProfile(name).parseError(decodeErrorBody(Buffer.from(body)))
  const testrail = getProfile('testrail')
  t.same(testrail.pushback(409, {}, parse('testrail', '{"error":"maintenance"}'), NOW_MS), { kind: 'maintenance', delayMs: 120_000 }, 'TestRail 409 is maintenance, 120 s')
  t.same(getProfile('generic').pushback(409, {}, parse('generic', '{"error":"Version mismatch"}'), NOW_MS), null, 'a generic 409 is a conflict')
  t.same(getProfile('testmo').pushback(429, {}, {}, NOW_MS), { kind: 'rate_limited', delayMs: 60_000 }, 'Testmo 429 without Retry-After: 60 s')
  t.same(getProfile('generic').pushback(429, {}, {}, NOW_MS), { kind: 'rate_limited', delayMs: undefined }, 'generic has no rate-limit default')
  const zulipBody = parse('zulip', '{"result":"error","msg":"x","code":"RATE_LIMIT_HIT","retry-after":2.25}')
  t.same(getProfile('zulip').pushback(200, {}, zulipBody, NOW_MS), { kind: 'rate_limited', delayMs: 2250 }, 'Zulip RATE_LIMIT_HIT at any status, body delay')
  t.same(getProfile('github').pushback(403, { 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': String(NOW_S + 90) }, parse('github', '{"message":"API rate limit exceeded"}'), NOW_MS),
    { kind: 'rate_limited', delayMs: 90_000 }, 'GitHub 403 exhausted: until reset')
  t.same(getProfile('github').pushback(403, { 'x-ratelimit-remaining': '10' }, parse('github', '{"message":"Must have admin rights"}'), NOW_MS), null, 'GitHub 403 with budget left is a permission error')
  t.same(getProfile('testrail').pushback(503, { 'retry-after': '30' }, {}, NOW_MS), { kind: 'maintenance', delayMs: 30_000 }, '503 with Retry-After')
  t.same(getProfile('testrail').pushback(400, {}, parse('testrail', '{"error":"Field :x is bad"}'), NOW_MS), null, 'a plain 400 is not pushback')
  t.same(getProfile('github').pushback(403, {}, parse('github', 'error code: 1015'), NOW_MS), { kind: 'rate_limited', delayMs: 60_000 }, 'Cloudflare 1015')
  t.equal(parse('testrail', 'USER AUTHENTICATION SUCCESSFUL!\n{"error":"Field :project_id is not valid"}').sluiceCode, 'VALIDATION_ERROR', 'TestRail banner stripped before parsing')
})
