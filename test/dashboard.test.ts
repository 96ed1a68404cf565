// The dashboard in a real browser (Debian's Chromium driven by playwright-core): it loads with no
// console error and no request beyond loopback, shows every bucket, and its chart and queue figures
// move while a load runs. Screenshots (light and dark) go to test-artifacts/.
import t from 'tap'
import { setMaxListeners } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { startSluice } from './helpers/sluice'
import { startUpstream } from './helpers/upstream'

const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
const ARTIFACTS = join(__dirname, '..', 'test-artifacts')

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

function isLoopback (url: string): boolean {
  if (url.startsWith('data:') || url.startsWith('about:')) return true
  try {
    const host = new URL(url).hostname
    return host === '127.0.0.1' || host === 'localhost' || host === '[::1]'
  } catch {
    return false
  }
}

const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run installs it)`

t.test('the dashboard shows every bucket and moves with the load', { skip }, async (t) => {
  const { chromium } = await import('playwright-core')
  const up = await startUpstream()
  const s = await startSluice([
    { name: 'testrail', prefix: '/testrail', upstream: up.url, limit: '8/s' },
    { name: 'zulip', prefix: '/zulip', upstream: up.url, limit: '200/min', algorithm: 'sliding-window' },
    { name: 'github', prefix: '/github', upstream: up.url, limit: '3/s', mode: 'shadow' }
  ])
  const profile = mkdtempSync(join(tmpdir(), 'sluice-dashboard-'))
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: ARGS, headless: true, viewport: { width: 1280, height: 900 }, timeout: 20_000 })
  let loading = true
  const stopLoad = new AbortController()
  setMaxListeners(1000, stopLoad.signal) // one signal ends every load request in flight
  // The load's own connections, so they can all be closed before Sluice is.
  const loadAgent = new Agent({ connections: 64 })
  t.teardown(async () => {
    loading = false
    stopLoad.abort()
    await loadAgent.destroy()
    await context.close()
    rmSync(profile, { recursive: true, force: true })
    await s.close()
    await up.close()
  })
  const external: string[] = []
  const consoleErrors: string[] = []
  await context.route('**/*', async (route) => {
    const url = route.request().url()
    if (isLoopback(url)) await route.continue()
    else {
      external.push(url)
      await route.abort()
    }
  })
  const page = context.pages()[0] ?? await context.newPage()
  page.on('console', (msg) => { if (msg.type() === 'error' || msg.type() === 'warning') consoleErrors.push(`${msg.type()}: ${msg.text()}`) })
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`))
  const requested: string[] = []
  page.on('request', (req) => requested.push(req.url()))

  const res = await page.goto(`${s.url}/_sluice/`, { waitUntil: 'load', timeout: 10_000 })
  t.equal(res?.status(), 200)
  t.match(res?.headers()['content-security-policy'], /default-src 'none'/, 'the page may load nothing from elsewhere')
  await page.waitForSelector('[data-bucket="github"]', { timeout: 5000 })
  const shown = await page.$$eval('[data-bucket]', (els) => els.map((e) => e.getAttribute('data-bucket')))
  t.same(shown.sort(), ['github', 'testrail', 'zulip'], 'every configured bucket has a card')
  t.equal(await page.textContent('[data-bucket="github"] .badge.shadow'), 'SHADOW')
  t.ok(await page.isVisible('[data-bucket="github"] .badge.shadow'), 'the shadow route is marked')
  t.notOk(await page.isVisible('[data-bucket="zulip"] .badge.shadow'))

  const forwarded = async (bucket: string): Promise<number> => Number(await page.getAttribute(`[data-bucket="${bucket}"] canvas`, 'data-forwarded'))
  const text = async (bucket: string, key: string): Promise<string> => (await page.textContent(`[data-bucket="${bucket}"] [data-k="${key}"]`)) ?? ''
  const pixels = async (bucket: string): Promise<string> => await page.$eval(`[data-bucket="${bucket}"] canvas`, (c) => (c as unknown as { toDataURL: () => string }).toDataURL())
  const before = { testrail: await forwarded('testrail'), zulip: await forwarded('zulip'), chart: await pixels('testrail') }
  t.equal(before.testrail, 0)
  t.equal(await text('testrail', 'queue'), '0')

  // Load: 24 clients on testrail (8/s, so a queue builds), steady requests on zulip and github.
  const loadErrors: string[] = []
  const load = async (path: string, clients: number, pauseMs: number): Promise<void> => {
    await Promise.all(Array.from({ length: clients }, async () => {
      // eslint-disable-next-line no-unmodified-loop-condition -- changed by another task (a closure), which the rule cannot see
      while (loading) {
        try {
          const r = await loadAgent.request({ origin: s.url, path, method: 'GET', headersTimeout: 30_000, signal: stopLoad.signal })
          await r.body.dump()
        } catch (err) {
          if (loading) loadErrors.push(String(err))
          await sleep(50) // never a hot loop of failures
        }
        if (pauseMs > 0) await sleep(pauseMs)
      }
    }))
  }
  const running = Promise.all([load('/testrail/x', 24, 0), load('/zulip/x', 2, 100), load('/github/x', 2, 100)])

  let maxQueue = 0
  let movedChart = false
  const deadline = Date.now() + 12_000
  while (Date.now() < deadline) {
    await sleep(250)
    maxQueue = Math.max(maxQueue, Number(await text('testrail', 'queue')))
    movedChart = (await forwarded('testrail')) > before.testrail && (await forwarded('zulip')) > before.zulip && (await pixels('testrail')) !== before.chart
    if (maxQueue > 0 && movedChart && Number(await text('testrail', 'perMin')) >= 16) break
  }
  t.ok(maxQueue > 0, `the queue figure rose under load (max ${maxQueue})`)
  t.ok(movedChart, 'the charts drew the new requests')
  t.ok(Number(await text('testrail', 'perMin')) >= 16, `requests per minute counted (${await text('testrail', 'perMin')})`)
  t.match(await text('testrail', 'wait'), /ms|s/, 'wait percentiles shown')
  // Fair-share clients (the load has no X-Sluice-Client: one client per route, by remote address).
  t.ok(await page.isVisible('#clients'), 'the clients table is shown')
  const clientRoutes = await page.$$eval('#client-rows tr', (rows) => rows.map((r) => [r.children[0].textContent, r.getAttribute('data-client')]))
  t.ok(clientRoutes.some(([route, id]) => route === 'testrail' && /^[A-Za-z0-9_-]{22}$/.test(id ?? '')), `a testrail client row with a hashed id (${JSON.stringify(clientRoutes)})`)
  t.match(await page.textContent('#conn'), /^live · 1 instance · store memory/)
  t.match(await page.getAttribute('[data-bucket="testrail"] canvas', 'aria-label'), /^Requests per second over the last 10 minutes: average [\d.]+ per second against a limit of 8\.0 per second$/)
  const pct = await page.textContent('[data-bucket="testrail"] .pct')
  t.match(pct, /^\d+%$/)
  t.ok(Number(pct?.slice(0, -1)) > 0, `the gauge shows budget used (${pct})`)

  // Upstream pushback pauses a bucket: the card says so.
  t.notOk(await page.isVisible('[data-bucket="zulip"] .badge.paused'))
  await s.observer.timed(s.store).pause('zulip', 20_000)
  await page.waitForSelector('[data-bucket="zulip"] .badge.paused', { state: 'visible', timeout: 3000 })
  t.match(await page.textContent('[data-bucket="zulip"] .badge.paused'), /^PAUSED (19|20) s$/)

  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true })
  await page.emulateMedia({ colorScheme: 'dark' })
  await sleep(1200) // one more tick redraws the canvas in dark colours
  t.equal(await page.evaluate('getComputedStyle(document.body).backgroundColor'), 'rgb(15, 18, 22)', 'dark theme applies')
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard-dark.png'), fullPage: true })
  await page.emulateMedia({ colorScheme: 'light' })
  t.equal(await page.evaluate('getComputedStyle(document.body).backgroundColor'), 'rgb(246, 247, 249)', 'light theme applies')

  // Keyboard: Tab reaches the controls, focus is visible, Space/Enter work.
  await page.keyboard.press('Tab')
  const first = await page.evaluate('({ id: document.activeElement.id, outline: getComputedStyle(document.activeElement).outlineStyle })') as { id: string, outline: string }
  t.equal(first.id, 'r600', 'the chart range is the first stop')
  const label = await page.evaluate('getComputedStyle(document.querySelector(\'label[for="r600"]\')).outlineStyle')
  t.equal(label, 'solid', 'the focused range shows a focus ring')
  await page.keyboard.press('ArrowLeft')
  t.equal(await page.evaluate('document.querySelector(\'input[name="range"]:checked\').value'), '300', 'arrow keys change the range')
  t.match(await page.getAttribute('[data-bucket="testrail"] canvas', 'aria-label'), /last 5 minutes/)
  await page.keyboard.press('Tab')
  t.equal(await page.evaluate('document.activeElement.id'), 'pause')
  t.equal(await page.evaluate('getComputedStyle(document.activeElement).outlineStyle'), 'solid', 'the focused button shows a focus ring')
  await page.keyboard.press('Enter')
  t.equal(await page.getAttribute('#pause', 'aria-pressed'), 'true', 'Enter pauses updates')
  const frozen = await text('zulip', 'perMin')
  await sleep(2200)
  t.equal(await text('zulip', 'perMin'), frozen, 'paused: the figures hold still')
  await page.keyboard.press('Space')
  t.equal(await page.getAttribute('#pause', 'aria-pressed'), 'false', 'Space resumes')

  // Waiting clients give up (the paused zulip would hold them 20 s).
  loading = false
  stopLoad.abort()
  await running
  t.same(loadErrors.slice(0, 3), [], 'the load ran without client errors')
  t.same(external, [], 'no request left loopback')
  t.ok(requested.every(isLoopback), 'every request the page made went to Sluice')
  t.notOk(requested.some((u) => u.includes('favicon')), 'no favicon request (it would be proxied upstream)')
  t.same(consoleErrors, [], 'no console errors or warnings')
})

