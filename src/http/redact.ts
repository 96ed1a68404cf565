// Secrets never reach a log line: credential headers are dropped by pino's redaction and
// credential-looking query parameters are masked in every URL we log.

export const SECRET_QUERY_PARAMS = /^(key|api[_-]?key|token|access[_-]?token|auth|password|passwd|secret|signature|sig|client[_-]?secret)$/i

/** Header paths pino removes from any logged object. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers.cookie',
  'req.headers["set-cookie"]',
  'req.headers["x-api-key"]',
  'req.headers["x-auth-token"]',
  'req.headers["private-token"]',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]'
]

/** The URL with the values of secret-looking query parameters replaced. Never throws. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const parts = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=')
    const name = eq < 0 ? pair : pair.slice(0, eq)
    let decoded = name
    try {
      decoded = decodeURIComponent(name)
    } catch {}
    return eq >= 0 && SECRET_QUERY_PARAMS.test(decoded) ? `${name}=[REDACTED]` : pair
  })
  return `${url.slice(0, q)}?${parts.join('&')}`
}
