// Secrets never reach a log line: credential headers are dropped by pino's redaction and
// credential-looking query parameters are masked in every URL we log.

// A parameter is secret when one of the words of its name is: access_token, private_token (GitLab),
// refresh_token, X-Amz-Signature, X-Amz-Credential, apiKey, oauth_token, client_secret, jwt, session…
const SECRET_WORDS = new Set(['key', 'apikey', 'token', 'auth', 'password', 'passwd', 'pwd', 'secret', 'signature', 'sig',
  'credential', 'credentials', 'jwt', 'session', 'sessionid', 'sid'])

/** True when a query parameter's name says its value is a credential. */
export function isSecretParam (name: string): boolean {
  if (name.length > 128) return false
  // camelCase splits too: apiKey → api Key, accessToken → access Token.
  const words = name.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase().split(/[^a-z0-9]+/)
  return words.some((word) => SECRET_WORDS.has(word))
}

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
    return eq >= 0 && isSecretParam(decoded) ? `${name}=[REDACTED]` : pair
  })
  return `${url.slice(0, q)}?${parts.join('&')}`
}
