// Table-driven: every file in test/fixtures/upstream is one upstream error sample and the
// envelope it must become. Adding a sample is adding a file.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer, request as httpRequest, type Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { ERROR_CODES } from '../src/errors'
import { PROFILE_NAMES, type ProfileName } from '../src/profiles'
import { MAX_ERROR_BODY_BYTES, normalizeUpstreamError, sluiceErrorFromTransport, UPSTREAM_BODY_MAX_CHARS, type NormalizedError } from '../src/upstream/normalize'

const replyFromErrors = require('@fastify/reply-from/lib/errors') as Record<string, new (...args: unknown[]) => Error>

const FIXTURE_DIR = join(__dirname, 'fixtures', 'upstream')
const NOW_MS = Date.parse('2025-01-01T00:00:00Z')
const ROUTE = 'fixture-route'
const REQUEST_ID = 'req-fixture'

// Codes only Sluice itself raises (its own limits, its own HTTP layer, its own shutdown): no upstream sample maps to them.
const SLUICE_ONLY_CODES = new Set(['QUEUE_FULL', 'QUEUE_TIMEOUT', 'ROUTE_NOT_FOUND', 'STORE_UNAVAILABLE', 'INTERNAL_ERROR', 'SHUTTING_DOWN', 'REQUEST_TIMEOUT', 'HEADERS_TOO_LARGE', 'ADMIN_AUTH_REQUIRED'])

interface Expect {
  status: number
  code: string
  retryable: boolean
  /** null: must be absent. */
  retry_after_s?: number | null
  upstream_code?: string
  message_includes?: string
  /** Subset of details that must be present, compared strictly. */
  details?: Record<string, unknown>
  upstream_body?: unknown
  upstream_body_type?: 'object' | 'string'
  upstream_body_excludes?: string[]
  upstream_body_max_chars?: number
  /** A secret that must appear nowhere in the result. */
  never_contains?: string
  /** null: must not be pushback; delayMs null: pushback with unknown delay. */
  pushback?: { kind: string, delayMs: number | null } | null
}

interface Fixture {
  name: string
  profile: ProfileName
  status: number
  headers: Record<string, string>
  body?: string
  bodyBase64?: string
  bodyRepeat?: { prefix?: string, chunk: string, times: number, suffix?: string }
  expect: Expect
}

const EXPECT_KEYS = new Set(['status', 'code', 'retryable', 'retry_after_s', 'upstream_code', 'message_includes', 'details', 'upstream_body',
  'upstream_body_type', 'upstream_body_excludes', 'upstream_body_max_chars', 'never_contains', 'pushback'])
const FIXTURE_KEYS = new Set(['name', 'profile', 'status', 'headers', 'body', 'bodyBase64', 'bodyRepeat', 'expect'])

function loadFixtures (): Fixture[] {
  return readdirSync(FIXTURE_DIR).filter(f => f.endsWith('.json')).sort().map(file => {
    const fixture = JSON.parse(readFileSync(join(FIXTURE_DIR, file), 'utf8')) as Fixture
    // A misspelt expectation key would silently assert nothing; refuse it.
    for (const key of Object.keys(fixture)) if (!FIXTURE_KEYS.has(key)) throw new Error(`${file}: unknown fixture key ${key}`)
    for (const key of Object.keys(fixture.expect)) if (!EXPECT_KEYS.has(key)) throw new Error(`${file}: unknown expect key ${key}`)
    if (`${fixture.name}.json` !== file) throw new Error(`${file}: name ${fixture.name} does not match the file name`)
    return fixture
  })
}

function bodyOf (fixture: Fixture): Buffer {
  if (fixture.bodyBase64 !== undefined) return Buffer.from(fixture.bodyBase64, 'base64')
  if (fixture.bodyRepeat !== undefined) {
    const r = fixture.bodyRepeat
    return Buffer.from((r.prefix ?? '') + r.chunk.repeat(r.times) + (r.suffix ?? ''))
  }
  return Buffer.from(fixture.body ?? '')
}

