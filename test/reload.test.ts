// Reload: SIGHUP (here sent by the real `sluice reload --pid-file`) re-reads the config file. Requests
// already waiting keep their reservations and are served; new ones see the new limits; a removed route
// drains; a broken file keeps the running config and logs the field; settings that need a restart say so.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { Pool } from 'undici'
import { startSluiceProcess, transpiledCli, type SluiceProcess } from './helpers/sluice-process'
import { startUpstream } from './helpers/upstream'

const dir = mkdtempSync(join(tmpdir(), 'sluice-reload-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

function routes (upstream: string, lines: string[]): string {
  return `routes:\n${lines.map((l) => `  - {${l}, upstream: "${upstream}", maxWait: 20s}`).join('\n')}\n`
}

async function logged (s: SluiceProcess, pattern: RegExp, from: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100; i++) {
    const line = s.logs.slice(from).find((l) => pattern.test(String(l.msg)))
    if (line !== undefined) return line
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`no log line matching ${pattern}`)
}

t.test('SIGHUP swaps the config in while requests wait, and keeps the old one when the file is broken', async (t) => {
  const up = await startUpstream()
  const file = join(dir, 'sluice.yaml')
  const pidFile = join(dir, 'sluice.pid')
  writeFileSync(file, routes(up.url, ['name: a, prefix: /a, limit: 2/s', 'name: b, prefix: /b, limit: 100/s', 'name: c, prefix: /c, limit: 2/s']))
  const s = await startSluiceProcess(['--config', file, '--pid-file', pidFile])
  // One keep-alive connection for everything: a reload must not drop it.
  const client = new Pool(s.url, { connections: 8 })
  t.teardown(async () => { await client.close(); await s.kill(); await up.close() })
  const get = async (path: string): Promise<number> => {
    const res = await client.request({ path, method: 'GET' })
    await res.body.text()
    return res.statusCode
  }
  const reload = (): void => {
    const r = spawnSync(process.execPath, [transpiledCli(), 'reload', '--pid-file', pidFile], { encoding: 'utf8' })
    t.equal(r.status, 0, r.stderr)
  }

  // At 2/s these wait up to ~2 s for their slots.
  const waitingA = Array.from({ length: 5 }, async (_, i) => await get(`/a/old-${i}`))
  const waitingC = Array.from({ length: 4 }, async (_, i) => await get(`/c/old-${i}`))
  await new Promise((resolve) => setTimeout(resolve, 200))
  let from = s.logs.length
  writeFileSync(file, routes(up.url, ['name: a, prefix: /a, limit: 50/s, burst: 10', 'name: b, prefix: /b, limit: 100/s, timeout: 20s']) + 'hashSecret: another-secret\n')
  reload()
  const line = await logged(s, /^config reloaded/, from)
  t.equal(line.msg, 'config reloaded: removed c; new budget a; new forwarding b')
  t.same([line.added, line.removed, line.rebudgeted, line.reforwarded], [[], ['c'], ['a'], ['b']])
  const restart = await logged(s, /a restart is needed/, from)
  t.same(restart.fields, ['hashSecret'], 'the hash secret cannot change live')

  t.same(await Promise.all(waitingA), [200, 200, 200, 200, 200], 'requests waiting on a changed route kept their reservations and were served')
  t.same(await Promise.all(waitingC), [200, 200, 200, 200], 'the removed route drained: its waiting requests were served')
  t.equal(await get('/c/new'), 404, 'the removed route takes no new requests')
  const began = Date.now()
  const fresh = await Promise.all(Array.from({ length: 10 }, async (_, i) => await get(`/a/new-${i}`)))
  const took = Date.now() - began
  t.same(fresh, Array(10).fill(200))
  t.ok(took < 2000, `new requests see the new limit: 10 in ${took} ms (at 2/s they would take 4.5 s)`)
  t.equal(await get('/b/x'), 200)

  from = s.logs.length
  writeFileSync(file, routes(up.url, ['name: a, prefix: /a, limit: fast']))
  reload()
  const refused = await logged(s, /^reload refused/, from)
  t.equal(refused.field, 'routes[0].limit', 'the broken field is named')
  t.equal(refused.level, 50)
  t.equal(await get('/b/still'), 200, 'the running config stays')
  t.equal(s.child.exitCode, null, 'and the process with it')
  t.notOk(up.hits.some((h) => h.url === '/new'), 'nothing reached the upstream for the removed route')
})
