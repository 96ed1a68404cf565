// The `redis` setting: which Redis deployment the shared store talks to, read from one URL.
//   redis://[user:password@]host:port[/db]             one server; a cluster node is detected at connect
//   redis+cluster://[user:password@]host:port[,host:port…]   Redis Cluster, from these seed nodes
//   redis+sentinel://[user:password@]host:port[,host:port…]/MASTER_NAME   a Sentinel-guarded primary
// `rediss…` is the same over TLS. The credentials are the data nodes' (AUTH); Sentinels that require
// their own take `?sentinelPassword=…` (and `sentinelUsername`).
import { ConfigError } from '../errors'
import { isSecretName } from '../secrets'

export interface HostPort {
  host: string
  port: number
}

interface Credentials {
  username: string | undefined
  password: string | undefined
  tls: boolean
}

export type RedisTopology =
  | { kind: 'single', url: string, tls: boolean }
  | ({ kind: 'cluster', nodes: HostPort[] } & Credentials)
  | ({ kind: 'sentinel', sentinels: HostPort[], name: string, db: number, sentinelUsername: string | undefined, sentinelPassword: string | undefined } & Credentials)

const DEFAULT_PORT = 6379
const DEFAULT_SENTINEL_PORT = 26379
const FORM = /^(rediss?)(\+cluster|\+sentinel)?:\/\/(?:([^@/]*)@)?([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/
const EXPECTED = 'expected a redis:// or rediss:// URL: redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT…] or redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER_NAME'

/** Parse and check the `redis` setting; errors name the field and never repeat a password. */
export function parseRedisUrl (raw: string, field = 'redis'): RedisTopology {
  try {
    return parse(raw)
  } catch (err) {
    if (err instanceof ConfigError && field !== err.field) throw new ConfigError(field, err.message.slice(`config error: ${err.field}: `.length))
    throw err
  }
}

function parse (raw: string): RedisTopology {
  const m = FORM.exec(raw.trim())
  if (m === null) throw new ConfigError('redis', `${EXPECTED}, got ${JSON.stringify(maskRedisUrl(raw))}`)
  const [, scheme, variant = '', userinfo, hostList, path = '', query = ''] = m
  const tls = scheme === 'rediss'
  const { username, password } = credentials(userinfo)
  const params = new URLSearchParams(query)
  if (variant === '') {
    if (hostList.includes(',')) throw new ConfigError('redis', `several hosts need redis+cluster:// or redis+sentinel://, got ${JSON.stringify(maskRedisUrl(raw))}`)
    hosts(hostList, DEFAULT_PORT)
    database(path)
    return { kind: 'single', url: raw.trim(), tls }
  }
  if (variant === '+cluster') {
    if (database(path) !== 0) throw new ConfigError('redis', 'Redis Cluster has only database 0; remove the /DB part of the URL')
    return { kind: 'cluster', nodes: hosts(hostList, DEFAULT_PORT), username, password, tls }
  }
  const [name, db = '0'] = decodeURIComponent(path).split('/')
  if (name === undefined || name === '') throw new ConfigError('redis', 'redis+sentinel:// needs the master name after the hosts: redis+sentinel://HOST:26379/mymaster')
  return {
    kind: 'sentinel',
    sentinels: hosts(hostList, DEFAULT_SENTINEL_PORT),
    name,
    db: database(db),
    username,
    password,
    tls,
    sentinelUsername: params.get('sentinelUsername') ?? undefined,
    sentinelPassword: params.get('sentinelPassword') ?? undefined
  }
}

/**
 * The one masking of a Redis URL, for logs, check-config and the demo: the userinfo's password (or a
 * password alone) and every query parameter whose name says it is a credential (sentinelPassword,
 * password…) become ***. Never throws, whatever the text.
 */
export function maskRedisUrl (raw: string): string {
  return raw
    // Up to the last @ before the query: a password with an unescaped / or @ is masked whole.
    .replace(/^([a-z+]+:\/\/)([^?#]*)@/i, (_all, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':')
      return colon === -1 ? `${scheme}***@` : `${scheme}${userinfo.slice(0, colon)}:***@`
    })
    .replace(/([?&])([^=&#]*)=([^&#]*)/g, (pair: string, sep: string, name: string) => isSecretName(safeDecode(name)) ? `${sep}${name}=***` : pair)
}

function safeDecode (text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

function credentials (userinfo: string | undefined): { username: string | undefined, password: string | undefined } {
  if (userinfo === undefined || userinfo === '') return { username: undefined, password: undefined }
  const colon = userinfo.indexOf(':')
  // redis://PASSWORD@host (no colon) is a password alone, as ioredis reads it.
  if (colon === -1) return { username: undefined, password: decodeURIComponent(userinfo) }
  const username = decodeURIComponent(userinfo.slice(0, colon))
  return { username: username === '' ? undefined : username, password: decodeURIComponent(userinfo.slice(colon + 1)) }
}

function hosts (list: string, defaultPort: number): HostPort[] {
  if (list === '') throw new ConfigError('redis', 'expected at least one HOST:PORT after ://')
  return list.split(',').map((item) => {
    const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d+))?$/i.exec(item.trim())
    if (m === null) throw new ConfigError('redis', `expected HOST:PORT, got ${JSON.stringify(item)}`)
    const port = m[2] === undefined ? defaultPort : Number(m[2])
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError('redis', `expected a port from 1 to 65535, got ${JSON.stringify(m[2])}`)
    return { host: m[1].replace(/^\[|\]$/g, ''), port }
  })
}

function database (path: string): number {
  if (path === '') return 0
  if (!/^\d+$/.test(path)) throw new ConfigError('redis', `expected a database number after the host, got ${JSON.stringify(path)}`)
  return Number(path)
}
