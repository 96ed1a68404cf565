// What counts as a credential, and how it is masked, for every place Sluice writes text someone else
// reads: log lines (URLs, headers), error envelopes (upstream bodies and messages) and the last-line
// scrub of error responses. One list of names, one list of headers, one marker.

/** What a masked credential is replaced by, everywhere. */
export const REDACTED = '[redacted]'

/**
 * Words that make a name (a query parameter, a JSON field, `name=value` in free text) a credential's:
 * access_token, private_token (GitLab), X-Amz-Signature, apiKey, oauth_token, client_secret, jwt…
 * Words of MIN_EMBEDDED_CHARS letters or more also count inside a longer word (csrftoken,
 * userPassword); shorter ones only as a whole word, since they are parts of ordinary ones (keyword,
 * author, sidebar), except SUFFIX_WORDS, which also count at the end of a word (userpass, dbpwd).
 */
const CREDENTIAL_WORDS = ['key', 'apikey', 'token', 'auth', 'authorization', 'password', 'passwd', 'pwd', 'pass',
  'secret', 'signature', 'sig', 'credential', 'credentials', 'jwt', 'session', 'sessionid', 'sid', 'cookie']
const MIN_EMBEDDED_CHARS = 5
const WHOLE_WORDS = new Set(CREDENTIAL_WORDS)
const EMBEDDED_WORDS = CREDENTIAL_WORDS.filter((word) => word.length >= MIN_EMBEDDED_CHARS)
const SUFFIX_WORDS = ['pass', 'pwd']

/** Request headers that carry credentials, lower case. */
export const CREDENTIAL_HEADERS: readonly string[] = ['authorization', 'proxy-authorization', 'cookie', 'x-api-key', 'api-key',
  'x-auth-token', 'private-token', 'x-access-token']

/** True when a name (query parameter, JSON field) says its value is a credential. */
export function isSecretName (name: string): boolean {
  if (name.length > 128) return false
  // camelCase splits too: apiKey → api Key, accessToken → access Token.
  const words = name.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase().split(/[^a-z0-9]+/)
  return words.some((word) => WHOLE_WORDS.has(word) || EMBEDDED_WORDS.some((secret) => word.includes(secret)) || SUFFIX_WORDS.some((secret) => word.endsWith(secret)))
}

// Credentials in free text: an upstream that echoes a token back in its error message.
const AUTH_SCHEME = /\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}/gi
const NAME_VALUE = /(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{1,64})(["']?\s*[:=]\s*["']?)[^\s"'&,;]{4,}/g
const URL_PASSWORD = /(\/\/[^/\s:@]{1,64}:)[^/\s@]{1,128}@/g // https://user:password@host

/** `text` with token-like values masked: auth schemes, `secret-name: value`, passwords in URLs. */
export function redactText (text: string): string {
  return text
    .replace(AUTH_SCHEME, `$1 ${REDACTED}`)
    .replace(NAME_VALUE, (match: string, name: string, separator: string) => isSecretName(name) ? `${name}${separator}${REDACTED}` : match)
    .replace(URL_PASSWORD, `$1${REDACTED}@`)
}

/** The URL with the values of secret-looking query parameters masked. Never throws. */
export function redactUrl (url: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const parts = url.slice(q + 1).split('&').map((pair) => {
    const eq = pair.indexOf('=')
    const name = eq < 0 ? pair : pair.slice(0, eq)
    return eq >= 0 && isSecretName(decodeOr(name)) ? `${name}=${REDACTED}` : pair
  })
  return `${url.slice(0, q)}?${parts.join('&')}`
}

/** `text` with every occurrence of each secret (as is and as escaped inside a JSON string) masked. */
export function scrub (text: string, secrets: string[]): string {
  let out = text
  for (const secret of secrets) {
    for (const form of new Set([secret, JSON.stringify(secret).slice(1, -1)])) {
      if (out.includes(form)) out = out.split(form).join(REDACTED)
    }
  }
  return out
}

/** decodeURIComponent, or the input as it is when it is not valid percent-encoding. */
export function decodeOr (text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}
