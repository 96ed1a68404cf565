// Builds the effective config from, in rising precedence: defaults, a YAML file, SLUICE_* environment
// variables, command-line flags. Every problem becomes a ConfigError that names the field.
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { parse as parseYaml } from 'yaml'
import { resolveEgress } from './egress'
import { applyPreset } from './preset'
import { parseRedisUrl } from './redis-url'
import { ADMIN_ROUTE_SETS, DEFAULTS, type AdminRoutes, type RouteConfig, type SluiceConfig } from './schema'
import { checkRoutes, parseRoute } from './route'
import { tlsConfig } from './tls'
import { parseDuration } from './units'
import { ConfigError } from '../errors'

/** Flags of the quick start that describe the single route; each also reads SLUICE_<NAME>. */
const ROUTE_FLAGS = {
  upstream: 'upstream',
  limit: 'limit',
  burst: 'burst',
  'max-wait': 'maxWait',
  'max-queue': 'maxQueue',
  algorithm: 'algorithm',
  key: 'key',
  margin: 'margin',
  name: 'name',
  prefix: 'prefix',
  profile: 'profile',
  errors: 'errors',
  timeout: 'timeout',
  'body-limit': 'bodyLimit',
  mode: 'mode',
  'min-pause': 'minPause',
  'max-pause': 'maxPause',
  'retry-body-limit': 'retryBodyLimit',
  retries: 'retries',
  'retry-methods': 'retryMethods',
  'connect-timeout': 'connectTimeout',
  'body-timeout': 'bodyTimeout',
  'on-store-error': 'onStoreError',
  concurrency: 'concurrency',
  client: 'client',
  priority: 'priority'
} as const

/** Flags that apply to the whole process and override the config file. */
const GLOBAL_FLAGS = {
  host: 'host',
  port: 'port',
  redis: 'redis',
  'key-prefix': 'keyPrefix',
  'hash-secret': 'hashSecret',
  'log-level': 'logLevel',
  'drain-timeout': 'drainTimeout',
  'admin-routes': 'adminRoutes',
  'admin-token': 'adminToken',
  'egress-proxy': 'egressProxy',
  'pid-file': 'pidFile'
} as const

export const SERVE_OPTIONS = {
  config: { type: 'string' },
  preset: { type: 'string' },
  // The TLS listener (tls.ts): read together, over the file's `tls: {cert, key}`.
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  ...Object.fromEntries([...Object.keys(ROUTE_FLAGS), ...Object.keys(GLOBAL_FLAGS)].map((k) => [k, { type: 'string' }]))
} as const

export function envName (flag: string): string {
  return `SLUICE_${flag.toUpperCase().replace(/-/g, '_')}`
}

type Values = Record<string, string | boolean | undefined>

/** Parse serve flags; unknown flags and missing values become ConfigErrors. */
export function parseServeArgs (argv: string[]): Values {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: SERVE_OPTIONS as never, strict: true, allowPositionals: true })
    if (positionals.length > 0) throw new ConfigError('arguments', `unexpected argument ${JSON.stringify(positionals[0])}; see sluice --help`)
    return values as Values
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const message = (err as Error).message
    const flag = /'(--[a-z-]+)/.exec(message)?.[1] ?? 'arguments'
    throw new ConfigError(flag, message.replace(/\. To specify.*$/s, ''))
  }
}

function readFile (path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new ConfigError('--config', `${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`)
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError('--config', `${path} must hold a mapping with a "routes" list`)
  return doc as Record<string, unknown>
}

/** A route of a config file may name a preset: its fields fill in what the route leaves out. */
function withPreset (raw: unknown, field: string): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || !('preset' in raw)) return raw
  const { preset, ...own } = raw as Record<string, unknown>
  return applyPreset(preset, field, own)
}

const FILE_FIELDS = new Set(['host', 'port', 'redis', 'keyPrefix', 'hashSecret', 'logLevel', 'drainTimeout', 'adminRoutes', 'adminToken', 'egressProxy', 'tls', 'routes'])

function drainTimeoutMs (value: unknown): number {
  try {
    return parseDuration(value ?? DEFAULTS.drainTimeout)
  } catch (err) {
    throw new ConfigError('drainTimeout', (err as Error).message)
  }
}

function adminRoutes (value: unknown): AdminRoutes {
  const v = value ?? DEFAULTS.adminRoutes
  if (!(ADMIN_ROUTE_SETS as readonly unknown[]).includes(v)) throw new ConfigError('adminRoutes', `expected all (every admin route) or essential (health and ready only), got ${JSON.stringify(v)}`)
  return v as AdminRoutes
}

/** A token to guess needs length; whitespace and control characters would not survive a header. */
function adminToken (value: unknown): string | undefined {
  if (value === undefined || value === '') return undefined
  if (typeof value !== 'string' || !/^[\x21-\x7e]{16,256}$/.test(value)) throw new ConfigError('adminToken', 'expected 16 to 256 printable characters without spaces (e.g. openssl rand -hex 24); the value is not shown')
  return value
}

/** `{ [key]: value }`, or nothing when the value is unset: optional fields stay absent. */
function optional<K extends string, V> (key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : { [key]: value } as Record<K, V>
}

type Pick = (flag: string) => string | undefined

