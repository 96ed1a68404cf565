// The route fields of issue 4: defaults, forms, and errors that name the field.
import t from 'tap'
import { loadConfig } from '../src/config/load'
import { AUTO_LIMIT } from '../src/config/schema'
import { parseRoute } from '../src/config/route'

const base = { upstream: 'https://api.example', limit: '10/s' }

t.test('defaults', async (t) => {
  const r = parseRoute(base, 'routes[0]')
  t.equal(r.minPauseMs, 1000)
  t.equal(r.maxPauseMs, 15 * 60_000)
  t.equal(r.retryBodyLimit, 1024 * 1024)
  t.equal(r.retries, 2)
  t.same(r.retryMethods, [])
  t.equal(r.connectTimeoutMs, 10_000)
  t.equal(r.limitAuto, false)
})

t.test('forms', async (t) => {
  const r = parseRoute({ ...base, minPause: '250ms', maxPause: '2m', retryBodyLimit: '2048', retries: '0', retryMethods: 'post, Patch', connectTimeout: '2s' }, 'routes[0]')
  t.same([r.minPauseMs, r.maxPauseMs, r.retryBodyLimit, r.retries, r.retryMethods, r.connectTimeoutMs], [250, 120_000, 2048, 0, ['POST', 'PATCH'], 2000])
  t.same(parseRoute({ ...base, retryMethods: ['post'] }, 'routes[0]').retryMethods, ['POST'], 'a YAML list')
  const auto = parseRoute({ ...base, limit: 'auto' }, 'routes[0]')
  t.equal(auto.limitAuto, true)
  t.same(auto.limit, AUTO_LIMIT, 'auto starts at the conservative default')
  t.not(auto.limit, AUTO_LIMIT, 'as a copy: adopting a limit does not change the default')
})

t.test('errors name the field', async (t) => {
  t.throws(() => parseRoute({ ...base, minPause: '5m', maxPause: '1m' }, 'routes[0]'), /routes\[0\]\.minPause: must not be longer than maxPause/)
  t.throws(() => parseRoute({ ...base, maxPause: 'soon' }, 'routes[0]'), /routes\[0\]\.maxPause: expected a duration/)
  t.throws(() => parseRoute({ ...base, retries: 11 }, 'routes[0]'), /routes\[0\]\.retries: expected an integer from 0 to 10/)
  t.throws(() => parseRoute({ ...base, retryMethods: ['FETCH'] }, 'routes[0]'), /routes\[0\]\.retryMethods: expected HTTP methods from .*got "FETCH"/)
  t.throws(() => parseRoute({ ...base, retryMethods: 5 }, 'routes[0]'), /routes\[0\]\.retryMethods: expected a list of HTTP methods/)
  t.throws(() => parseRoute({ ...base, retryBodyLimit: -1 }, 'routes[0]'), /routes\[0\]\.retryBodyLimit/)
  t.throws(() => parseRoute({ ...base, connectTimeout: 'x' }, 'routes[0]'), /routes\[0\]\.connectTimeout/)
  t.throws(() => parseRoute({ ...base, limit: 'automatic' }, 'routes[0]'), /routes\[0\]\.limit/)
})

t.test('flags and environment variables', async (t) => {
  const config = loadConfig(['--upstream', 'https://api.example', '--limit', 'auto', '--retry-methods', 'post', '--retries', '3', '--min-pause', '500ms'],
    { SLUICE_MAX_PAUSE: '2m', SLUICE_CONNECT_TIMEOUT: '3s', SLUICE_RETRY_BODY_LIMIT: '4096' })
  const r = config.routes[0]!
  t.same([r.limitAuto, r.retryMethods, r.retries, r.minPauseMs, r.maxPauseMs, r.connectTimeoutMs, r.retryBodyLimit], [true, ['POST'], 3, 500, 120_000, 3000, 4096])
})
