// `sluice cert DIR`: a certificate for Sluice's TLS listener on this machine, made offline with
// Node's WebCrypto and @peculiar/x509 (Node's crypto parses X.509 but cannot sign it). A throwaway CA
// signs one server certificate for 127.0.0.1, ::1 and localhost (and any --name); the CA's private
// key is never written, so nothing can sign another certificate clients would trust. Clients trust
// ca.pem: a CA, not the server certificate itself, because some TLS stacks (Go, rustls) refuse a
// self-signed server certificate as its own trust anchor.
import { randomBytes, webcrypto } from 'node:crypto'
import { isIP } from 'node:net'
import * as x509 from '@peculiar/x509'

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
/** Names every certificate covers: the loopback addresses and name Sluice listens on by default. */
export const DEFAULT_NAMES = ['127.0.0.1', '::1', 'localhost']

export interface MadeCert {
  /** PEM: the server certificate, then the CA's (the chain the listener sends). */
  cert: string
  /** PEM (PKCS#8): the server certificate's private key. */
  key: string
  /** PEM: the CA certificate clients trust. */
  ca: string
  notAfter: Date
  names: string[]
}

function serial (): string {
  // Positive, 16 bytes: unique enough that two runs never collide in a client's cache.
  const bytes = randomBytes(16)
  bytes[0] = bytes[0]! & 0x7f
  return bytes.toString('hex')
}

type KeyPair = webcrypto.CryptoKeyPair

async function keyPair (): Promise<KeyPair> {
  return await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']) as KeyPair
}

/** A CA and a server certificate signed by it, valid from an hour ago (clock skew) for `days`. */
export async function makeCert (names: string[], days: number, now = new Date()): Promise<MadeCert> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])
  const notBefore = new Date(now.getTime() - 3_600_000)
  const notAfter = new Date(now.getTime() + days * 86_400_000)
  const caKeys = await keyPair()
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=Sluice local CA ${now.toISOString().slice(0, 10)}`,
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey)
    ]
  })
  const serverKeys = await keyPair()
  const server = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: 'CN=Sluice',
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: serverKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names.map((n) => isIP(n) !== 0 ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n })),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(serverKeys.publicKey)
    ]
  })
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', serverKeys.privateKey))
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`
  const caPem = ca.toString('pem') + '\n'
  return { cert: server.toString('pem') + '\n' + caPem, key, ca: caPem, notAfter, names }
}