/** What every envelope must satisfy, whatever the sample. */
function assertEnvelopeInvariants (t: tap.Test, result: NormalizedError, route: string, requestId: string): void {
  t.equal(result.envelope.success, false, 'success is false')
  t.type(result.envelope.error.code, 'string')
  t.ok(result.envelope.error.message.length > 0, 'message is not empty')
  const details = result.envelope.error.details
  t.equal(details.upstream, route, 'details.upstream is the route name')
  t.equal(details.request_id, requestId, 'details.request_id')
  t.type(details.retryable, 'boolean')
  t.ok(result.status >= 400 && result.status <= 599, `status ${result.status} is an HTTP error`)
  t.equal(details.retry_after_s, result.retryAfterS, 'retry_after_s in details matches the Retry-After value')
  if (result.retryAfterS !== undefined) t.ok(Number.isInteger(result.retryAfterS) && result.retryAfterS >= 1, 'Retry-After is whole seconds >= 1')
  t.same(JSON.parse(JSON.stringify(result.envelope)), result.envelope, 'envelope survives JSON')
}

const fixtures = loadFixtures()

t.test('the fixture set covers every profile and every code an upstream can cause', async t => {
  t.ok(fixtures.length >= 40, `${fixtures.length} fixtures`)
  const profiles = new Set(fixtures.map(f => f.profile))
  for (const name of PROFILE_NAMES) t.ok(profiles.has(name), `profile ${name} has fixtures`)
  const codes = new Set(fixtures.map(f => f.expect.code))
  for (const code of ERROR_CODES) {
    if (SLUICE_ONLY_CODES.has(code)) continue
    t.ok(codes.has(code), `code ${code} has a fixture`)
  }
})

for (const fixture of fixtures) {
  t.test(fixture.name, async t => {
    const result = normalizeUpstreamError({
      status: fixture.status,
      headers: fixture.headers,
      body: bodyOf(fixture),
      route: ROUTE,
      profile: fixture.profile,
      requestId: REQUEST_ID,
      nowMs: NOW_MS
    })
    const expect = fixture.expect
    const details = result.envelope.error.details
    assertEnvelopeInvariants(t, result, ROUTE, REQUEST_ID)
    t.equal(result.status, expect.status, 'status')
    t.equal(result.envelope.error.code, expect.code, 'code')
    t.equal(details.retryable, expect.retryable, 'retryable')
    t.equal(details.upstream_status, fixture.status, 'upstream_status is what the upstream sent')
    if ('retry_after_s' in expect) t.equal(details.retry_after_s, expect.retry_after_s ?? undefined, 'retry_after_s')
    if (expect.upstream_code !== undefined) t.equal(details.upstream_code, expect.upstream_code, 'upstream_code')
    if (expect.message_includes !== undefined) t.match(result.envelope.error.message, expect.message_includes, 'message')
    if (expect.details !== undefined) t.hasStrict(details, expect.details, 'details')
    if ('upstream_body' in expect) t.same(details.upstream_body, expect.upstream_body, 'upstream_body')
    if (expect.upstream_body_type !== undefined) {
      const actual = details.upstream_body === null ? 'null' : typeof details.upstream_body
      t.equal(actual, expect.upstream_body_type, 'upstream_body type')
    }
    for (const fragment of expect.upstream_body_excludes ?? []) t.notOk(JSON.stringify(details.upstream_body).includes(fragment), `upstream_body has no ${fragment}`)
    if (typeof details.upstream_body === 'string') t.ok(details.upstream_body.length <= (expect.upstream_body_max_chars ?? UPSTREAM_BODY_MAX_CHARS), 'text upstream_body is bounded')
    if (expect.never_contains !== undefined) t.notOk(JSON.stringify(result).includes(expect.never_contains), 'the secret is not echoed')
    if (expect.pushback === null) t.equal(result.pushback, undefined, 'not pushback')
    if (expect.pushback !== undefined && expect.pushback !== null) {
      t.equal(result.pushback?.kind, expect.pushback.kind, 'pushback kind')
      t.equal(result.pushback?.delayMs, expect.pushback.delayMs ?? undefined, 'pushback delay, ms')
    }
  })
}

