// The TLS listener: `sluice cert DIR` (the real command) makes a certificate that a plain Node client
// trusts through NODE_EXTRA_CA_CERTS; routes and admin routes answer over HTTPS with the server
// timeouts and options of the plain listener; a bad, expired or mismatched pair stops the command with
// exit status 2 naming the field.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { makeCert, DEFAULT_NAMES } from '../src/cert/make-cert'
import { loadConfig } from '../src/config/load'
import { startSluice } from './helpers/sluice'
import { startSluiceProcess, transpiledCli } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

interface Run { code: number | null, stdout: string, stderr: string }

function run (args: string[], env: Record<string, string> = {}, cli = transpiledCli()): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** A child Node process's fetch of `url`, trusting only what NODE_EXTRA_CA_CERTS adds to its CAs. */
async function nodeFetch (url: string, ca: string | undefined): Promise<Run> {
  const script = `fetch(${JSON.stringify(url)}).then(async (r) => console.log(r.status, await r.text()), (e) => { console.log('ERR', e.cause?.code ?? e.message); process.exitCode = 1 })`
  const child = spawn(process.execPath, ['-e', script], { env: { PATH: process.env.PATH ?? '', ...(ca === undefined ? {} : { NODE_EXTRA_CA_CERTS: ca }) } })
  let stdout = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  return await new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr: '' })))
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-tls-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const certDir = join(dir, 'cert')

t.test('sluice cert DIR writes a CA and a loopback certificate and says how to trust it', async (t) => {
  const r = await run(['cert', certDir])
  t.equal(r.code, 0, r.stderr)
  for (const hint of ['NODE_EXTRA_CA_CERTS=', 'SSL_CERT_FILE=', 'REQUESTS_CA_BUNDLE=', '--tls-cert', '--tls-key']) t.match(r.stdout, hint)
  t.equal(statSync(join(certDir, 'key.pem')).mode & 0o077, 0, 'the key is readable by its owner only')
  const again = await run(['cert', certDir])
  t.equal(again.code, 2, 'existing files are not overwritten without --force')
  t.match(again.stderr, /config error: cert: .*already exist/)
})

t.test('a plain Node client trusts the listener through NODE_EXTRA_CA_CERTS; routes and admin routes answer', async (t) => {
  const up = await startUpstream()
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '50/s', '--tls-cert', join(certDir, 'cert.pem'), '--tls-key', join(certDir, 'key.pem')])
  t.teardown(async () => { await p.kill(); await up.close() })
  t.match(p.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the start-up line names an https address')
  const ca = join(certDir, 'ca.pem')
  const routed = await nodeFetch(`${p.url}/items/1`, ca)
  t.match(routed.stdout, /^200 .*"url":"\/items\/1"/, 'a route answers over TLS')
  const health = await nodeFetch(`https://localhost:${p.port}/_sluice/health`, ca)
  t.match(health.stdout, /^200 \{"status":"ok"\}/, 'the admin routes share the listener, and localhost is a name of the certificate')
  const untrusted = await nodeFetch(`${p.url}/_sluice/health`, undefined)
  t.match(untrusted.stdout, /^ERR (?:SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/, 'without the CA the client refuses the certificate')
  t.equal(up.hits.length, 1)
})

t.test('the TLS server gets the plain server\'s timeouts and options', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ upstream: up.url, limit: '50/s' }], { tls: { cert: join(certDir, 'cert.pem'), key: join(certDir, 'key.pem') } },
    { timeouts: { headersMs: 800, requestMs: 1500, keepAliveMs: 7000, idleMs: 9000, checkIntervalMs: 100 } })
  t.teardown(async () => { await s.close(); await up.close() })
  const server = s.app.server
  t.same([server.headersTimeout, server.requestTimeout, server.keepAliveTimeout, server.timeout], [800, 1500, 7000, 9000])
  const ca = readFileSync(join(certDir, 'ca.pem'))
  const port = Number(new URL(s.url).port)
  const exchange = (bytes: string | undefined): Promise<string> => new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => { if (bytes !== undefined) socket.write(bytes) })
    let text = ''
    socket.on('data', (c: Buffer) => { text += c.toString() })
    socket.on('close', () => resolve(text))
    socket.on('error', () => resolve(text))
    setTimeout(() => socket.destroy(), 5000).unref()
  })
  // requireHostHeader: false reached https.createServer: the envelope, not Node's bodiless 400.
  const noHost = await exchange('GET /x HTTP/1.1\r\nConnection: close\r\n\r\n')
  t.match(noHost, /^HTTP\/1\.1 400[^]*"code":"BAD_REQUEST"/, 'a request without Host gets the envelope')
  // connectionsCheckingInterval and headersTimeout reached it too: a slowloris ends within about a second.
  const started = Date.now()
  const slow = await exchange('GET /x HTTP/1.1\r\nHost: a\r\n')
  t.match(slow, /^HTTP\/1\.1 408[^]*"code":"REQUEST_TIMEOUT"/, 'headers trickling in get 408 over TLS')
  t.ok(Date.now() - started < 4000, `within the headers timeout (${Date.now() - started} ms)`)
})

