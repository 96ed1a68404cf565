// Who a request is for fair share: the route's client header (default X-Sluice-Client, e.g. a CI
// job id), else its credential, else the remote address. Every identity is HMAC-hashed here, before
// it reaches Redis, logs, metrics or an error body; the source is part of the hashed value, so a
// header value can never collide with a credential.
import type { Priority, RouteConfig } from '../config/schema'
import { PRIORITIES } from '../config/schema'
import { SluiceError } from '../errors'
import { credentialOf, hashIdentity } from './bucket-key'

export const PRIORITY_HEADER = 'x-sluice-priority'

export type ClientSourceKind = 'header' | 'credential' | 'address'

export interface ClientIdentity {
  /** HMAC of the source and value: safe to log and to store. */
  id: string
  source: ClientSourceKind
}

type Headers = Record<string, string | string[] | undefined>

function single (raw: string | string[] | undefined): string | undefined {
  const value = Array.isArray(raw) ? raw.join(',') : raw
  return value === undefined || value.trim() === '' ? undefined : value.trim()
}

export function clientFor (route: RouteConfig, headers: Headers, remoteAddress: string | undefined, secret: string): ClientIdentity {
  const named = single(headers[route.client.header])
  if (named !== undefined) return { id: clientId(secret, named), source: 'header' }
  const credential = single(headers.authorization)
  if (credential !== undefined) return { id: hashIdentity(secret, `credential:${credentialOf(credential)}`), source: 'credential' }
  return { id: hashIdentity(secret, `address:${remoteAddress ?? 'unknown'}`), source: 'address' }
}

/** The hashed id of a client named in the client header (and in `weights:`). */
export function clientId (secret: string, name: string): string {
  return hashIdentity(secret, `client:${name}`)
}

/** The request's priority: X-Sluice-Priority, else the route's default; anything else is a 400. */
export function priorityFor (route: RouteConfig, headers: Headers): Priority {
  const given = single(headers[PRIORITY_HEADER])
  if (given === undefined) return route.priority
  const p = given.toLowerCase()
  if ((PRIORITIES as readonly string[]).includes(p)) return p as Priority
  throw new SluiceError('BAD_REQUEST', 400, `X-Sluice-Priority must be one of ${PRIORITIES.join(', ')}`,
    { upstream: route.name, header: PRIORITY_HEADER, received: given.slice(0, 32) })
}

/** Weights keyed by hashed client id, from the route's `weights:` keyed by client name. */
export function hashedWeights (route: RouteConfig, secret: string): Map<string, number> {
  return new Map(Object.entries(route.weights).map(([name, w]) => [clientId(secret, name), w]))
}