t.test('a body longer than MAX_ERROR_BODY_BYTES is read only up to the cap', async t => {
  const json = JSON.stringify({ message: 'The given data was invalid.' })
  // Valid JSON only if the whole buffer were read: the padding after the cap makes it invalid.
  const body = Buffer.concat([Buffer.from(json), Buffer.alloc(MAX_ERROR_BODY_BYTES, 0x20), Buffer.from('garbage')])
  const result = normalizeUpstreamError({ status: 422, headers: {}, body, route: ROUTE, profile: 'testmo', requestId: REQUEST_ID })
  t.equal(result.envelope.error.code, 'VALIDATION_ERROR')
  t.same(result.envelope.error.details.upstream_body, { message: 'The given data was invalid.' }, 'the bytes past the cap were not read')
})

t.test('the delay is clamped to the caller\'s bounds', async t => {
  const input = { status: 429, headers: { 'retry-after': '86400' }, body: Buffer.alloc(0), route: ROUTE, profile: 'generic' as const, requestId: REQUEST_ID, nowMs: NOW_MS }
  t.equal(normalizeUpstreamError(input).retryAfterS, 3600, 'default ceiling is one hour')
  t.equal(normalizeUpstreamError({ ...input, maxDelayMs: 10_000 }).retryAfterS, 10)
  t.equal(normalizeUpstreamError({ ...input, headers: { 'retry-after': '0' }, minDelayMs: 5_000 }).retryAfterS, 5, 'a 0 from the upstream is raised to the floor')
  t.equal(normalizeUpstreamError({ ...input, headers: { 'retry-after': '0' } }).retryAfterS, 1, 'Retry-After is never 0')
  t.equal(normalizeUpstreamError(input).pushback?.delayMs, 86_400_000, 'pushback carries the raw delay for the caller\'s own clamp')
})

t.test('inputs that break the types do not throw', async t => {
  const weird: unknown[] = [
    { status: Number.NaN, headers: null, body: null, route: ROUTE, profile: 'nope', requestId: REQUEST_ID },
    { status: '429', headers: { 'retry-after': ['5', '6'] }, body: 'text body', route: ROUTE, profile: 'generic', requestId: REQUEST_ID },
    { status: 503, headers: { 'retry-after': 5 }, body: Buffer.from('{"success":false,"error":{"code":"X","details":[1]}}'), route: ROUTE, profile: 'github', requestId: REQUEST_ID }
  ]
  for (const input of weird) {
    const result = normalizeUpstreamError(input as Parameters<typeof normalizeUpstreamError>[0])
    assertEnvelopeInvariants(t, result, ROUTE, REQUEST_ID)
  }
  const array = normalizeUpstreamError({ status: 429, headers: { 'retry-after': ['5', '6'] }, body: Buffer.alloc(0), route: ROUTE, profile: 'generic', requestId: REQUEST_ID })
  t.equal(array.retryAfterS, 5, 'a repeated header is read from its first value')
  const unknownProfile = normalizeUpstreamError({ status: 409, headers: {}, body: Buffer.from('{"error":"x"}'), route: ROUTE, profile: 'nope' as ProfileName, requestId: REQUEST_ID })
  t.equal(unknownProfile.envelope.error.code, 'CONFLICT', 'an unknown profile falls back to generic')
})

// --- Transport failures -----------------------------------------------------------------

function codeError (code: string, message = code, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(message), { code }, extra)
}

