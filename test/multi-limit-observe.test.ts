// Every limit of a bucket, where the budget is shown: /_sluice/status (read from Redis per limit), the
// Prometheus metrics, and `sluice status`. The dashboard's rows are in dashboard.test.ts.
import t from 'tap'
import { request } from 'undici'
import { runStatus } from '../src/observe/status-cli'
import type { SluiceStatus } from '../src/observe/status'
import { startRedis } from './helpers/redis'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

t.test('status, metrics and sluice status show each limit of a bucket', async (t) => {
  const redis = await startRedis()
  t.teardown(async () => await redis.close())
  const up = await startUpstream()
  t.teardown(async () => await up.close())
  const s = await startSluice([
    { name: 'pair', prefix: '/pair', upstream: up.url, algorithm: 'sliding-window', limit: [{ rate: '5/min', name: 'short' }, { rate: '12/h', name: 'long' }] },
    { name: 'one', prefix: '/one', upstream: up.url, limit: '10/min' }
  ], { redis: redis.url, keyPrefix: redis.prefix() })
  t.teardown(async () => await s.close())
  for (let i = 0; i < 4; i++) t.equal((await request(`${s.url}/pair/r/${i}`)).statusCode, 200)

  const status = await (await request(`${s.url}/_sluice/status`)).body.json() as SluiceStatus
  const pair = status.buckets.find((b) => b.bucket === 'pair')
  t.match(pair?.limits, [
    { name: 'short', limit: 5, windowS: 60, algorithm: 'sliding-window', perCredential: false, remaining: 1, booked: 4 },
    { name: 'long', limit: 12, windowS: 3600, algorithm: 'sliding-window', perCredential: false, remaining: 8, booked: 4 }
  ], 'each limit with its own figures from Redis')
  t.ok((pair?.limits?.[1].resetS ?? 0) > 3000, `the hour's limit is full again in about an hour (${pair?.limits?.[1].resetS} s)`)
  t.ok((pair?.limits?.[0].resetS ?? 99) <= 63, `the minute's within a minute and its margin (${pair?.limits?.[0].resetS} s)`)
  t.equal(pair?.remaining, 1, 'the bucket\'s remaining is the least any limit has')
  t.equal(pair?.resetS, pair?.limits?.[1].resetS, 'its reset the longest')
  t.equal(status.buckets.find((b) => b.bucket === 'one')?.limits, null, 'a route with one limit has no list')

  const metrics = await (await request(`${s.url}/_sluice/metrics`)).body.text()
  t.match(metrics, /sluice_limit_budget\{route="pair",limit="short"\} 5\n/)
  t.match(metrics, /sluice_limit_budget\{route="pair",limit="long"\} 12\n/)
  t.match(metrics, /sluice_limit_window_seconds\{route="pair",limit="long"\} 3600\n/)
  t.match(metrics, /sluice_limit_tokens_remaining\{route="pair",bucket="pair",limit="short"\} 1\n/, 'what could start at once in each limit, per bucket')
  t.match(metrics, /sluice_limit_tokens_remaining\{route="pair",bucket="pair",limit="long"\} 8\n/)
  t.notMatch(metrics, /sluice_limit_budget\{route="one"/, 'none for a route with one limit')

  let out = ''
  const code = await runStatus(['--url', s.url], { out: (x) => { out += x }, err: (x) => { out += x }, tty: false }, {})
  t.equal(code, 0)
  const lines = out.split('\n')
  const at = lines.findIndex((l) => l.startsWith('pair '))
  t.match(lines[at + 1], /^ {2}short\s+5\/min\s+80%\s+1$/, `a line per limit: name, rate, used, left (${lines[at + 1]})`)
  t.match(lines[at + 2], /^ {2}long\s+12\/h\s+33%\s+8$/, lines[at + 2])
})
