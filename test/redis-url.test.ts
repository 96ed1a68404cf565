import t from 'tap'
import { maskRedisUrl, parseRedisUrl } from '../src/config/redis-url'
import { ConfigError } from '../src/errors'

t.test('one server: the URL goes to ioredis as it is', async (t) => {
  t.same(parseRedisUrl('redis://127.0.0.1:6379'), { kind: 'single', url: 'redis://127.0.0.1:6379', tls: false })
  t.same(parseRedisUrl('rediss://:pw@redis.example.com:6380/2'), { kind: 'single', url: 'rediss://:pw@redis.example.com:6380/2', tls: true })
  t.same(parseRedisUrl('redis://[::1]:7000'), { kind: 'single', url: 'redis://[::1]:7000', tls: false })
})

t.test('cluster seeds', async (t) => {
  t.same(parseRedisUrl('redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002'), {
    kind: 'cluster',
    nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 6379 }, { host: '::1', port: 7002 }],
    username: 'u',
    password: 'p@ss',
    tls: false
  })
  t.equal((parseRedisUrl('rediss+cluster://secret@h:1') as { password?: string }).password, 'secret', 'a password alone, as ioredis reads redis://PASSWORD@host')
})

t.test('sentinel: hosts, master name, passwords', async (t) => {
  t.same(parseRedisUrl('redis+sentinel://:pw@s1:26379,s2/mymaster?sentinelPassword=sp'), {
    kind: 'sentinel',
    sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }],
    name: 'mymaster',
    db: 0,
    username: undefined,
    password: 'pw',
    tls: false,
    sentinelUsername: undefined,
    sentinelPassword: 'sp'
  })
  t.equal((parseRedisUrl('rediss+sentinel://s1:5000/main/3') as { db: number }).db, 3)
})

t.test('bad URLs name the field and never repeat the password', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['http://h:1', /expected a redis:\/\/ or rediss:\/\/ URL/],
    ['redis://h1:1,h2:2', /several hosts need redis\+cluster/],
    ['redis+sentinel://s1:26379', /needs the master name/],
    ['redis+sentinel://s1:26379/', /needs the master name/],
    ['redis+cluster://h:1/3', /only database 0/],
    ['redis://h:99999', /port from 1 to 65535/],
    ['redis://h:1/x', /database number/],
    ['redis://', /at least one HOST:PORT/],
    ['ftp://:hunter2@h:1', /expected a redis:\/\/ or rediss:\/\/ URL/]
  ]
  for (const [url, message] of cases) {
    const err = t.throws(() => parseRedisUrl(url), ConfigError, url) as ConfigError
    t.equal(err.field, 'redis', `${url}: names the field`)
    t.match(err.message, message, url)
    t.notMatch(err.message, /hunter2/, `${url}: no password`)
  }
})

t.test('masking', async (t) => {
  t.equal(maskRedisUrl('redis://:hunter2@h:1'), 'redis://:***@h:1')
  t.equal(maskRedisUrl('redis://user:hunter2@h:1'), 'redis://user:***@h:1')
  t.equal(maskRedisUrl('redis://hunter2@h:1'), 'redis://***@h:1')
  t.equal(maskRedisUrl('redis+sentinel://s:1/m?sentinelPassword=hunter2&x=1'), 'redis+sentinel://s:1/m?sentinelPassword=***&x=1')
  t.equal(maskRedisUrl('redis://h:1'), 'redis://h:1')
})