const transportTable: Array<{ name: string, err: unknown, status: number, code: string, retryable: boolean, transportCode?: string }> = [
  { name: 'ECONNREFUSED', err: codeError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:9'), status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true },
  { name: 'ENOTFOUND', err: codeError('ENOTFOUND', 'getaddrinfo ENOTFOUND api.example'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'EAI_AGAIN', err: codeError('EAI_AGAIN'), status: 502, code: 'BAD_GATEWAY', retryable: true },
  { name: 'TLS expired cert', err: codeError('CERT_HAS_EXPIRED'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'TLS alt name', err: codeError('ERR_TLS_CERT_ALTNAME_INVALID'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'TLS self-signed', err: codeError('DEPTH_ZERO_SELF_SIGNED_CERT'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'UND_ERR_HEADERS_TIMEOUT', err: codeError('UND_ERR_HEADERS_TIMEOUT'), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'UND_ERR_BODY_TIMEOUT', err: codeError('UND_ERR_BODY_TIMEOUT'), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'UND_ERR_CONNECT_TIMEOUT', err: codeError('UND_ERR_CONNECT_TIMEOUT'), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'ETIMEDOUT', err: codeError('ETIMEDOUT'), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'ECONNRESET', err: codeError('ECONNRESET'), status: 502, code: 'BAD_GATEWAY', retryable: true },
  { name: 'UND_ERR_SOCKET', err: codeError('UND_ERR_SOCKET', 'other side closed'), status: 502, code: 'BAD_GATEWAY', retryable: true },
  { name: 'EHOSTUNREACH', err: codeError('EHOSTUNREACH'), status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true },
  { name: 'HTTP parse error', err: codeError('HPE_INVALID_CONSTANT'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  {
    name: 'happy-eyeballs AggregateError',
    err: Object.assign(new AggregateError([codeError('ECONNREFUSED'), codeError('ECONNREFUSED')], ''), { code: 'ECONNREFUSED' }),
    status: 503,
    code: 'UPSTREAM_UNAVAILABLE',
    retryable: true
  },
  {
    name: 'fetch TypeError with cause',
    err: new TypeError('fetch failed', { cause: codeError('UND_ERR_CONNECT_TIMEOUT') }),
    status: 504,
    code: 'UPSTREAM_TIMEOUT',
    retryable: true
  },
  { name: 'AbortSignal.timeout', err: Object.assign(new Error('The operation was aborted due to timeout'), { name: 'TimeoutError' }), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'unknown error', err: new Error('something odd'), status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'not an error at all', err: 'a string', status: 502, code: 'BAD_GATEWAY', retryable: false },
  { name: 'null', err: null, status: 502, code: 'BAD_GATEWAY', retryable: false },
  // What @fastify/reply-from hands to onError: its own wrappers, the real code in `cause`.
  { name: 'reply-from 500 wrapping ECONNREFUSED', err: new replyFromErrors.InternalServerError!('connect ECONNREFUSED', { cause: codeError('ECONNREFUSED') }), status: 503, code: 'UPSTREAM_UNAVAILABLE', retryable: true, transportCode: 'ECONNREFUSED' },
  { name: 'reply-from 503 wrapping ENOTFOUND', err: new replyFromErrors.ServiceUnavailableError!({ cause: codeError('ENOTFOUND') }), status: 502, code: 'BAD_GATEWAY', retryable: false, transportCode: 'ENOTFOUND' },
  { name: 'reply-from gateway timeout', err: new replyFromErrors.GatewayTimeoutError!({ cause: codeError('UND_ERR_HEADERS_TIMEOUT') }), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true },
  { name: 'reply-from own timeout', err: new replyFromErrors.TimeoutError!(), status: 504, code: 'UPSTREAM_TIMEOUT', retryable: true, transportCode: 'FST_REPLY_FROM_TIMEOUT' },
  { name: 'reply-from connection reset', err: new replyFromErrors.ConnectionResetError!(), status: 502, code: 'BAD_GATEWAY', retryable: true },
  { name: 'reply-from socket error', err: new replyFromErrors.UndiciSocketError!(), status: 502, code: 'BAD_GATEWAY', retryable: true },
  { name: 'reply-from bad status', err: new replyFromErrors.BadGatewayError!(), status: 502, code: 'BAD_GATEWAY', retryable: false }
]

for (const row of transportTable) {
  t.test(`transport: ${row.name}`, async t => {
    const result = sluiceErrorFromTransport(row.err, ROUTE, REQUEST_ID)
    assertEnvelopeInvariants(t, result, ROUTE, REQUEST_ID)
    t.equal(result.status, row.status, 'status')
    t.equal(result.envelope.error.code, row.code, 'code')
    t.equal(result.envelope.error.details.retryable, row.retryable, 'retryable')
    t.equal(result.envelope.error.details.upstream_status, null, 'no upstream status: nothing was received')
    if (row.transportCode !== undefined) t.equal(result.envelope.error.details.transport_code, row.transportCode, 'transport_code names the real cause')
  })
}

t.test('transport: credentials in an error message are not echoed', async t => {
  const result = sluiceErrorFromTransport(codeError('ECONNRESET', 'socket hang up https://bot:s3cretpassw0rd@api.example/x'), ROUTE, REQUEST_ID)
  t.notOk(JSON.stringify(result).includes('s3cretpassw0rd'))
})

// Real sockets: the errors Node and undici actually raise, not our idea of them.

async function listen (server: Server): Promise<number> {
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

async function closedPort (): Promise<number> {
  const server = createServer()
  const port = await listen(server)
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

async function caught (fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a failure')
}

t.test('real: connection refused (fetch and http.request)', async t => {
  const port = await closedPort()
  const fetchErr = await caught(async () => await fetch(`http://127.0.0.1:${port}/`))
  t.equal(sluiceErrorFromTransport(fetchErr, ROUTE, REQUEST_ID).envelope.error.code, 'UPSTREAM_UNAVAILABLE')
  const httpErr = await caught(async () => await new Promise((resolve, reject) => httpRequest(`http://127.0.0.1:${port}/`).on('error', reject).on('response', resolve).end()))
  const result = sluiceErrorFromTransport(httpErr, ROUTE, REQUEST_ID)
  t.equal(result.status, 503)
  t.equal(result.envelope.error.details.transport_code, 'ECONNREFUSED')
})

t.test('real: upstream resets the connection mid-body', async t => {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-length': '1000' })
    res.write('partial', () => res.socket?.destroy())
  })
  const port = await listen(server)
  t.teardown(() => { server.close() })
  const err = await caught(async () => {
    const response = await fetch(`http://127.0.0.1:${port}/`)
    await response.text()
  })
  const result = sluiceErrorFromTransport(err, ROUTE, REQUEST_ID)
  t.equal(result.status, 502)
  t.equal(result.envelope.error.code, 'BAD_GATEWAY')
  t.equal(result.envelope.error.details.retryable, true)
})

t.test('real: upstream never answers, client times out', async t => {
  const server = createServer(() => { /* never answers */ })
  const port = await listen(server)
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const err = await caught(async () => await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(100) }))
  const result = sluiceErrorFromTransport(err, ROUTE, REQUEST_ID)
  t.equal(result.status, 504)
  t.equal(result.envelope.error.code, 'UPSTREAM_TIMEOUT')
})

t.test('real: TLS to a server that speaks plain HTTP', async t => {
  const server = createServer((_req, res) => res.end('plain'))
  const port = await listen(server)
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const err = await caught(async () => await new Promise((resolve, reject) => httpsRequest(`https://127.0.0.1:${port}/`).on('error', reject).on('response', resolve).end()))
  const result = sluiceErrorFromTransport(err, ROUTE, REQUEST_ID)
  t.equal(result.status, 502)
  t.equal(result.envelope.error.code, 'BAD_GATEWAY')
  t.equal(result.envelope.error.details.retryable, false, `TLS failure (${String(result.envelope.error.details.transport_code)}) is not retried`)
})

t.test('real: DNS name that cannot resolve', async t => {
  // RFC 6761: .invalid never resolves. Offline hosts answer EAI_AGAIN instead of ENOTFOUND; both are 502.
  const err = await caught(async () => await new Promise((resolve, reject) => httpRequest('http://sluice-test.invalid/').on('error', reject).on('response', resolve).end()))
  const result = sluiceErrorFromTransport(err, ROUTE, REQUEST_ID)
  t.equal(result.status, 502)
  t.equal(result.envelope.error.code, 'BAD_GATEWAY')
  t.match(String(result.envelope.error.details.transport_code), /^(ENOTFOUND|EAI_AGAIN)$/)
})
