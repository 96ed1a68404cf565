// Access to the admin routes that show the budget (status, metrics, events, the dashboard) with an
// optional admin token. Health and ready stay open: probes carry no token. A request shows the token
// as `Authorization: Bearer <token>`, or, for the dashboard in a browser, once as `?token=`, which is
// exchanged for an HttpOnly SameSite=Strict cookie and a redirect that drops it from the address bar.
// The cookie holds an HMAC of the token, not the token. Every comparison is of two equal-length
// digests with timingSafeEqual: the time taken says nothing about how much of a guess was right.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { SluiceConfig } from '../config/schema'
import { SluiceError } from '../errors'

export const ADMIN_COOKIE = 'sluice_admin'
const COOKIE_LABEL = 'sluice admin cookie v1'

export function adminAuthRequired (): SluiceError {
  return new SluiceError('ADMIN_AUTH_REQUIRED', 401, 'this admin route needs the admin token: send "Authorization: Bearer <token>" (a browser may open /_sluice/?token=<token> once)')
}

export class AdminAuth {
  /** A per-process key, so the digests compared are of a fixed length and never of the token itself. */
  private readonly key = randomBytes(32)
  private readonly tokenDigest: Buffer
  private readonly cookieDigest: Buffer
  /** The cookie's value: the same on every instance of a team with the same token. */
  private readonly cookieValue: string

  constructor (token: string) {
    this.cookieValue = createHmac('sha256', token).update(COOKIE_LABEL).digest('base64url')
    this.tokenDigest = this.digest(token)
    this.cookieDigest = this.digest(this.cookieValue)
  }

  private digest (value: string): Buffer {
    return createHmac('sha256', this.key).update(value).digest()
  }

  private matches (given: string | undefined, expected: Buffer): boolean {
    return given !== undefined && timingSafeEqual(this.digest(given), expected)
  }

  /** The request carries the token (bearer) or the dashboard's cookie. */
  allows (request: FastifyRequest): boolean {
    const auth = request.headers.authorization
    const bearer = typeof auth === 'string' && /^bearer\s+/i.test(auth) ? auth.replace(/^bearer\s+/i, '').trim() : undefined
    return this.matches(bearer, this.tokenDigest) || this.matches(cookieOf(request.headers.cookie, ADMIN_COOKIE), this.cookieDigest)
  }

  /** fastify onRequest hook of a guarded route: refuses with 401 ADMIN_AUTH_REQUIRED. */
  readonly guard = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void): void => {
    if (this.allows(request)) {
      done()
      return
    }
    if (this.dashboardLogin(request, reply)) return
    reply.header('www-authenticate', 'Bearer realm="sluice"')
    done(adminAuthRequired())
  }

  /** The dashboard opened with the right ?token=: set the cookie and redirect without the query. */
  private dashboardLogin (request: FastifyRequest, reply: FastifyReply): boolean {
    const path = request.url.split('?')[0]
    if (path !== '/_sluice/' && path !== '/_sluice') return false
    const token = new URLSearchParams(request.url.slice(path.length + 1)).get('token') ?? undefined
    if (!this.matches(token, this.tokenDigest)) return false
    reply.header('set-cookie', `${ADMIN_COOKIE}=${this.cookieValue}; Path=/_sluice; HttpOnly; SameSite=Strict`)
    reply.header('cache-control', 'no-store').redirect('/_sluice/', 303)
    return true
  }
}

function cookieOf (header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)
}

/** The start-up warning when anyone who reaches the port can read the budget: undefined when none is due. */
export function exposedAdminWarning (config: SluiceConfig): string | undefined {
  if (config.adminToken !== undefined || config.adminRoutes === 'essential' || isLoopback(config.host)) return undefined
  return `listening on ${config.host} with adminRoutes: all and no adminToken: anyone who reaches this port can read /_sluice/status, /_sluice/metrics and the dashboard; set SLUICE_ADMIN_TOKEN (or --admin-token), or --admin-routes essential`
}
