// Property test: whatever an upstream sends, the normalizer answers with a valid envelope,
// never throws, and stays fast. Seeded, so a failure replays: SLUICE_FUZZ_SEED=<seed>.
import t from 'tap'
import { ERROR_CODES } from '../src/errors'
import { isProfileName, PROFILE_NAMES, type ProfileName } from '../src/profiles'
import { errorBody } from '../src/profiles/native'
import { MAX_ERROR_BODY_BYTES, normalizeUpstreamError, sluiceErrorFromTransport, UPSTREAM_BODY_MAX_CHARS, type NormalizedError } from '../src/upstream/normalize'

const SEED = Number(process.env.SLUICE_FUZZ_SEED ?? 0x5eed)
const RUNS = 5000
const TRANSPORT_RUNS = 2000
/** Generous per-input bound (ms): catches quadratic regexes on 64 KiB, not slow CI machines. */
const SLOW_INPUT_MS = 1000
/** Upper bound of a serialized envelope (chars): the output must not grow with the input beyond this. */
const MAX_ENVELOPE_CHARS = 64 * 1024

const KNOWN_CODES = new Set<string>(ERROR_CODES)
const KEPT_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

// mulberry32: tiny, fast, deterministic.
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const random = prng(SEED)
const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1))
const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)] as T
const chance = (p: number): boolean => random() < p

