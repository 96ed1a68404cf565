// `sluice cert DIR [--name HOST]... [--days N] [--force]`: writes ca.pem, cert.pem and key.pem for
// the TLS listener and prints how to start Sluice with them and how clients trust them.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError } from '../errors'
import { DEFAULT_NAMES, makeCert } from './make-cert'

/** Under the 398 days clients (Apple's, browsers) accept for a server certificate. */
const DEFAULT_DAYS = 397
const NAME = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

interface CertArgs { dir: string, names: string[], days: number, force: boolean }

export function parseCertArgs (argv: string[]): CertArgs {
  let parsed
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { name: { type: 'string', multiple: true }, days: { type: 'string' }, force: { type: 'boolean' } } })
  } catch (err) {
    throw new ConfigError('cert', (err as Error).message.replace(/\. To specify.*$/s, ''))
  }
  const dir = parsed.positionals[0]
  if (dir === undefined || parsed.positionals.length > 1) throw new ConfigError('cert', 'expected one directory: sluice cert DIR [--name HOST]... [--days N] [--force]')
  const days = Number(parsed.values.days ?? DEFAULT_DAYS)
  if (!Number.isInteger(days) || days < 1 || days > 3650) throw new ConfigError('--days', `expected an integer from 1 to 3650, got ${JSON.stringify(parsed.values.days)}`)
  const extra = parsed.values.name ?? []
  for (const n of extra) {
    // isIP-shaped names are checked by the certificate library; the rest must be DNS names.
    if (!NAME.test(n) && !/^[0-9a-fA-F:.]+$/.test(n)) throw new ConfigError('--name', `expected a host name or IP address, got ${JSON.stringify(n)}`)
  }
  return { dir, names: [...new Set([...DEFAULT_NAMES, ...extra])], days, force: parsed.values.force === true }
}

export async function runCert (argv: string[], out: (s: string) => void): Promise<number> {
  const args = parseCertArgs(argv)
  const dir = resolve(args.dir)
  const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') }
  const present = Object.values(files).filter((f) => existsSync(f))
  if (present.length > 0 && !args.force) throw new ConfigError('cert', `${present.join(', ')} already exist; pass --force to replace them`)
  const made = await makeCert(args.names, args.days)
  mkdirSync(dir, { recursive: true })
  writeFileSync(files.ca, made.ca)
  writeFileSync(files.cert, made.cert)
  writeFileSync(files.key, made.key, { mode: 0o600 })
  out([
    `wrote ${files.cert} and ${files.key}: a server certificate for ${made.names.join(', ')}, valid until ${made.notAfter.toISOString().slice(0, 10)}`,
    `wrote ${files.ca}: the CA that signed it (its private key was not kept: it signs nothing else)`,
    '',
    'Start Sluice with it (HTTPS on the same port, admin routes included):',
    `  sluice --tls-cert ${files.cert} --tls-key ${files.key} --preset testmo --upstream https://acme.testmo.net`,
    '',
    'Make clients trust it, then point them at https://127.0.0.1:8080 (or https://localhost:8080):',
    `  Node.js (Testmo CLI, Octokit, zulip-js…):  export NODE_EXTRA_CA_CERTS=${files.ca}`,
    `  Python requests:                         export REQUESTS_CA_BUNDLE=${files.ca}`,
    `  curl, OpenSSL, Ruby, git:                export SSL_CERT_FILE=${files.ca}   (replaces the system CAs for that process)`,
    ''
  ].join('\n'))
  return 0
}
