// Fuzz: thousands of random and malformed requests (methods, traversal paths, headers, bodies, raw
// bytes) through the real command with two routes to two loopback upstreams. Seeded (FUZZ_SEED=n to
// replay; the seed is printed), bounded in count and time. The process stays up with bounded memory,
// every response is an envelope or a proxied success, each upstream sees only paths under its own
// route, and no credential reaches a log line.
import t from 'tap'
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:net'
import { startSluiceProcess } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

const COUNT = 3000
const CONCURRENCY = 24
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31)
const SECRETS = ['fz-auth-s3cr3t', 'fz-cookie-s3cr3t', 'fz-apikey-s3cr3t', 'fz-token-s3cr3t', 'fz-key-s3cr3t']

/** mulberry32: small, fast, good enough to pick test inputs. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

interface Case { bytes: Buffer, method: string, description: string }

function generator (rand: () => number): () => Case {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!
  const int = (n: number): number => Math.floor(rand() * n)
  const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)))
  const METHODS = ['GET', 'GET', 'GET', 'GET', 'GET', 'POST', 'POST', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'PROPFIND', 'TRACE', 'CONNECT', 'FOO', 'get', 'G\x00T', 'PRI', 'M-SEARCH']
  const MOUNTS = ['/testrail', '/testrail', '/zulip', '/zulip', '/other', '', '/_sluice', '/testrail%2f..', '/TESTRAIL', '/testrail.']
  const BENIGN = ['a', 'items', '42', 'index.php', 'x.json', 'a..b', '~u', '%20', '-', 'get_cases', 'messages', 'v2']
  const SEGMENTS = ['a', 'index.php', '..', '.', '%2e%2e', '%2E.', '.%2e', '%2f', '%2F', '%5c', '\\', '..;', '%2e%2e%2f', '..%2f', '%252e%252e', 'x y', '%zz', '%00', '%', ';a=b',
    '', '~user', 'ünï', '%c0%ae%c0%ae', '..%00', 'zulip', 'api', 'v1', '@evil.example', ':80', 'a'.repeat(300)]
  const ABSOLUTE = ['http://127.0.0.1:1', 'http://evil.example', 'https://evil.example:443', '//evil.example', 'evil.example:443', '*']
  const target = (): string => {
    if (rand() < 0.08) return pick(ABSOLUTE) + (rand() < 0.5 ? pick(MOUNTS) + '/x' : '')
    let path = pick(MOUNTS)
    for (let i = int(5); i >= 0; i--) path += '/' + (rand() < 0.8 ? pick(BENIGN) : pick(SEGMENTS))
    if (rand() < 0.4) path += `?token=${SECRETS[3]}&key=${SECRETS[4]}&page=${int(9)}` + (rand() < 0.3 ? '&next=/zulip/../x' : '')
    if (rand() < 0.05) path += '#frag'
    return path
  }
  const headerLines = (): string[] => {
    const lines: string[] = []
    const host = rand()
    if (host < 0.9) lines.push(`Host: ${pick(['sluice', 'sluice', '127.0.0.1', 'evil.example', '127.0.0.1:1', 'a'.repeat(100), ''])}`)
    else if (host < 0.95) lines.push('Host: a', 'Host: b')
    if (rand() < 0.5) lines.push(`Authorization: Bearer ${SECRETS[0]}`)
    if (rand() < 0.3) lines.push(`Cookie: session=${SECRETS[1]}`)
    if (rand() < 0.3) lines.push(`X-Api-Key: ${SECRETS[2]}`)
    if (rand() < 0.3) lines.push(`Content-Type: ${pick(['application/json', 'text/plain', 'application/octet-stream', 'application/vnd.api+json', 'multipart/form-data; boundary=x', 'x'])}`)
    if (rand() < 0.1) lines.push(`X-Request-Id: ${pick(['abc', 'x'.repeat(300), 'a b', '../../etc'])}`)
    if (rand() < 0.1) lines.push(`Prefer: wait=${pick(['0', '1', '-1', 'abc', '99999'])}`)
    if (rand() < 0.05) lines.push(`X-Big: ${'b'.repeat(pick([100, 9000, 20_000]))}`)
    if (rand() < 0.05) lines.push('X-Fold: a', ' folded')
    if (rand() < 0.05) lines.push(`${pick(['Bad Name', 'X\x01', ':x', 'é'])}: v`)
    if (rand() < 0.05) lines.push(`Upgrade: ${pick(['websocket', 'h2c'])}`, 'Connection: upgrade')
    if (rand() < 0.05) lines.push('Expect: 100-continue')
    lines.push('Connection: close')
    return lines
  }
  return () => {
    if (rand() < 0.05) {
      const bytes = randomBytes(1 + int(200))
      return { bytes, method: '', description: `random bytes ${bytes.toString('hex').slice(0, 40)}` }
    }
    const method = pick(METHODS)
    const lines = headerLines()
    let body: Buffer = Buffer.alloc(0)
    const framing = rand()
    const payload: Buffer = rand() < 0.5 ? Buffer.from(rand() < 0.5 ? '{"a":1}' : '{not json') : randomBytes(int(rand() < 0.1 ? 3000 : 100))
    if (framing < 0.5) {
      // no body
    } else if (framing < 0.7) {
      lines.push(`Content-Length: ${payload.length}`)
      body = payload
    } else if (framing < 0.78) {
      lines.push('Transfer-Encoding: chunked')
      body = Buffer.concat([Buffer.from(`${payload.length.toString(16)}\r\n`), payload, Buffer.from('\r\n0\r\n\r\n')])
    } else if (framing < 0.82) {
      lines.push(`Content-Length: ${payload.length}`, 'Transfer-Encoding: chunked')
      body = payload
    } else if (framing < 0.86) {
      lines.push(`Content-Length: ${payload.length}`, `Content-Length: ${payload.length + 1}`)
      body = payload
    } else if (framing < 0.9) {
      lines.push('Transfer-Encoding: chunked')
      body = Buffer.from(`${pick(['zz', '-1', 'ffffffffffffffffff', '1;ext'])}\r\nabc\r\n0\r\n\r\n`)
    } else if (framing < 0.94) {
      lines.push(`Content-Length: ${pick(['-1', 'abc', '1e3', '0x10', ' 5', '99999999999999999999'])}`)
    } else if (framing < 0.97) {
      lines.push(`Content-Length: ${payload.length + 10}`)
      body = payload // short: the client ends early
    }
    const version = rand() < 0.9 ? 'HTTP/1.1' : pick(['HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'http/1.1', ''])
    const eol = rand() < 0.95 ? '\r\n' : '\n'
    const head = `${method} ${target()} ${version}${eol}${lines.join(eol)}${eol}${eol}`
    const tail = rand() < 0.05 ? Buffer.from('GET /zulip/smuggled HTTP/1.1\r\nHost: a\r\n\r\n') : Buffer.alloc(0)
    return { bytes: Buffer.concat([Buffer.from(head, 'latin1'), body, tail]), method, description: head.split('\r\n')[0]!.slice(0, 120) }
  }
}

interface Parsed { status: number, headers: Record<string, string>, body: string }

/** Every final response in what the server wrote (1xx skipped); a trailing partial one is dropped. */
function responses (text: string, head: boolean): Parsed[] {
  const out: Parsed[] = []
  let rest = text
  while (rest.startsWith('HTTP/')) {
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) break
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n')
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0)
    const headers: Record<string, string> = {}
    for (const l of lines) {
      const i = l.indexOf(':')
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim()
    }
    const length = head || status < 200 ? 0 : Number(headers['content-length'] ?? 0)
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + length) })
    rest = rest.slice(end + 4 + length)
  }
  return out.filter((r) => r.status >= 200)
}

