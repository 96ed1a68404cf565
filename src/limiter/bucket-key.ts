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

/** The bucket name for a request; undefined when the keyed header is missing. */
export function bucketFor (route: RouteConfig, headers: Record<string, string | string[] | undefined>, secret: string): string | undefined {
  if (route.key.kind === 'instance') return route.name
  const raw = headers[route.key.header]
  const value = Array.isArray(raw) ? raw.join(',') : raw
  if (value === undefined || value === '') return undefined
  return `${route.name}:${hashIdentity(secret, value)}`
}
