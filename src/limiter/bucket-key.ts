// Which bucket a request draws on. Credentials (key: header:<name>) are turned into an HMAC before
// they go anywhere (Redis keys, logs, status), so a key never reveals the secret it came from.
import { createHmac } from 'node:crypto'
import type { RouteConfig } from '../config/schema'

export function hashIdentity (secret: string, value: string): string {
  return createHmac('sha256', secret).update(value).digest('base64url').slice(0, 22)
}

/** The bucket name for a request; undefined when the keyed header is missing. */
export function bucketFor (route: RouteConfig, headers: Record<string, string | string[] | undefined>, secret: string): string | undefined {
  if (route.key.kind === 'instance') return route.name
  const raw = headers[route.key.header]
  const value = Array.isArray(raw) ? raw.join(',') : raw
  if (value === undefined || value === '') return undefined
  return `${route.name}:${hashIdentity(secret, value)}`
}
