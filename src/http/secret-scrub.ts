// The last line of defence for envelopes: an upstream may quote a request's credentials back in its
// error body (free text that no pattern recognizes), so every error response Sluice sends is
// scrubbed of the very values this request carried as credentials.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RouteConfig } from '../config/schema'
import { CREDENTIAL_HEADERS, decodeOr, isSecretName, scrub } from '../secrets'

export { scrub } from '../secrets'

/** Shorter values are left alone: replacing "1" everywhere would mangle the envelope, not protect anything. */
const MIN_SECRET_CHARS = 6

/** The credential values a request carries (whole headers, their parts, secret query parameters). */
export function requestSecrets (request: FastifyRequest, extraHeaders: string[] = []): string[] {
  const found = new Set<string>()
  const add = (v: string | undefined): void => {
    const s = v?.trim()
    if (s !== undefined && s.length >= MIN_SECRET_CHARS) found.add(s)
  }
  for (const name of [...CREDENTIAL_HEADERS, ...extraHeaders]) {
    const raw = request.headers[name]
    for (const value of Array.isArray(raw) ? raw : [raw]) {
      if (value === undefined) continue
      add(value)
      // "Bearer abc", "Basic abc": the credential alone; cookies: each value.
      for (const part of value.split(/[\s;,]+/)) {
        add(part)
        const eq = part.indexOf('=')
        if (eq > 0) add(part.slice(eq + 1))
      }
    }
  }
  const url = request.raw.url ?? ''
  const q = url.indexOf('?')
  if (q >= 0) {
    for (const pair of url.slice(q + 1).split('&')) {
      const eq = pair.indexOf('=')
      if (eq < 0) continue
      if (!isSecretName(decodeOr(pair.slice(0, eq)))) continue
      const value = pair.slice(eq + 1)
      add(value)
      try { add(decodeURIComponent(value.replace(/\+/g, ' '))) } catch {}
    }
  }
  // Longest first, so a whole value is replaced before a part of it.
  return [...found].sort((a, b) => b.length - a.length)
}

/** For the onSend hook: error responses with a text body leave without the request's credentials. */
export function secretScrubber (routes: RouteConfig[]) {
  const keyHeaders = routes.flatMap((r) => r.key.kind === 'header' ? [r.key.header] : [])
  return function scrubPayload (request: FastifyRequest, reply: FastifyReply, payload: unknown): unknown {
    if (reply.statusCode < 400 || (typeof payload !== 'string' && !Buffer.isBuffer(payload))) return payload
    const secrets = requestSecrets(request, keyHeaders)
    if (secrets.length === 0) return payload
    const text = typeof payload === 'string' ? payload : payload.toString('utf8')
    const clean = scrub(text, secrets)
    return clean === text ? payload : clean
  }
}
