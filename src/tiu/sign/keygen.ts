/**
 * `tiu keygen`: a development PKI, so a new user can sign and verify without openssl.
 *
 * CA (self-signed, CA:TRUE, keyCertSign+cRLSign) -> [intermediate CA] -> signing certificate
 * (digitalSignature; emailProtection+codeSigning, so RAUC's S/MIME check would accept it too).
 * RSA 3072. Files are created exclusively (an existing key is never overwritten); keys 0600,
 * certificates 0644.
 */
import { access, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError, fromErrno } from '../../core/errors.ts';
import { OID } from './certinfo.ts';
import { certificateToPem, issueCertificate, rsaKeyPair } from './certs.ts';

export interface DevKeyOptions {
  outDir: string;
  commonName?: string;
  /** Validity of every certificate, from `now`. */
  days?: number;
  now?: Date;
  /** CA -> intermediate CA -> signing certificate (writes chain.pem). */
  intermediate?: boolean;
}

/** Paths of the files written. */
export interface DevKeys {
  caKey: string;
  caCert: string;
  signingKey: string;
  signingCert: string;
  /** The file a device trusts (= the CA certificate). */
  keyring: string;
  intermediateKey?: string;
  intermediateCert?: string;
  /** Intermediate certificate(s) to pass as --chain when signing. */
  chain?: string;
}

const DAY_MS = 86_400_000;

async function writeNew(path: string, text: string, mode: number): Promise<void> {
  try {
    await writeFile(path, text, { flag: 'wx', mode });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new TiuError('INPUT_INVALID', `${path} already exists; tiu keygen never overwrites keys`, { hint: 'choose another --out directory or remove the old files' });
    }
    throw fromErrno(e, `cannot write ${path}`) ?? e;
  }
}

/** Generates the development keys into `outDir` (created if missing). Returns the paths. */
export async function generateDevKeys(o: DevKeyOptions): Promise<DevKeys> {
  const cn = o.commonName ?? 'tiu development';
  const days = o.days ?? 3650;
  if (!Number.isInteger(days) || days <= 0) throw new TiuError('USAGE', `days must be a positive whole number, got ${days}`);
  const now = o.now ?? new Date();
  // An hour of slack for clocks that lag the machine that made the keys.
  const notBefore = new Date(now.getTime() - 3_600_000);
  const notAfter = new Date(now.getTime() + days * DAY_MS);

  const caPair = rsaKeyPair();
  const caCert = issueCertificate({
    subject: { CN: `${cn} CA` },
    publicKey: caPair.forgePublic,
    selfKey: caPair.forgePrivate,
    notBefore,
    notAfter,
    ca: true,
    keyUsage: ['keyCertSign', 'cRLSign'],
  });
  let issuer = { cert: caCert, key: caPair.forgePrivate };
  let inter: { pem: string; keyPem: string } | undefined;
  if (o.intermediate) {
    const pair = rsaKeyPair();
    const cert = issueCertificate({
      subject: { CN: `${cn} intermediate CA` },
      publicKey: pair.forgePublic,
      issuer,
      notBefore,
      notAfter,
      ca: { pathLen: 0 },
      keyUsage: ['keyCertSign', 'cRLSign'],
    });
    issuer = { cert, key: pair.forgePrivate };
    inter = { pem: certificateToPem(cert), keyPem: pair.privateKeyPem };
  }
  const signPair = rsaKeyPair();
  const signCert = issueCertificate({
    subject: { CN: cn },
    publicKey: signPair.forgePublic,
    issuer,
    notBefore,
    notAfter,
    ca: false,
    keyUsage: ['digitalSignature'],
    extKeyUsage: [OID.ekuEmailProtection, OID.ekuCodeSigning],
  });

  try {
    await mkdir(o.outDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw fromErrno(e, `cannot create ${o.outDir}`) ?? e;
  }
  const out: DevKeys = {
    caKey: join(o.outDir, 'ca.key.pem'),
    caCert: join(o.outDir, 'ca.cert.pem'),
    signingKey: join(o.outDir, 'signing.key.pem'),
    signingCert: join(o.outDir, 'signing.cert.pem'),
    keyring: join(o.outDir, 'keyring.pem'),
  };
  if (inter) {
    out.intermediateKey = join(o.outDir, 'intermediate.key.pem');
    out.intermediateCert = join(o.outDir, 'intermediate.cert.pem');
    out.chain = join(o.outDir, 'chain.pem');
  }
  // Refuse before writing anything, so a second run leaves the first set intact and complete.
  for (const path of Object.values(out)) {
    const exists = await access(path).then(() => true, () => false);
    if (exists) throw new TiuError('INPUT_INVALID', `${path} already exists; tiu keygen never overwrites keys`, { hint: 'choose another --out directory or remove the old files' });
  }
  const caPem = certificateToPem(caCert);
  await writeNew(out.caKey, caPair.privateKeyPem, 0o600);
  await writeNew(out.caCert, caPem, 0o644);
  if (inter) {
    await writeNew(out.intermediateKey!, inter.keyPem, 0o600);
    await writeNew(out.intermediateCert!, inter.pem, 0o644);
    await writeNew(out.chain!, inter.pem, 0o644);
  }
  await writeNew(out.signingKey, signPair.privateKeyPem, 0o600);
  await writeNew(out.signingCert, certificateToPem(signCert), 0o644);
  await writeNew(out.keyring, caPem, 0o644);
  return out;
}
