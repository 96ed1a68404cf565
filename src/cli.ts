#!/usr/bin/env node
// The `sluice` command. Bad flags or config: one line naming the field, exit status 2.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describeEgress } from './config/egress'
import { loadConfig } from './config/load'
import { presetNames } from './config/preset'
import { maskRedisUrl } from './config/redis-url'
import { type SluiceConfig } from './config/schema'
import { formatRate } from './config/units'
import { parseDemoArgs, runDemo } from './demo/demo'
import { createSluice } from './http/app'
import { exposedAdminWarning } from './http/admin-auth'
import { createLogger } from './http/logger'
import { runStatus } from './observe/status-cli'
import { reloadOnHangup, sendReload } from './http/reload-signal'
import { ConfigError } from './errors'

const HELP = `sluice: a local reverse proxy that shapes traffic to one shared rate-limit budget

Usage:
  sluice --upstream URL --limit 180/min [options]     proxy one upstream
  sluice --preset NAME --upstream URL [options]       proxy one upstream with a known API's limits
  sluice --config FILE [--redis URL] [--port N]       proxy the routes of a YAML file
  sluice check-config FILE                            validate a config, print the effective routes
  sluice reload --pid-file FILE                       re-read the config of the sluice that wrote FILE (or kill -HUP PID)
  sluice status [--url URL] [--watch [--interval 2s]] [--token T]  the team's budget as a table (default URL
                                                      http://127.0.0.1:8080; the same figures live in a browser at
                                                      URL/_sluice/; --token or SLUICE_ADMIN_TOKEN: the admin token)
  sluice cert DIR [--name HOST]... [--days N]          write a CA and a certificate for 127.0.0.1, ::1 and localhost
                                                      (for --tls-cert/--tls-key) and print how clients trust it
  sluice demo [--requests N] [--limit 30/10s] [--concurrency N] [--redis URL] [--keep] [--port N]
                                                      see Sluice shape a CI burst to an emulated API, offline
  sluice --help | --version

Route options (quick start; each also reads SLUICE_<NAME>, e.g. SLUICE_MAX_WAIT):
  --preset NAME           route defaults for a known API; flags override them. Presets:
                          ${presetNames().join(', ')}
  --upstream URL          the API to forward to (http:// or https://)
  --limit N/UNIT          the budget: 180/min, 20/s, 5000/h, 30/10s
  --algorithm NAME        token-bucket (default) or sliding-window
  --burst N               token-bucket: requests an idle bucket starts at once (default 1)
  --max-wait DURATION     longest a request waits for its slot (default 60s), e.g. 500ms, 30s, 2m
  --max-queue N           most requests waiting per bucket in this instance (default 1000)
  --key instance|header:NAME  one budget for the upstream (default) or one per header value
  --margin DURATION       most safety margin added to the window, adapted to the path (default 1% of it, at least 100ms; "DURATION fixed": never adapted)
  --prefix PATH           mount path (default /)
  --name NAME             route name in headers, logs and keys (default "default")
  --profile NAME          generic, testrail, testmo, zulip or github (error formats)
  --errors envelope|upstream  upstream: pass upstream error bodies through untouched (default envelope)
  --timeout DURATION      wait for upstream response headers (default 30s)
  --connect-timeout DURATION  wait for the connection to the upstream (default 10s)
  --body-timeout DURATION longest silence between chunks of an upstream response body; then it is cut (default 30s)
  --body-limit BYTES      largest request body (default 10485760)
  --min-pause DURATION    shortest pause after upstream pushback (default 1s)
  --max-pause DURATION    longest pause after upstream pushback or an announced reset (default 15m)
  --retries N             retries of a transient failure (refused, reset, 502, 503, 504) (default 2)
  --retry-methods LIST    methods retried besides GET, HEAD, PUT, DELETE, OPTIONS, e.g. POST (default none)
  --retry-body-limit BYTES  bodies up to this size are kept to be sent again (default 1048576)
  --mode enforce|shadow   shadow: measure what would be delayed or refused, delay nothing (default enforce)
  --on-store-error local|open|closed  while Redis is unreachable: this instance's share of the budget,
                          unshaped, or 503 (default local)
  --concurrency N         most requests of a bucket in flight at the upstream, across instances (default 0: no cap)
  --client header:NAME    who is a client for fair share (default header:x-sluice-client, then the
                          credential, then the address); cost rules and weights are set in the config file
  --priority high|normal|low  priority of requests without X-Sluice-Priority (default normal)

Process options (override the config file):
  --host HOST             listen address (default 127.0.0.1)
  --port N                listen port (default 8080)
  --redis URL             redis://HOST:PORT, rediss://…, redis+cluster://H:P[,H:P…] or
                          redis+sentinel://H:P[,H:P…]/MASTER: share the budget (also REDIS_URL)
  --key-prefix PREFIX     Redis key prefix (default "sluice:")
  --hash-secret SECRET    HMAC secret for credential-derived bucket keys (share it within a team)
  --log-level LEVEL       fatal, error, warn, info (default), debug, trace, silent
  --drain-timeout DURATION  on SIGTERM/SIGINT, how long requests in flight or waiting may still
                          proceed before the rest are answered 503 (default 30s)
  --pid-file FILE         write the process id there, for sluice reload (SIGHUP re-reads the config)
  --admin-routes all|essential  essential: only /_sluice/health and /_sluice/ready (default all)
  --egress-proxy URL|none  the proxy upstream connections go through (CONNECT for https); wins over
                          HTTPS_PROXY/HTTP_PROXY (also read); NO_PROXY still applies; none: ignore them
  --admin-token TOKEN     status, metrics, events and the dashboard need it (Authorization: Bearer TOKEN);
                          health and ready stay open (also SLUICE_ADMIN_TOKEN)
  --tls-cert FILE --tls-key FILE  listen with HTTPS (HTTP/1.1 over TLS), admin routes included; PEM files,
                          e.g. from sluice cert DIR (config file: tls: {cert, key})

Examples:
  sluice --upstream https://acme.testrail.io --limit 180/min
  sluice --preset testrail-professional --upstream https://acme.testrail.io
  sluice --preset github --redis rediss://:PASSWORD@redis.example.com:6380 --hash-secret $SECRET
  SLUICE_PRESET=zulip SLUICE_UPSTREAM=https://acme.zulipchat.com sluice --host 0.0.0.0
  sluice check-config config/sluice.example.yaml
  sluice --upstream https://api.github.com --limit 5000/h --key header:authorization --redis redis://127.0.0.1:6379
  sluice --config config/sluice.example.yaml --redis redis://redis:6379 --host 0.0.0.0
`