t.test('bad, expired or mismatched certificate files: exit status 2 naming the field', async (t) => {
  const expired = await makeCert(DEFAULT_NAMES, 1, new Date(Date.now() - 10 * 86_400_000))
  const other = await makeCert(DEFAULT_NAMES, 30)
  const files = {
    cert: join(certDir, 'cert.pem'),
    key: join(certDir, 'key.pem'),
    expiredCert: join(dir, 'expired-cert.pem'),
    expiredKey: join(dir, 'expired-key.pem'),
    otherKey: join(dir, 'other-key.pem'),
    garbage: join(dir, 'garbage.pem')
  }
  writeFileSync(files.expiredCert, expired.cert)
  writeFileSync(files.expiredKey, expired.key)
  writeFileSync(files.otherKey, other.key)
  writeFileSync(files.garbage, 'not a certificate\n')
  const cases: Array<[string, string[], RegExp]> = [
    ['expired', ['--tls-cert', files.expiredCert, '--tls-key', files.expiredKey], /^sluice: config error: tls\.cert: .*expired on/],
    ['mismatched', ['--tls-cert', files.cert, '--tls-key', files.otherKey], /^sluice: config error: tls\.key: .*is not the private key of/],
    ['not a certificate', ['--tls-cert', files.garbage, '--tls-key', files.key], /^sluice: config error: tls\.cert: .*is not a PEM certificate/],
    ['not a key', ['--tls-cert', files.cert, '--tls-key', files.garbage], /^sluice: config error: tls\.key: .*is not an unencrypted PEM private key/],
    ['missing file', ['--tls-cert', join(dir, 'nope.pem'), '--tls-key', files.key], /^sluice: config error: tls\.cert: cannot read .*ENOENT/],
    ['cert without key', ['--tls-cert', files.cert], /^sluice: config error: tls\.key: is required with tls\.cert/]
  ]
  for (const [name, args, expected] of cases) {
    const r = await run(['--upstream', 'http://127.0.0.1:9', '--limit', '1/s', '--port', '0', ...args])
    t.equal(r.code, 2, `${name}: exit status 2`)
    t.match(r.stderr, expected, `${name}: ${r.stderr.trim()}`)
    t.notMatch(r.stderr, /PRIVATE KEY|BEGIN/, `${name}: no PEM content echoed`)
  }
  // The same from a config file and from SLUICE_TLS_* variables.
  const yaml = join(dir, 'tls.yaml')
  writeFileSync(yaml, `tls: { cert: ${files.expiredCert}, key: ${files.expiredKey} }\nroutes:\n  - { upstream: "http://127.0.0.1:9", limit: 1/s }\n`)
  t.throws(() => loadConfig(['--config', yaml], {}), { name: 'ConfigError', field: 'tls.cert', message: new RegExp(`expired on ${expired.notAfter.toISOString().slice(0, 16)}.*sluice cert DIR`) })
  t.throws(() => loadConfig(['--upstream', 'http://127.0.0.1:9', '--limit', '1/s'], { SLUICE_TLS_CERT: files.cert, SLUICE_TLS_KEY: files.otherKey }), /tls\.key: .*is not the private key/)
  writeFileSync(yaml, 'tls: { cert: a.pem, key: b.pem, ca: c.pem }\nroutes:\n  - { upstream: "http://127.0.0.1:9", limit: 1/s }\n')
  t.throws(() => loadConfig(['--config', yaml], {}), /config error: tls\.ca: unknown field/)
  const checked = await run(['check-config', writeOk(dir, files)])
  t.equal(checked.code, 0, checked.stderr)
  t.match(checked.stdout, /listen: https:\/\/127\.0\.0\.1:8080 \(tls cert /)
})

function writeOk (dir: string, files: { cert: string, key: string }): string {
  const path = join(dir, 'ok.yaml')
  writeFileSync(path, `tls: { cert: ${files.cert}, key: ${files.key} }\nroutes:\n  - { upstream: "http://127.0.0.1:9", limit: 1/s }\n`)
  return path
}

t.test('a reload puts new certificate files into the running listener; a broken one keeps the old', async (t) => {
  const { connect } = await import('node:tls')
  const up = await startUpstream()
  const first = await makeCert(DEFAULT_NAMES, 30)
  const second = await makeCert(DEFAULT_NAMES, 30)
  const cert = join(dir, 'rotate-cert.pem')
  const key = join(dir, 'rotate-key.pem')
  writeFileSync(cert, first.cert)
  writeFileSync(key, first.key)
  const pidFile = join(dir, 'rotate.pid')
  const p = await startSluiceProcess(['--upstream', up.url, '--limit', '50/s', '--tls-cert', cert, '--tls-key', key, '--pid-file', pidFile])
  t.teardown(async () => { await p.kill(); await up.close() })
  const served = async (): Promise<string> => await new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: p.port, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '')
      socket.end()
    })
    socket.on('error', reject)
  })
  const { X509Certificate } = await import('node:crypto')
  t.equal(await served(), new X509Certificate(first.cert).fingerprint256, 'the first certificate')
  // Rotated in place (same paths), as a certificate manager does, then SIGHUP.
  writeFileSync(cert, second.cert)
  writeFileSync(key, second.key)
  const from = p.logs.length
  t.equal((await run(['reload', '--pid-file', pidFile])).code, 0)
  for (let i = 0; i < 100 && !p.logs.slice(from).some((l) => /^config reloaded/.test(String(l.msg))); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(await served(), new X509Certificate(second.cert).fingerprint256, 'new handshakes get the new certificate')
  // A key that does not match: the reload is refused, naming the field, and the listener keeps serving.
  writeFileSync(key, first.key)
  const before = p.logs.length
  t.equal((await run(['reload', '--pid-file', pidFile])).code, 0)
  for (let i = 0; i < 100 && !p.logs.slice(before).some((l) => l.field === 'tls.key'); i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(p.logs.slice(before).some((l) => l.field === 'tls.key'), 'the refused reload names tls.key')
  t.equal(await served(), new X509Certificate(second.cert).fingerprint256, 'still the second certificate')
})
