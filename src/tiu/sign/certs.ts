/**
 * Making RSA keys and X.509 certificates (development CAs, signing certificates, and the odd
 * certificates the tests need). Keys come from Node's crypto (native, fast); node-forge
 * assembles and signs the certificates. No file access.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { OID } from './certinfo.ts';

export interface KeyPair {
  /** PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as `openssl genpkey` writes it. */
  privateKeyPem: string;
  forgePrivate: forge.pki.rsa.PrivateKey;
  forgePublic: forge.pki.rsa.PublicKey;
}

/** A new RSA key pair (3072 bits unless told). */
export function rsaKeyPair(bits = 3072): KeyPair {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits, publicExponent: 0x10001 });
  const privateKeyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const forgePrivate = forge.pki.privateKeyFromPem(privateKeyPem);
  const forgePublic = forge.pki.setRsaPublicKey(forgePrivate.n, forgePrivate.e);
  return { privateKeyPem, forgePrivate, forgePublic };
}

export interface Issuer {
  cert: forge.pki.Certificate;
  key: forge.pki.rsa.PrivateKey;
}

export interface CertSpec {
  /** Subject attributes, e.g. `{ CN: 'x', O: 'y' }` (in this order). */
  subject: Record<string, string>;
  publicKey: forge.pki.rsa.PublicKey;
  /** Key that signs; omitted = self-signed with `selfKey`. */
  issuer?: Issuer;
  selfKey?: forge.pki.rsa.PrivateKey;
  notBefore: Date;
  notAfter: Date;
  /** basicConstraints: `true` = CA:TRUE, `{ pathLen }` = CA with a limit, `false` = CA:FALSE, undefined = absent. */
  ca?: boolean | { pathLen: number };
  /** keyUsage bits (forge names: digitalSignature, keyCertSign, cRLSign, ...); undefined = absent. */
  keyUsage?: string[];
  /** extendedKeyUsage OIDs; undefined = absent. */
  extKeyUsage?: string[];
  /** Extra raw extensions (forge form), e.g. an unknown critical one. */
  extraExtensions?: object[];
}

/** A positive 127-bit serial (RFC 5280 wants at most 20 octets, unpredictable for CAs). */
function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = 0x40 | (b[0]! & 0x3f);
  return b.toString('hex');
}

const EKU_FORGE: Record<string, string> = {
  [OID.ekuServerAuth]: 'serverAuth',
  [OID.ekuClientAuth]: 'clientAuth',
  [OID.ekuCodeSigning]: 'codeSigning',
  [OID.ekuEmailProtection]: 'emailProtection',
};

/** Builds and signs a certificate with SHA-256. */
export function issueCertificate(spec: CertSpec): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = spec.publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = spec.notBefore;
  cert.validity.notAfter = spec.notAfter;
  const subject = Object.entries(spec.subject).map(([shortName, value]) => ({ shortName, value }));
  cert.setSubject(subject);
  cert.setIssuer(spec.issuer ? spec.issuer.cert.subject.attributes : subject);

  const exts: object[] = [];
  if (spec.ca !== undefined) {
    const ca = spec.ca !== false;
    exts.push({ name: 'basicConstraints', critical: true, cA: ca, ...(typeof spec.ca === 'object' ? { pathLenConstraint: spec.ca.pathLen } : {}) });
  }
  if (spec.keyUsage) exts.push({ name: 'keyUsage', critical: true, ...Object.fromEntries(spec.keyUsage.map((k) => [k, true])) });
  if (spec.extKeyUsage) {
    const named = spec.extKeyUsage.filter((o) => EKU_FORGE[o]);
    if (named.length !== spec.extKeyUsage.length) throw new Error('issueCertificate: unsupported extKeyUsage OID');
    exts.push({ name: 'extKeyUsage', ...Object.fromEntries(named.map((o) => [EKU_FORGE[o], true])) });
  }
  exts.push({ name: 'subjectKeyIdentifier' });
  const issuerCert = spec.issuer?.cert ?? cert;
  const aki = issuerCert === cert ? cert.generateSubjectKeyIdentifier() : issuerCert.generateSubjectKeyIdentifier();
  exts.push({ name: 'authorityKeyIdentifier', keyIdentifier: aki.getBytes() });
  exts.push(...(spec.extraExtensions ?? []));
  cert.setExtensions(exts);

  const signKey = spec.issuer?.key ?? spec.selfKey;
  if (!signKey) throw new Error('issueCertificate: a self-signed certificate needs selfKey');
  cert.sign(signKey, forge.md.sha256.create());
  return cert;
}

export function certificateToPem(cert: forge.pki.Certificate): string {
  return forge.pki.certificateToPem(cert).replace(/\r\n/g, '\n');
}
