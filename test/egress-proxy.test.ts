// Egress proxy: upstream connections honour HTTP_PROXY/HTTPS_PROXY/NO_PROXY (either case) and
// --egress-proxy, which wins. The upstream is named api.test, a name only the loopback proxy
// resolves, so a request that did not go through the proxy cannot succeed.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startForwardProxy } from './helpers/forward-proxy'
import { startSluice } from './helpers/sluice'
import { startSluiceProcess, transpiledCli } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

const dir = mkdtempSync(join(tmpdir(), 'sluice-egress-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

async function get (url: string): Promise<{ status: number, body: string }> {
  const res = await request(url)
  return { status: res.statusCode, body: await res.body.text() }
}

t.test('HTTP_PROXY carries http upstreams in absolute form; NO_PROXY hosts go direct', async (t) => {
  const up = await startUpstream()
  const proxy = await startForwardProxy({ 'api.test': '127.0.0.1' })
  const port = new URL(up.url).port
  const config = join(dir, 'two-routes.yaml')
  writeFileSync(config, `routes:\n  - {name: viaproxy, prefix: /p, upstream: "http://api.test:${port}", limit: 100/s}\n  - {name: direct, prefix: /d, upstream: "${up.url}", limit: 100/s}\n`)
  const s = await startSluiceProcess(['--config', config], { HTTP_PROXY: proxy.url, no_proxy: '127.0.0.1,localhost' })
  t.teardown(async () => { await s.kill(); await proxy.close(); await up.close() })
  const viaProxy = await get(`${s.url}/p/items?x=1`)
  t.equal(viaProxy.status, 200, viaProxy.body)
  t.same(proxy.hits.map((h) => [h.method, h.target]), [['GET', `http://api.test:${port}/items?x=1`]], 'absolute-form through the proxy')
  const direct = await get(`${s.url}/d/items`)
  t.equal(direct.status, 200)
  t.equal(proxy.hits.length, 1, 'the NO_PROXY host went direct')
  t.same(up.hits.map((h) => h.url), ['/items?x=1', '/items'])
  t.match(JSON.stringify(s.logs.find((l) => l.address !== undefined)), /"egress":"proxy: http http:\/\/127\.0\.0\.1:\d+, https http:\/\/127\.0\.0\.1:\d+, not for 127\.0\.0\.1,localhost"/)
})

t.test('https_proxy tunnels https upstreams with CONNECT', async (t) => {
  const probe = spawnSync('openssl', ['version'])
  if (probe.status !== 0) {
    t.comment('SKIPPED: openssl is not installed; the https part needs a self-signed certificate for api.test')
    t.pass('skipped without openssl')
    return
  }
  const key = join(dir, 'key.pem')
  const cert = join(dir, 'cert.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=api.test', '-addext', 'subjectAltName=DNS:api.test'], { stdio: 'ignore' })
  const server = createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => { res.end(JSON.stringify({ tls: true, url: req.url })) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const proxy = await startForwardProxy({ 'api.test': '127.0.0.1' })
  const s = await startSluiceProcess(['--upstream', `https://api.test:${port}`, '--limit', '100/s'], { https_proxy: proxy.url, NODE_EXTRA_CA_CERTS: cert })
  t.teardown(async () => { await s.kill(); await proxy.close(); server.closeAllConnections(); server.close() })
  const res = await get(`${s.url}/secure`)
  t.equal(res.status, 200, res.body)
  t.same(JSON.parse(res.body), { tls: true, url: '/secure' })
  t.same(proxy.hits.map((h) => [h.method, h.target]), [['CONNECT', `api.test:${port}`]], 'one tunnel, TLS to api.test inside it')
})

t.test('--egress-proxy wins over the variables; its credentials reach the proxy, never the log', async (t) => {
  const up = await startUpstream()
  const proxy = await startForwardProxy({ 'api.test': '127.0.0.1' })
  const port = new URL(up.url).port
  const withCredentials = `http://ci-user:s3cret-proxy-pass@127.0.0.1:${proxy.port}`
  const args = ['--upstream', `http://api.test:${port}`, '--limit', '100/s', '--egress-proxy', withCredentials]
  // A dead proxy in the variables: only the flag's can work.
  const s = await startSluiceProcess(args, { HTTP_PROXY: 'http://127.0.0.1:1', HTTPS_PROXY: 'http://127.0.0.1:1' })
  t.teardown(async () => { await s.kill(); await proxy.close(); await up.close() })
  const res = await get(`${s.url}/x`)
  t.equal(res.status, 200, res.body)
  t.equal(proxy.hits[0]?.authorization, `Basic ${Buffer.from('ci-user:s3cret-proxy-pass').toString('base64')}`)
  t.equal(up.hits[0]?.headers['proxy-authorization'], undefined, 'the upstream never sees them')
  t.notMatch(JSON.stringify(s.logs), 's3cret', 'the password is in no log line')
  const file = join(dir, 'egress.yaml')
  writeFileSync(file, `egressProxy: "${withCredentials}"\nroutes:\n  - {upstream: "http://api.test:${port}", limit: 1/s}\n`)
  const check = spawnSync(process.execPath, [transpiledCli(), 'check-config', file], { encoding: 'utf8', env: { PATH: process.env.PATH } })
  t.match(check.stdout, /egress: proxy: http http:\/\/ci-user:\*\*\*@127\.0\.0\.1:\d+/)
  t.notMatch(check.stdout + check.stderr, 's3cret')
  const bad = spawnSync(process.execPath, [transpiledCli(), '--egress-proxy', 'socks5://127.0.0.1:1', '--upstream', up.url, '--limit', '1/s'], { encoding: 'utf8' })
  t.equal(bad.status, 2)
  t.match(bad.stderr, /config error: egressProxy: expected an http:\/\/ or https:\/\/ proxy URL/)
})

t.test('a proxy that refuses the tunnel: 502 BAD_GATEWAY with its status in details', async (t) => {
  const proxy = await startForwardProxy({})
  proxy.refuseWith = 403
  const s = await startSluice([{ upstream: 'https://api.test:8443', limit: '100/s' }], { egress: { httpsProxy: proxy.url } })
  t.teardown(async () => { await s.close(); await proxy.close() })
  const res = await request(`${s.url}/x`)
  const body = await res.body.json() as { error: { code: string, details: Record<string, unknown> } }
  t.equal(res.statusCode, 502)
  t.equal(body.error.code, 'BAD_GATEWAY')
  t.equal(body.error.details.proxy_status, 403)
  t.equal(body.error.details.retryable, false)
  t.same(proxy.hits.map((h) => h.method), ['CONNECT'])
})
