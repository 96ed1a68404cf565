// Secrets never reach a log line: credential headers are dropped by pino's redaction and
// credential-looking query parameters are masked in every URL we log (src/secrets.ts says which).
import { CREDENTIAL_HEADERS, isSecretName } from '../secrets'

export { redactUrl } from '../secrets'

/** True when a query parameter's name says its value is a credential. */
export const isSecretParam = isSecretName

/** Header paths pino removes from any logged object: the request's credentials, and cookies set either way. */
export const REDACT_PATHS = [
  ...[...CREDENTIAL_HEADERS, 'set-cookie'].flatMap((name) => [`req.headers["${name}"]`, `headers["${name}"]`]),
  'res.headers["set-cookie"]'
]