t.test('close does not hang on open event streams', async (t) => {
  const up = await startUpstream()
  const s = await startSluice([{ name: 'a', upstream: up.url, limit: '10/s' }])
  t.teardown(async () => { await up.close() })
  const res = await request(`${s.url}/_sluice/events`)
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/event-stream/)
  const chunks: string[] = []
  const ended = new Promise<void>((resolve) => {
    res.body.on('data', (c: Buffer) => chunks.push(c.toString()))
    res.body.on('end', resolve)
    res.body.on('error', () => resolve())
  })
  for (let i = 0; i < 40 && !chunks.join('').includes('event: status'); i++) await sleep(50)
  t.match(chunks.join(''), /retry: 2000\n\n[\s\S]*event: status\ndata: \{"status":\{/, 'status events flow')
  const began = Date.now()
  await s.close()
  await ended
  t.ok(Date.now() - began < 2000, `closed in ${Date.now() - began} ms with a stream open`)
})

t.test('a bucket with several limits shows a row per limit', { skip }, async (t) => {
  const { chromium } = await import('playwright-core')
  const up = await startUpstream()
  const s = await startSluice([
    { name: 'pair', prefix: '/pair', upstream: up.url, algorithm: 'sliding-window', limit: [{ rate: '5/min', name: 'short' }, { rate: '12/h', name: 'long' }] },
    { name: 'one', prefix: '/one', upstream: up.url, limit: '10/min' }
  ])
  const profile = mkdtempSync(join(tmpdir(), 'sluice-dashboard-'))
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: ARGS, headless: true, viewport: { width: 1280, height: 900 }, timeout: 20_000 })
  t.teardown(async () => {
    await context.close()
    rmSync(profile, { recursive: true, force: true })
    await s.close()
    await up.close()
  })
  for (let i = 0; i < 3; i++) await (await request(`${s.url}/pair/x`)).body.dump()
  const page = context.pages()[0] ?? await context.newPage()
  const consoleErrors: string[] = []
  page.on('pageerror', (err) => consoleErrors.push(err.message))
  await page.goto(`${s.url}/_sluice/`, { waitUntil: 'load', timeout: 10_000 })
  await page.waitForSelector('[data-bucket="pair"] [data-limit="long"]', { timeout: 5000 })
  const rows = async (): Promise<string[][]> => await page.$$eval('[data-bucket="pair"] .limits tbody tr', (trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent ?? '')))
  for (let i = 0; i < 20 && (await rows())[0][2] === '?'; i++) await sleep(250)
  const shown = await rows()
  t.same(shown.map((r) => r.slice(0, 4)), [['short', '5/min', '2', '3'], ['long', '12/h', '9', '3']], `name, rate, left now and booked of each limit (${JSON.stringify(shown)})`)
  t.match(shown[1][4], /^\d+ s$/, 'and when it is full again')
  t.match(await page.textContent('[data-bucket="pair"] h2 .sub'), /^5\/min \+ 12\/h · /, 'the heading names every rate')
  t.notOk(await page.isVisible('[data-bucket="one"] .limits'), 'a route with one limit has no table')
  mkdirSync(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard-limits.png'), fullPage: true })
  t.same(consoleErrors, [], 'no page errors')
})