const STATUSES = [400, 401, 403, 404, 405, 408, 409, 410, 413, 422, 429, 500, 501, 502, 503, 504, 520, 521, 522, 524, 526, 200, 302]
const CODES = ['RATE_LIMIT_HIT', 'INVALID_API_KEY', 'AUTH_EXPIRED', 'BAD_REQUEST', 'INVALID_JSON', 'REQUEST_VARIABLE_MISSING', 'RATE_LIMITED', 'X', 'bad code', '<b>', '', '1015']
const HEADER_NAMES = ['retry-after', 'Retry-After', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-ratelimit-limit', 'ratelimit', 'ratelimit-policy', 'ratelimit-reset', 'content-type', 'x-random']

function randomString (maxLength: number): string {
  const alphabets = ['abcdefghijklmnopqrstuvwxyz ', '0123456789.-eE', '<>/="\'!-{}[]:,;\\', 'ÄöüßéЖ中文🙂\u0000\ufeff\u200b\n\r\t', 'Retry after seconds maintenance rate limit Bearer token=']
  let out = ''
  const length = int(0, maxLength)
  for (let i = 0; i < length; i++) {
    const alphabet = pick(alphabets)
    out += alphabet[int(0, alphabet.length - 1)]
  }
  return out
}

function randomHeaderValue (): string | string[] | undefined {
  switch (int(0, 8)) {
    case 0: return String(int(0, 100_000))
    case 1: return (random() * 1000).toFixed(int(0, 4))
    case 2: return new Date(1735689600000 + int(-1e9, 1e9)).toUTCString()
    case 3: return String(1735689600 + int(-5000, 5000))
    case 4: return `"${randomString(5)}";r=${int(0, 9)};t=${int(-5, 99)}, ${randomString(10)}`
    case 5: return [String(int(0, 99)), randomString(10)]
    case 6: return undefined
    case 7: return '9'.repeat(int(1, 400))
    default: return randomString(40)
  }
}

function randomJson (depth: number): unknown {
  const kind = int(0, depth <= 0 ? 3 : 6)
  switch (kind) {
    case 0: return randomString(30)
    case 1: return pick([0, -1, 1.5, 1e308, Number.MAX_SAFE_INTEGER, 429])
    case 2: return pick([true, false, null])
    case 3: return pick(CODES)
    case 4: return Array.from({ length: int(0, 5) }, () => randomJson(depth - 1))
    default: {
      const out: Record<string, unknown> = {}
      const keys = ['message', 'msg', 'error', 'code', 'errors', 'details', 'result', 'success', 'retry-after', 'retry_after', 'var_name', 'token', 'password', '__proto__', 'constructor', randomString(8)]
      for (let i = int(0, 6); i > 0; i--) out[pick(keys)] = randomJson(depth - 1)
      return out
    }
  }
}

/** Bodies shaped like the real formats but with wrong types and values in every field. */
function shapedJson (): unknown {
  switch (int(0, 4)) {
    case 0: return { success: pick([false, false, true, 'false']), error: chance(0.8) ? { code: pick([...CODES, randomString(10), 7]), message: randomJson(1), details: randomJson(3) } : randomJson(2) }
    case 1: return { result: pick(['error', 'success', 1]), msg: randomJson(1), code: pick([...CODES, randomJson(1)]), var_name: randomJson(1), 'retry-after': pick([28.7, -3, '5', 1e308, Number.NaN, null]) }
    case 2: return { error: randomJson(1) }
    case 3: return { message: randomJson(1), errors: randomJson(3), documentation_url: randomString(20) }
    default: return randomJson(4)
  }
}

function randomBody (): Buffer {
  switch (int(0, 11)) {
    case 0: return Buffer.alloc(0)
    case 1: return Buffer.from(Array.from({ length: int(1, 3000) }, () => int(0, 255)))
    case 2: return Buffer.from(JSON.stringify(randomJson(5)) ?? 'null')
    case 3: return Buffer.from(JSON.stringify(shapedJson()) ?? 'null')
    case 4: {
      const text = JSON.stringify(shapedJson()) ?? ''
      return Buffer.from(text.slice(0, int(0, text.length))) // truncated mid-body
    }
    case 5: return Buffer.from('USER AUTHENTICATION SUCCESSFUL!\n' + (JSON.stringify(shapedJson()) ?? ''))
    case 6: return Buffer.from(`<html><head><title>${randomString(30)}</title></head><body>${randomString(200)}<!-- ${randomString(20)}<script>${randomString(20)}</body></html>`)
    case 7: return Buffer.from(pick(['error code: 1015', 'error code: 502', 'Retry after 3 seconds', 'Bad Gateway', 'maintenance']) + randomString(20))
    case 8: {
      // Pathological for backtracking regexes: long runs of one opening token, never closed.
      const token = pick(['<!--', '<title', '<script', '"message":"\\', '{"code":"', 'retry after 9', '<', '&amp;'])
      return Buffer.from(token.repeat(Math.ceil(MAX_ERROR_BODY_BYTES / token.length)))
    }
    case 9: return Buffer.from('['.repeat(int(1000, 50_000)) + ']'.repeat(int(0, 10))) // deep nesting
    case 10: {
      const depth = int(50, 3000)
      return Buffer.from('{"success":false,"error":{"code":"DEEP","details":' + '{"a":'.repeat(depth) + '1' + '}'.repeat(depth) + '}}')
    }
    default: return Buffer.from(randomString(2000))
  }
}

function randomStatus (): number {
  switch (int(0, 5)) {
    case 0: return int(-10, 1000)
    case 1: return pick([Number.NaN, Number.POSITIVE_INFINITY, 1.5, -0, 429.5])
    default: return pick(STATUSES)
  }
}

function problems (result: NormalizedError, bodyText: string, route: string, requestId: string): string[] {
  const found: string[] = []
  if (typeof result !== 'object' || result === null) return ['result is not an object']
  if (!Number.isInteger(result.status) || result.status < 400 || result.status > 599) found.push(`status ${String(result.status)}`)
  const env = result.envelope
  if (env?.success !== false) found.push('success is not false')
  const error = env?.error
  if (typeof error?.code !== 'string') found.push('code is not a string')
  else if (!KNOWN_CODES.has(error.code) && !(KEPT_CODE.test(error.code) && bodyText.includes(`"${error.code}"`))) found.push(`code ${error.code} is neither ours nor the upstream's`)
  if (typeof error?.message !== 'string' || error.message === '') found.push('message is not a non-empty string')
  const details = error?.details
  if (typeof details !== 'object' || details === null || Array.isArray(details)) return [...found, 'details is not an object']
  if (details.upstream !== route) found.push('details.upstream')
  if (details.request_id !== requestId) found.push('details.request_id')
  if (typeof details.retryable !== 'boolean') found.push('details.retryable')
  if (details.upstream_status !== null && !Number.isInteger(details.upstream_status)) found.push('details.upstream_status')
  if (details.retry_after_s !== result.retryAfterS) found.push('retry_after_s differs from retryAfterS')
  if (result.retryAfterS !== undefined && !(Number.isInteger(result.retryAfterS) && result.retryAfterS >= 1)) found.push(`retryAfterS ${result.retryAfterS}`)
  if (typeof details.upstream_body === 'string' && details.upstream_body.length > UPSTREAM_BODY_MAX_CHARS) found.push('upstream_body text too long')
  let serialized = ''
  try {
    serialized = JSON.stringify(env)
    if (JSON.stringify(JSON.parse(serialized)) !== serialized) found.push('envelope does not survive JSON')
  } catch (err) {
    found.push(`envelope does not serialize: ${String(err)}`)
  }
  if (serialized.length > MAX_ENVELOPE_CHARS) found.push(`envelope is ${serialized.length} chars`)
  return found
}

const ZULIP_CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/** The profile's native fields beside the envelope (profiles/native.ts), as every writer sends them. */
function nativeProblems (result: NormalizedError, profile: ProfileName): string[] {
  const found: string[] = []
  const body = errorBody(profile, result.envelope, { status: result.status, ...(result.retryAfterS !== undefined ? { retryAfterS: result.retryAfterS } : {}), ...(result.native !== undefined ? { upstream: result.native } : {}) })
  if (body.success !== false || body.error !== result.envelope.error) found.push('native fields replaced the envelope')
  const message = result.envelope.error.message
  switch (isProfileName(profile) ? profile : 'generic') {
    case 'zulip':
      if (body.result !== 'error') found.push('zulip: result is not "error"')
      if (body.msg !== message) found.push('zulip: msg is not the message')
      if (typeof body.code !== 'string' || !ZULIP_CODE.test(body.code)) found.push(`zulip: code ${String(body.code)}`)
      if (body.code === 'RATE_LIMIT_HIT' && body['retry-after'] !== result.retryAfterS) found.push('zulip: retry-after differs from Retry-After')
      break
    case 'testrail':
      if (Object.keys(body).join() !== 'success,error') found.push(`testrail: added ${Object.keys(body).join()}`)
      break
    default:
      if (body.message !== message) found.push(`${profile}: message is not the envelope's message`)
      if (body.documentation_url !== undefined && typeof body.documentation_url !== 'string') found.push('documentation_url is not a string')
  }
  try {
    const serialized = JSON.stringify(body)
    if (JSON.stringify(JSON.parse(serialized)) !== serialized) found.push('the body does not survive JSON')
    if (serialized.length > 2 * MAX_ENVELOPE_CHARS) found.push(`the body is ${serialized.length} chars`)
  } catch (err) {
    found.push(`the body does not serialize: ${String(err)}`)
  }
  return found
}

t.test(`normalizeUpstreamError: ${RUNS} random inputs (seed ${SEED})`, async t => {
  const failures: string[] = []
  let slowestMs = 0
  for (let i = 0; i < RUNS; i++) {
    const headers: Record<string, string | string[] | undefined> = {}
    for (let h = int(0, 5); h > 0; h--) headers[pick(HEADER_NAMES)] = randomHeaderValue()
    const body = randomBody()
    const profile = (chance(0.95) ? pick(PROFILE_NAMES) : randomString(6)) as ProfileName
    const input = { status: randomStatus(), headers, body, route: `route-${i}`, profile, requestId: `req-${i}`, ...(chance(0.5) ? { nowMs: 1735689600000 + int(-1e6, 1e6) } : {}) }
    const started = performance.now()
    let result: NormalizedError
    try {
      result = normalizeUpstreamError(input)
    } catch (err) {
      failures.push(`#${i}: threw ${String(err)}`)
      continue
    }
    const tookMs = performance.now() - started
    slowestMs = Math.max(slowestMs, tookMs)
    if (tookMs > SLOW_INPUT_MS) failures.push(`#${i}: took ${tookMs.toFixed(0)} ms`)
    const found = [...problems(result, body.subarray(0, MAX_ERROR_BODY_BYTES).toString('utf8'), input.route, input.requestId), ...nativeProblems(result, input.profile)]
    for (const problem of found) {
      failures.push(`#${i} (status ${input.status}, profile ${input.profile}): ${problem}`)
    }
    if (failures.length > 20) break
  }
  t.same(failures, [], `every input gave a valid envelope with its profile's native fields; slowest ${slowestMs.toFixed(1)} ms`)
})

t.test(`sluiceErrorFromTransport: ${TRANSPORT_RUNS} random errors (seed ${SEED})`, async t => {
  const transportCodes = ['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT', 'CERT_HAS_EXPIRED', 'EPROTO', 'FST_REPLY_FROM_TIMEOUT', 'HPE_X', '', 'WHATEVER']
  const randomError = (depth: number): unknown => {
    switch (int(0, 7)) {
      case 0: return null
      case 1: return randomString(10)
      case 2: return int(0, 10)
      case 3: {
        const err: Record<string, unknown> = { code: chance(0.8) ? pick(transportCodes) : randomJson(1), message: randomJson(1), name: pick(['Error', 'TimeoutError', 'AbortError', 7]) }
        if (depth > 0 && chance(0.6)) err.cause = randomError(depth - 1)
        return err
      }
      case 4: {
        // A cause chain that loops back on itself.
        const a: Record<string, unknown> = { code: pick(transportCodes) }
        a.cause = { cause: a }
        return a
      }
      case 5: {
        // Getters that throw, as hostile or broken error objects do.
        return new Proxy({}, { get () { throw new Error('boom') } })
      }
      case 6: return new AggregateError([randomError(depth - 1), randomError(depth - 1)], 'x')
      default: return Object.assign(new Error(randomString(30)), { code: pick(transportCodes) }, depth > 0 ? { cause: randomError(depth - 1) } : {})
    }
  }
  const failures: string[] = []
  for (let i = 0; i < TRANSPORT_RUNS; i++) {
    let result: NormalizedError
    try {
      result = sluiceErrorFromTransport(randomError(4), `route-${i}`, `req-${i}`)
    } catch (err) {
      failures.push(`#${i}: threw ${String(err)}`)
      continue
    }
    for (const problem of [...problems(result, '', `route-${i}`, `req-${i}`), ...nativeProblems(result, pick(PROFILE_NAMES))]) failures.push(`#${i}: ${problem}`)
    if (![502, 503, 504].includes(result.status)) failures.push(`#${i}: status ${result.status} is not a gateway status`)
    if (failures.length > 20) break
  }
  t.same(failures, [], 'every error gave a valid gateway envelope')
})