async function exchange (port: number, bytes: Buffer): Promise<{ text: string, timedOut: boolean }> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let done = false
    const finish = (timedOut: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ text: Buffer.concat(chunks).toString('latin1'), timedOut })
    }
    const timer = setTimeout(() => finish(true), 10_000)
    // Not end(bytes): Node aborts a request whose client half-closes (real clients never do). A
    // request left incomplete (a short body) is ended after 3 s without an answer, so Node's parser
    // sees the end of input and answers then, instead of at the request timeout.
    let idle: NodeJS.Timeout | undefined
    socket.on('connect', () => {
      socket.write(bytes)
      // (An interim 100 Continue is not an answer.)
      idle = setTimeout(() => { if (!/HTTP\/1\.[01] [2-5]\d\d/.test(Buffer.concat(chunks).toString('latin1'))) socket.end() }, 3000)
    })
    socket.on('close', () => clearTimeout(idle))
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('close', () => finish(false))
    socket.on('error', () => finish(false))
  })
}

t.test(`fuzz: ${COUNT} random and malformed requests`, async (t) => {
  t.comment(`FUZZ_SEED=${SEED}`)
  const testrail = await startUpstream()
  const zulip = await startUpstream()
  const dir = mkdtempSync(join(tmpdir(), 'sluice-fuzz-'))
  const config = join(dir, 'sluice.yaml')
  writeFileSync(config, [
    'routes:',
    `  - { name: testrail, prefix: /testrail, upstream: "${testrail.url}/api/v2", limit: 100000/s, maxWait: 1s, bodyLimit: 2000 }`,
    `  - { name: zulip, prefix: /zulip, upstream: "${zulip.url}/api/v1", limit: 100000/s, maxWait: 1s, profile: zulip }`
  ].join('\n'))
  const p = await startSluiceProcess(['--config', config])
  t.teardown(async () => { await p.kill(); await testrail.close(); await zulip.close(); rmSync(dir, { recursive: true, force: true }) })
  const baseline = p.memory()

  const next = generator(prng(SEED))
  const cases = Array.from({ length: COUNT }, next)
  const problems: string[] = []
  const tally = new Map<string, number>()
  let silent = 0
  let i = 0
  const began = performance.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (i < cases.length) {
      const c = cases[i++]!
      const { text, timedOut } = await exchange(p.port, c.bytes)
      if (timedOut) problems.push(`no answer within 10 s: ${JSON.stringify(c.bytes.toString('latin1').slice(0, 400))}`)
      const all = responses(text, c.method === 'HEAD')
      if (all.length === 0 && !timedOut) silent++
      for (const r of all) {
        const json = ((): any => { try { return JSON.parse(r.body) } catch { return undefined } })()
        // The admin page (/_sluice/) is HTML by design.
        const upstreamSuccess = r.status === 200 && (c.method === 'HEAD' || json?.ok === true || c.description.includes(' /_sluice'))
        const isEnvelope = json?.success === false && typeof json?.error?.code === 'string'
        const headEnvelope = c.method === 'HEAD' && r.status >= 400 && /^application\/json/.test(r.headers['content-type'] ?? '')
        const key = upstreamSuccess ? '200' : `${r.status} ${String(json?.error?.code ?? '')}`
        tally.set(key, (tally.get(key) ?? 0) + 1)
        if (!upstreamSuccess && !isEnvelope && !headEnvelope) problems.push(`${r.status} not an envelope (${r.body.slice(0, 80)}): ${c.description}`)
        // Beside it, the native fields of the route's profile (zulip), or the generic `message`.
        const native = json?.message === json?.error?.message || (json?.result === 'error' && json?.msg === json?.error?.message && typeof json?.code === 'string')
        if (isEnvelope && !native) problems.push(`${r.status} envelope without native fields (${r.body.slice(0, 80)}): ${c.description}`)
        // A proxied success is the upstream's own body (the test origin echoes the URL); envelopes are Sluice's.
        if (!upstreamSuccess) for (const s of SECRETS) if (r.body.includes(s)) problems.push(`envelope echoes ${s}: ${c.description}`)
      }
    }
  }))
  const ms = performance.now() - began
  t.comment(`${COUNT} requests in ${Math.round(ms)} ms; responses: ${JSON.stringify(Object.fromEntries([...tally].sort((a, b) => b[1] - a[1])))}; closed without a response: ${silent}`)
  t.same(problems.slice(0, 20), [], `every response is an envelope or a proxied success, none echoes a secret (${problems.length} problems)`)
  // The upstreams are healthy loopback servers: a 502 or 504 would be Sluice failing to forward.
  t.same([...tally.keys()].filter((k) => /^50[24]/.test(k)), [], 'no request that reached an upstream failed on the way')
  t.ok(silent <= COUNT * 0.02, `few connections closed without any response (${silent}; e.g. bytes Node cannot even start to parse)`)

  const health = await exchange(p.port, Buffer.from('GET /_sluice/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'))
  t.match(health.text, /^HTTP\/1\.1 200/, 'the process is up and healthy afterwards')
  t.equal(p.child.exitCode, null)
  const mem = p.memory()
  t.comment(`Sluice RSS ${Math.round(baseline.rssKb / 1024)} MB before, peak ${Math.round(mem.hwmKb / 1024)} MB`)
  t.ok(mem.hwmKb / 1024 < 300, `peak RSS ${Math.round(mem.hwmKb / 1024)} MB stays bounded`)

  const strayTestrail = testrail.hits.map((h) => h.url).filter((u) => u !== '/api/v2' && !u.startsWith('/api/v2/') && !u.startsWith('/api/v2?'))
  const strayZulip = zulip.hits.map((h) => h.url).filter((u) => u !== '/api/v1' && !u.startsWith('/api/v1/') && !u.startsWith('/api/v1?'))
  t.same(strayTestrail, [], `testrail saw only paths under /api/v2 (${testrail.hits.length} requests)`)
  t.same(strayZulip, [], `zulip saw only paths under /api/v1 (${zulip.hits.length} requests)`)
  const walked = [...testrail.hits, ...zulip.hits].map((h) => h.url.split('?')[0]!).filter((u) => {
    let d = u
    try { d = decodeURIComponent(u) } catch {}
    return /(^|\/)\.\.?(\/|$)/.test(d)
  })
  t.same(walked, [], 'no forwarded path holds a dot segment, even decoded')
  t.ok(testrail.hits.length > 50 && zulip.hits.length > 50, 'both upstreams got plenty of traffic')
  t.notOk(zulip.hits.some((h) => h.url.includes('smuggled')), 'no smuggled request reached an upstream')

  const logText = p.logs.map((l) => JSON.stringify(l))
  t.ok(logText.length >= COUNT / 2, `Sluice logged ${logText.length} lines`)
  const leaks = logText.filter((l) => SECRETS.some((s) => l.includes(s)))
  t.same(leaks.slice(0, 3), [], 'no log line holds a credential')
  t.notOk(p.logs.some((l) => typeof l.msg === 'string' && /uncaught|unhandled/i.test(l.msg)), 'no uncaught error was logged')
})
