// Which bucket a request draws on. Credentials (key: header:<name>) are turned into an HMAC before
// they go anywhere (Redis keys, logs, status), so a key never reveals the secret it came from.
import { createHmac } from 'node:crypto'
import type { RouteConfig } from '../config/schema'

/** Identities seen recently, so a busy client is not hashed again on every request. */
const recent = new Map<string, string>()
const RECENT_MAX = 4096

export function hashIdentity (secret: string, value: string): string {
  const cacheKey = `${secret}\u0000${value}`
  const known = recent.get(cacheKey)
  if (known !== undefined) return known
  const hash = createHmac('sha256', secret).update(value).digest('base64url').slice(0, 22)
  // Bounded: forget everything at once rather than keep an LRU order on the hot path.
  if (recent.size >= RECENT_MAX) recent.clear()
  recent.set(cacheKey, hash)
  return hash
}

// "<scheme> <credentials>": the scheme is case-insensitive and the space may be several (RFC 9110 11.4).
const AUTH_SCHEME = /^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*[ \t]+(?=\S)/

/**
 * The credential an Authorization value carries, without its scheme: `token X`, `Bearer X` and
 * `bearer  X` are one token to GitHub (and to any API: the same secret), so they share one budget.
 */
export function credentialOf (value: string): string {
  const trimmed = value.trim()
  const scheme = AUTH_SCHEME.exec(trimmed)
  return scheme === null ? trimmed : trimmed.slice(scheme[0].length)
}

/** The bucket name for a request; undefined when the keyed header is missing. */
export function bucketFor (route: RouteConfig, headers: Record<string, string | string[] | undefined>, secret: string): string | undefined {
  if (route.key.kind === 'instance') return route.name
  const raw = headers[route.key.header]
  let value = Array.isArray(raw) ? raw.join(',') : raw
  if (value === undefined || value.trim() === '') return undefined
  if (route.key.header === 'authorization') value = credentialOf(value)
  return `${route.name}:${hashIdentity(secret, value)}`
}