function version (): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }
  return pkg.version
}

export function describeConfig (config: SluiceConfig): string {
  const lines = [`store: ${config.redis === undefined ? 'memory (this process only)' : `redis (${maskRedisUrl(config.redis)}, key prefix "${config.keyPrefix}")`}`,
    `listen: ${config.tls === undefined ? 'http' : 'https'}://${config.host}:${config.port}${config.tls === undefined ? '' : ` (tls cert ${config.tls.cert}, key ${config.tls.key})`}`,
    `egress: ${describeEgress(config.egress)}`,
    `admin: routes ${config.adminRoutes ?? 'all'}, ${config.adminToken === undefined ? 'no token (open to whoever reaches the port)' : 'token required (not shown)'}`]
  for (const r of config.routes) {
    const shape = r.algorithm === 'token-bucket' ? `token-bucket burst ${r.burst}` : 'sliding-window'
    const limit = r.limitAuto ? `auto (from ${formatRate(r.limit)})` : formatRate(r.limit)
    lines.push(`route ${r.name}: ${r.prefix} -> ${r.upstream}  ${limit} (${shape}, margin ${r.marginMs}ms), maxWait ${r.maxWaitMs}ms, maxQueue ${r.maxQueue}, key ${r.key.kind === 'instance' ? 'instance' : `header:${r.key.header}`}, profile ${r.profile}`)
    const retried = ['GET, HEAD, PUT, DELETE, OPTIONS', ...r.retryMethods].join(', ')
    lines.push(`  upstream: timeout ${r.timeoutMs}ms, connectTimeout ${r.connectTimeoutMs}ms, retries ${r.retries} (${retried}), bodyLimit ${r.bodyLimit}, retryBodyLimit ${r.retryBodyLimit}, pauses ${r.minPauseMs}-${r.maxPauseMs}ms, errors ${r.errors}, bodyTimeout ${r.bodyTimeoutMs}ms`)
    const costs = r.cost.length === 0 ? '1 each' : r.cost.map((c) => `${c.method ?? '*'} ${c.path} = ${c.cost}`).join('; ')
    // Weights are keyed by client header values: counted, not printed.
    lines.push(`  shaping: mode ${r.mode}, onStoreError ${r.onStoreError}, concurrency ${r.concurrency === 0 ? 'no cap' : r.concurrency}, client header:${r.client.header}, priority ${r.priority}, cost ${costs}, weights ${Object.keys(r.weights).length}`)
  }
  return lines.join('\n')
}

