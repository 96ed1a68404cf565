// adminToken: status, metrics, events and the dashboard need it; health and ready stay open; the
// dashboard trades ?token= for a cookie; the token never reaches a log line; `sluice status` sends it.
import t from 'tap'
import { request } from 'undici'
import { runStatus } from '../src/observe/status-cli'
import { startSluice } from './helpers/sluice'
import { startSluiceProcess } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

const TOKEN = 'admin-token-0123456789abcdef'
const GUARDED = ['/_sluice/status', '/_sluice/metrics', '/_sluice/', '/_sluice']

t.test('with a token: guarded routes answer 401 ADMIN_AUTH_REQUIRED without it and serve with it', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }], { adminToken: TOKEN })
  t.teardown(async () => { await s.close(); await up.close() })
  for (const path of GUARDED) {
    for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: `Basic ${TOKEN}` }]) {
      const res = await request(`${s.url}${path}`, { headers })
      const body = await res.body.json() as { error: { code: string } }
      t.equal(res.statusCode, 401, `${path} ${JSON.stringify(headers)}`)
      t.equal(body.error.code, 'ADMIN_AUTH_REQUIRED')
      t.equal(res.headers['www-authenticate'], 'Bearer realm="sluice"')
    }
    const ok = await request(`${s.url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })
    await ok.body.text()
    t.equal(ok.statusCode, 200, `${path} with the bearer token`)
  }
  const events = await request(`${s.url}/_sluice/events`)
  t.equal(events.statusCode, 401, 'the event stream too')
  await events.body.text()
  for (const path of ['/_sluice/health', '/_sluice/ready']) {
    const res = await request(`${s.url}${path}`)
    await res.body.text()
    t.equal(res.statusCode, 200, `${path} stays open for probes`)
  }
  const proxied = await request(`${s.url}/x`)
  await proxied.body.text()
  t.equal(proxied.statusCode, 200, 'proxied routes need no admin token')
})

t.test('the dashboard takes ?token= once: a HttpOnly SameSite=Strict cookie, a redirect without it', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }], { adminToken: TOKEN })
  t.teardown(async () => { await s.close(); await up.close() })
  const wrong = await request(`${s.url}/_sluice/?token=not-the-token-0000000`)
  await wrong.body.text()
  t.equal(wrong.statusCode, 401)
  const login = await request(`${s.url}/_sluice/?token=${TOKEN}`)
  await login.body.text()
  t.equal(login.statusCode, 303)
  t.equal(login.headers.location, '/_sluice/')
  const cookie = String(login.headers['set-cookie'])
  t.match(cookie, /^sluice_admin=[A-Za-z0-9_-]+; Path=\/_sluice; HttpOnly; SameSite=Strict$/)
  t.notMatch(cookie, TOKEN, 'the cookie is not the token')
  const jar = cookie.split(';')[0]
  for (const path of ['/_sluice/', '/_sluice/status']) {
    const res = await request(`${s.url}${path}`, { headers: { cookie: `other=1; ${jar}` } })
    await res.body.text()
    t.equal(res.statusCode, 200, `${path} with the cookie`)
  }
  const forged = await request(`${s.url}/_sluice/status`, { headers: { cookie: `sluice_admin=${TOKEN}` } })
  await forged.body.text()
  t.equal(forged.statusCode, 401, 'the token itself is no cookie')
  const lines = JSON.stringify(s.logs)
  t.notMatch(lines, TOKEN, 'the token is in no log line (query and cookie)')
  t.notMatch(lines, jar.split('=')[1], 'nor the cookie')
})

t.test('without a token the admin routes stay open', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }])
  t.teardown(async () => { await s.close(); await up.close() })
  for (const path of GUARDED) {
    const res = await request(`${s.url}${path}`)
    await res.body.text()
    t.equal(res.statusCode, 200, path)
  }
})

t.test('sluice status sends --token or SLUICE_ADMIN_TOKEN, and says what a 401 means', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '100/s' }], { adminToken: TOKEN })
  t.teardown(async () => { await s.close(); await up.close() })
  const run = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number, out: string, err: string }> => {
    let out = ''
    let err = ''
    const code = await runStatus(['--url', s.url, ...args], { out: (x) => { out += x }, err: (x) => { err += x }, tty: false }, env)
    return { code, out, err }
  }
  const refused = await run([])
  t.equal(refused.code, 2)
  t.match(refused.err, /answered 401: this Sluice has an admin token; pass it with --token or SLUICE_ADMIN_TOKEN/)
  t.equal((await run(['--token', TOKEN])).code, 0)
  const viaEnv = await run([], { SLUICE_ADMIN_TOKEN: TOKEN })
  t.equal(viaEnv.code, 0)
  t.match(viaEnv.out, /BUCKET/)
})

t.test('the real command: a token from the environment, warnings when the admin routes are exposed', async (t) => {
  const up = await startUpstream()
  t.teardown(async () => { await up.close() })
  const guarded = await startSluiceProcess(['--upstream', up.url, '--limit', '10/s'], { SLUICE_ADMIN_TOKEN: TOKEN })
  t.teardown(async () => { await guarded.kill() })
  const res = await request(`${guarded.url}/_sluice/metrics`)
  await res.body.text()
  t.equal(res.statusCode, 401)
  const exposed = await startSluiceProcess(['--upstream', up.url, '--limit', '10/s', '--host', '0.0.0.0'])
  t.teardown(async () => { await exposed.kill() })
  t.ok(exposed.logs.some((l) => l.level === 40 && /no adminToken: anyone who reaches this port/.test(String(l.msg))), 'beyond loopback without a token: a warning')
  t.notOk(guarded.logs.some((l) => /no adminToken/.test(String(l.msg))), 'loopback: none')
  t.notMatch(JSON.stringify(guarded.logs), TOKEN)
  const bad = await startSluiceProcess(['--upstream', up.url, '--limit', '10/s', '--admin-token', 'short']).catch((err: Error) => err)
  t.match(String(bad), /config error: adminToken: expected 16 to 256 printable characters/)
  t.notMatch(String(bad), /short/, 'the bad value is not echoed')
})
