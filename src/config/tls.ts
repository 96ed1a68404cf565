// The TLS listener's certificate and key: read and checked at start-up, so a bad, expired or
// mismatched pair stops Sluice with exit status 2 and the field named, not at the first handshake.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors'

/** `tls: {cert, key}` of the config (--tls-cert, --tls-key): paths of PEM files. */
export interface TlsFiles {
  cert: string
  key: string
}

/** What the https listener is given. The key never reaches a log line or an error message. */
export interface TlsMaterial {
  cert: Buffer
  key: Buffer
  /** The certificate's end of validity, for the start-up line. */
  validTo: Date
  /** Its subject alternative names, e.g. "IP Address:127.0.0.1, DNS:localhost". */
  names: string
}

/** `tls` of the config: both paths or neither (field names as the YAML spells them). */
export function parseTlsFiles (value: unknown): TlsFiles | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('tls', 'expected a mapping {cert: FILE, key: FILE} of PEM files')
  const { cert, key, ...rest } = value as Record<string, unknown>
  const stray = Object.keys(rest)[0]
  if (stray !== undefined) throw new ConfigError(`tls.${stray}`, 'unknown field; known fields are cert, key')
  if (cert === undefined && key === undefined) return undefined
  for (const [name, v] of [['cert', cert], ['key', key]] as const) {
    if (typeof v !== 'string' || v === '') throw new ConfigError(`tls.${name}`, `${v === undefined ? 'is required with' : 'expected the path of a PEM file, beside'} tls.${name === 'cert' ? 'key' : 'cert'} (--tls-cert and --tls-key go together)`)
  }
  return { cert: cert as string, key: key as string }
}

function read (field: string, path: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new ConfigError(field, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

/** Reads and checks the pair: PEM that parses, a certificate valid now, a key that belongs to it. */
export function loadTls (files: TlsFiles, nowMs = Date.now()): TlsMaterial {
  const cert = read('tls.cert', files.cert)
  const key = read('tls.key', files.key)
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch {
    throw new ConfigError('tls.cert', `${files.cert} is not a PEM certificate`)
  }
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(key)
  } catch {
    // Never echo the key file's content.
    throw new ConfigError('tls.key', `${files.key} is not an unencrypted PEM private key`)
  }
  const validFrom = new Date(x509.validFrom)
  const validTo = new Date(x509.validTo)
  if (validTo.getTime() <= nowMs) throw new ConfigError('tls.cert', `${files.cert} expired on ${validTo.toISOString()}; make a new one with: sluice cert DIR`)
  if (validFrom.getTime() > nowMs) throw new ConfigError('tls.cert', `${files.cert} is not valid before ${validFrom.toISOString()}`)
  if (!x509.checkPrivateKey(privateKey)) throw new ConfigError('tls.key', `${files.key} is not the private key of ${files.cert}`)
  return { cert, key, validTo, names: x509.subjectAltName ?? x509.subject }
}

/**
 * The effective `tls`: --tls-cert/--tls-key (or SLUICE_TLS_CERT/SLUICE_TLS_KEY) over the file's
 * `tls: {cert, key}`, checked now so a bad pair fails at start-up (and in check-config).
 */
export function tlsConfig (fromFile: unknown, certFlag: string | undefined, keyFlag: string | undefined): TlsFiles | undefined {
  const merged: Record<string, unknown> = fromFile !== null && typeof fromFile === 'object' && !Array.isArray(fromFile) ? { ...fromFile } : {}
  if (certFlag !== undefined) merged.cert = certFlag
  if (keyFlag !== undefined) merged.key = keyFlag
  const files = parseTlsFiles(certFlag === undefined && keyFlag === undefined ? fromFile : merged)
  if (files !== undefined) loadTls(files)
  return files
}