async function serve (argv: string[]): Promise<void> {
  const config = loadConfig(argv, process.env)
  const logger = createLogger(config.logLevel)
  const sluice = await createSluice(config, { logger })
  const address = await sluice.listen()
  // The store's URL with its password masked, so an operator sees which Redis (and prefix) the team shares.
  const shared = config.redis === undefined ? {} : { redis: maskRedisUrl(config.redis), keyPrefix: config.keyPrefix }
  logger.info({ address, store: sluice.store.kind, ...shared, egress: describeEgress(config.egress), routes: config.routes.map((r) => ({ name: r.name, prefix: r.prefix, limit: formatRate(r.limit) })) }, `sluice listening on ${address}`)
  reloadOnHangup(sluice, argv, logger)
  const exposed = exposedAdminWarning(config)
  if (exposed !== undefined) logger.warn(exposed)
  // The first SIGTERM/SIGINT drains (up to --drain-timeout); a second one cuts the drain short: what
  // still waits is answered 503 SHUTTING_DOWN at once.
  let hurry: (() => void) | undefined
  const stop = (signal: string): void => {
    if (hurry !== undefined) {
      logger.warn({ signal }, 'second signal: ending the drain now')
      hurry()
      return
    }
    logger.info({ signal, drainTimeoutMs: config.drainTimeoutMs }, 'shutting down')
    sluice.shutdown(new Promise<void>((resolve) => { hurry = resolve })).then((result) => {
      logger.info(result, 'shut down')
      process.exit(0)
    }, (err: unknown) => {
      logger.error({ err }, 'error while shutting down')
      process.exit(1)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === '--help' || command === '-h' || command === 'help' || argv.includes('--help')) {
    process.stdout.write(HELP)
    return 0
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`${version()}\n`)
    return 0
  }
  if (command === 'demo') {
    // Exit status 1 when anything failed through Sluice: the demo doubles as an end-to-end check.
    const summary = await runDemo(parseDemoArgs(rest), process.stdout)
    return summary.ok ? 0 : 1
  }
  if (command === 'cert') {
    // Loaded here only: the certificate library is not needed to serve.
    const { runCert } = await import('./cert/cert-command')
    return await runCert(rest, (s) => process.stdout.write(s))
  }
  if (command === 'status') {
    const stop = new AbortController()
    process.once('SIGINT', () => stop.abort())
    return await runStatus(rest, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), tty: process.stdout.isTTY === true }, process.env, stop.signal)
  }
  if (command === 'reload') {
    try {
      return sendReload(rest, process.env)
    } catch (err) {
      process.stderr.write(`sluice: reload: ${(err as Error).message}\n`)
      return 2
    }
  }
  if (command === 'check-config') {
    if (rest[0] === undefined) throw new ConfigError('check-config', 'expected a config file: sluice check-config FILE')
    const config = loadConfig(['--config', rest[0], ...rest.slice(1)], process.env)
    process.stdout.write(`${describeConfig(config)}\nconfig OK\n`)
    return 0
  }
  await serve(argv)
  return -1
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    if (code >= 0) process.exit(code)
  }, (err: unknown) => {
    if (err instanceof ConfigError) {
      process.stderr.write(`sluice: ${err.message}\n`)
      process.exit(2)
    }
    const e = err as NodeJS.ErrnoException
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
      process.stderr.write(`sluice: config error: port: cannot listen (${e.code}): ${e.message}\n`)
      process.exit(2)
    }
    process.stderr.write(`sluice: ${e.stack ?? String(err)}\n`)
    process.exit(1)
  })
}
