// The retry decision, one row per branch: what failed, the method, the attempts so far and the
// route's settings decide whether an attempt is sent again, and the reason when it is not.
import t from 'tap'
import {
  BACKOFF_BASE_MS, BACKOFF_CAP_MS, IDEMPOTENT_METHODS, MAX_PUSHBACK_RETRIES, OUT_OF_TIME,
  backoffMs, inTime, retryDecision, type Failure, type RetryContext, type RetryDecision
} from '../src/http/retry-policy'

const BASE: RetryContext = { method: 'GET', shadow: false, retries: 2, retryMethods: [], pushbackRetries: 0, transientRetries: 0, bodyBlocker: undefined }
const STREAMED = 'the request body was streamed and cannot be sent again'

const PUSHBACK: Failure = { kind: 'pushback' }
const S502: Failure = { kind: 'status', status: 502, retryable: true }
const REFUSED: Failure = { kind: 'transport', code: 'UPSTREAM_UNAVAILABLE', retryable: true, transportCode: 'ECONNREFUSED' }
const RESET: Failure = { kind: 'transport', code: 'BAD_GATEWAY', retryable: true, transportCode: 'ECONNRESET' }

t.test('retryDecision', async (t) => {
  const cases: Array<[string, Failure, Partial<RetryContext>, RetryDecision]> = [
    // Pushback: the upstream did not act, so any method goes again.
    ['pushback is retried', PUSHBACK, {}, { retry: 'pushback' }],
    ['pushback retries a POST too', PUSHBACK, { method: 'POST' }, { retry: 'pushback' }],
    ['pushback ignores the transient retries setting', PUSHBACK, { retries: 0, transientRetries: 5 }, { retry: 'pushback' }],
    ['pushback on a shadow route', PUSHBACK, { shadow: true }, { retry: false, skipped: 'shadow route' }],
    ['pushback below the runaway guard', PUSHBACK, { pushbackRetries: MAX_PUSHBACK_RETRIES - 1 }, { retry: 'pushback' }],
    ['pushback at the runaway guard', PUSHBACK, { pushbackRetries: MAX_PUSHBACK_RETRIES }, { retry: false, skipped: `sent ${MAX_PUSHBACK_RETRIES} times after pushback already` }],
    ['pushback with a streamed body', PUSHBACK, { bodyBlocker: STREAMED }, { retry: false, skipped: STREAMED }],
    ['shadow wins over the guard and the body', PUSHBACK, { shadow: true, pushbackRetries: 99, bodyBlocker: STREAMED }, { retry: false, skipped: 'shadow route' }],
    ['the guard wins over the body', PUSHBACK, { pushbackRetries: 99, bodyBlocker: STREAMED }, { retry: false, skipped: `sent ${MAX_PUSHBACK_RETRIES} times after pushback already` }],
    // Error statuses.
    ['502 retryable', S502, {}, { retry: 'transient' }],
    ['503 retryable', { kind: 'status', status: 503, retryable: true }, {}, { retry: 'transient' }],
    ['504 retryable', { kind: 'status', status: 504, retryable: true }, {}, { retry: 'transient' }],
    ['502 the envelope calls not retryable', { kind: 'status', status: 502, retryable: false }, {}, { retry: false }],
    ['500 is not transient', { kind: 'status', status: 500, retryable: true }, {}, { retry: false }],
    ['404 is not transient', { kind: 'status', status: 404, retryable: false }, {}, { retry: false }],
    ['502 on a shadow route', S502, { shadow: true }, { retry: false, skipped: 'shadow route' }],
    ['502 with retries: 0', S502, { retries: 0 }, { retry: false, skipped: 'retries: 0 on this route' }],
    ['502 after all retries', S502, { transientRetries: 2 }, { retry: false, skipped: 'retried 2 times already (retries)' }],
    ['502 with one retry left', S502, { transientRetries: 1 }, { retry: 'transient' }],
    ['502 of a POST', S502, { method: 'POST' }, { retry: false, skipped: 'POST is not idempotent and not in this route\'s retryMethods' }],
    ['502 of a PATCH', S502, { method: 'PATCH' }, { retry: false, skipped: 'PATCH is not idempotent and not in this route\'s retryMethods' }],
    ['502 of a POST in retryMethods', S502, { method: 'POST', retryMethods: ['POST'] }, { retry: 'transient' }],
    ['502 with a streamed body', S502, { bodyBlocker: STREAMED }, { retry: false, skipped: STREAMED }],
    ['shadow wins over the count', S502, { shadow: true, retries: 0 }, { retry: false, skipped: 'shadow route' }],
    ['the count wins over the method', S502, { retries: 0, method: 'POST' }, { retry: false, skipped: 'retries: 0 on this route' }],
    ['the method wins over the body', S502, { method: 'POST', bodyBlocker: STREAMED }, { retry: false, skipped: 'POST is not idempotent and not in this route\'s retryMethods' }],
    // Transport failures.
    ['reset, retryable', RESET, {}, { retry: 'transient' }],
    ['reset of a POST: it may have reached the upstream', RESET, { method: 'POST' }, { retry: false, skipped: 'POST is not idempotent and not in this route\'s retryMethods' }],
    ['refused: never sent, so a POST goes again', REFUSED, { method: 'POST' }, { retry: 'transient' }],
    ['refused on a shadow route', REFUSED, { shadow: true }, { retry: false, skipped: 'shadow route' }],
    ['refused after all retries', REFUSED, { transientRetries: 2 }, { retry: false, skipped: 'retried 2 times already (retries)' }],
    ['refused with a streamed body', REFUSED, { method: 'POST', bodyBlocker: STREAMED }, { retry: false, skipped: STREAMED }],
    ['not retryable transport failure', { kind: 'transport', code: 'BAD_GATEWAY', retryable: false, transportCode: 'ECONNRESET' }, {}, { retry: false }],
    ['a response timeout is not retried', { kind: 'transport', code: 'UPSTREAM_TIMEOUT', retryable: true, transportCode: 'UND_ERR_HEADERS_TIMEOUT' }, {}, { retry: false }],
    ['a connect timeout never reached the upstream', { kind: 'transport', code: 'UPSTREAM_TIMEOUT', retryable: true, transportCode: 'UND_ERR_CONNECT_TIMEOUT' }, { method: 'POST' }, { retry: 'transient' }],
    ['no transport code', { kind: 'transport', code: 'BAD_GATEWAY', retryable: true, transportCode: '' }, { method: 'DELETE' }, { retry: 'transient' }]
  ]
  for (const [why, failure, ctx, want] of cases) {
    t.same(retryDecision(failure, { ...BASE, ...ctx }), want, why)
  }
  for (const code of ['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']) {
    t.same(retryDecision({ kind: 'transport', code: 'UPSTREAM_UNAVAILABLE', retryable: true, transportCode: code }, { ...BASE, method: 'POST' }), { retry: 'transient' }, `${code}: never sent`)
  }
  for (const method of ['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']) {
    t.ok(IDEMPOTENT_METHODS.has(method), `${method} is idempotent`)
    t.same(retryDecision(S502, { ...BASE, method }), { retry: 'transient' }, `502 of ${method} is retried`)
  }
})

t.test('backoff: full jitter below min(cap, base × 2^n)', async (t) => {
  t.equal(backoffMs(0, 0), 0, 'random 0 waits nothing')
  t.equal(backoffMs(0, 0.5), BACKOFF_BASE_MS / 2)
  t.equal(backoffMs(1, 0.5), BACKOFF_BASE_MS)
  t.equal(backoffMs(3, 0.25), BACKOFF_BASE_MS * 2)
  t.equal(backoffMs(20, 0.5), BACKOFF_CAP_MS / 2, 'capped')
  t.ok(backoffMs(6, 0.999999) < BACKOFF_CAP_MS, 'always below the cap')
})

t.test('inTime: a retry starts only before the wait bound ends', async (t) => {
  t.equal(inTime(100, 101), true)
  t.equal(inTime(100, 100), false, 'a wait that ends at the bound is too late')
  t.equal(inTime(0, 0), false, 'no time left at all')
  t.equal(inTime(0, -5), false, 'past the bound')
  t.equal(OUT_OF_TIME.pushback, 'the pause ends after the request\'s wait bound')
  t.equal(OUT_OF_TIME.transient, 'no time left within the request\'s wait bound')
})