/** The routes of a config file; the quick-start route's flags cannot be combined with one. */
function fileRoutes (configPath: string, file: Record<string, unknown>, pick: Pick): RouteConfig[] {
  const stray = Object.keys(ROUTE_FLAGS).find((flag) => pick(flag) !== undefined)
  if (stray !== undefined) {
    throw new ConfigError(`--${stray}`, `describes the single quick-start route and cannot be combined with --config; set it on a route in ${configPath} (or unset ${envName(stray)})`)
  }
  if (pick('preset') !== undefined) {
    throw new ConfigError('--preset', `describes the single quick-start route and cannot be combined with --config; write "preset: ${String(pick('preset'))}" on a route in ${configPath} (or unset ${envName('preset')})`)
  }
  if (!Array.isArray(file.routes)) throw new ConfigError('routes', `expected a list of routes in ${configPath}, got ${JSON.stringify(file.routes) ?? 'nothing'}`)
  return file.routes.map((r, i) => parseRoute(withPreset(r, `routes[${i}].preset`), `routes[${i}]`))
}

/** The single route of the quick start, from flags and variables (and a preset). */
function quickStartRoute (pick: Pick): RouteConfig[] {
  const routeFromFlags: Record<string, unknown> = {}
  for (const [flag, key] of Object.entries(ROUTE_FLAGS)) {
    const v = pick(flag)
    if (v !== undefined) routeFromFlags[key] = v
  }
  const preset = pick('preset')
  if (preset !== undefined) Object.assign(routeFromFlags, applyPreset(preset, '--preset', routeFromFlags))
  if (routeFromFlags.upstream === undefined) throw new ConfigError('--upstream', 'is required (or --config FILE); e.g. sluice --upstream https://acme.testrail.io --limit 180/min')
  if (routeFromFlags.limit === undefined) throw new ConfigError('--limit', 'is required, e.g. --limit 180/min')
  try {
    return [parseRoute(routeFromFlags, 'route')]
  } catch (err) {
    // Name the flag the user typed, not the internal field.
    if (!(err instanceof ConfigError)) throw err
    const key = err.field.replace(/^route\./, '')
    // An item of a list flag (`--limit 5000/h,900/min` → route.limit[1]) is named by its flag and place.
    const item = /^([A-Za-z]+)(\[\d+\])/.exec(key)
    const flag = Object.entries(ROUTE_FLAGS).find(([, k]) => k === (item?.[1] ?? key))?.[0]
    if (flag === undefined) throw err
    throw new ConfigError(`--${flag}`, `${item === null ? '' : `item ${Number(item[2].slice(1, -1)) + 1}: `}${err.message.replace(/^config error: [^:]+: /, '')}`)
  }
}

export function loadConfig (argv: string[], env: NodeJS.ProcessEnv): SluiceConfig {
  const flags = parseServeArgs(argv)
  // A flag wins over its environment variable.
  const pick: Pick = (flag) => {
    const v = flags[flag]
    if (typeof v === 'string') return v
    // An empty variable counts as unset: compose files and manifests write `SLUICE_LIMIT: ${SLUICE_LIMIT:-}`.
    const e = env[envName(flag)]
    return e === '' ? undefined : e
  }
  const configPath = pick('config')
  const file = configPath === undefined ? {} : readFile(configPath)
  for (const key of Object.keys(file)) {
    if (!FILE_FIELDS.has(key)) throw new ConfigError(key, `unknown top-level field in ${configPath}; known fields are ${[...FILE_FIELDS].join(', ')}`)
  }

  const global: Record<string, unknown> = { ...file }
  for (const [flag, key] of Object.entries(GLOBAL_FLAGS)) {
    const v = pick(flag)
    if (v !== undefined) global[key] = v
  }
  if (global.redis === undefined && env.REDIS_URL !== undefined && env.REDIS_URL !== '') global.redis = env.REDIS_URL

  const routes = configPath === undefined ? quickStartRoute(pick) : fileRoutes(configPath, file, pick)
  checkRoutes(routes)

  const port = Number(global.port ?? DEFAULTS.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('port', `expected an integer from 0 to 65535, got ${JSON.stringify(global.port)}`)
  const host = String(global.host ?? DEFAULTS.host)
  let redis: string | undefined
  if (global.redis !== undefined && global.redis !== '') {
    redis = String(global.redis)
    // One server, a cluster or Sentinels (redis-url.ts); the store connects to what it names.
    parseRedisUrl(redis)
  }
  const keyPrefix = String(global.keyPrefix ?? DEFAULTS.keyPrefix)
  if (!/^[A-Za-z0-9:_.{}-]{0,64}$/.test(keyPrefix)) throw new ConfigError('keyPrefix', `expected up to 64 letters, digits or ":_.-{}", got ${JSON.stringify(keyPrefix)}`)
  const logLevel = String(global.logLevel ?? DEFAULTS.logLevel)
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) throw new ConfigError('logLevel', `expected fatal, error, warn, info, debug, trace or silent, got ${JSON.stringify(logLevel)}`)
  return {
    host,
    port,
    redis,
    keyPrefix,
    hashSecret: String(global.hashSecret ?? DEFAULTS.hashSecret),
    logLevel,
    drainTimeoutMs: drainTimeoutMs(global.drainTimeout),
    adminRoutes: adminRoutes(global.adminRoutes),
    tls: tlsConfig(file.tls, pick('tls-cert'), pick('tls-key')),
    ...optional('adminToken', adminToken(global.adminToken)),
    ...optional('egress', resolveEgress(global.egressProxy, env)),
    ...optional('pidFile', pick('pid-file')),
    routes
  }
}
