/**
 * Signing the manifest: a DER CMS SignedData (content embedded, like a RAUC bundle's).
 *
 * node-forge builds the structure (sha256; signed attributes contentType, signingTime,
 * messageDigest in DER order); the RSA operation is done by Node's crypto (OpenSSL: fast and
 * constant-time). Certificates and the signer identifier are inserted exactly as encoded in the
 * PEM files, so nothing is re-encoded by forge. RSA PKCS#1 v1.5 is deterministic and the time
 * comes from the caller, so equal inputs give equal bytes (reproducible archives).
 *
 * Only RSA keys sign: forge cannot build ECDSA SignerInfos, and Node's ECDSA uses a random
 * nonce, which would make archives irreproducible. Verification accepts ECDSA (verify.ts).
 */
import { X509Certificate, constants, createPrivateKey, privateEncrypt, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { TiuError } from '../../core/errors.ts';
import { parseCertificate, type CertInfo } from './certinfo.ts';
import { looksLikeDer, parsePem } from './pem.ts';
import { signerUsageProblem } from './policy.ts';

export interface SignOptions {
  /** The signed content (the manifest JSON). */
  content: Buffer;
  /** Unencrypted RSA private key, PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`). */
  keyPem: string;
  /** The signing certificate, PEM; further certificates after it are treated as chain. */
  certPem: string;
  /** Intermediate CA certificates to embed (PEM), signer's issuer first. */
  chainPem?: string;
  /** Written as the signingTime attribute (pass SOURCE_DATE_EPOCH for reproducible output). */
  signingTime: Date;
}

const MIN_RSA_BITS = 2048;
const RSA_KEY_HINT = 'tiu signs with RSA keys (2048 bits or more): openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out key.pem (see docs/trust.md)';

// DER prefix of DigestInfo{sha256, NULL} (RFC 8017 9.2 note 1).
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

function keyError(message: string, hint?: string, cause?: unknown): TiuError {
  return new TiuError('KEY_INVALID', message, { hint, cause });
}

/** Loads the private key: PEM, unencrypted, RSA >= 2048 bits. Throws KEY_INVALID. */
export function loadSigningKey(keyPem: string): KeyObject {
  if (looksLikeDer(keyPem)) throw keyError('the signing key is binary (DER), tiu reads PEM', 'convert it: openssl pkey -inform DER -in key.der -out key.pem');
  const encrypted = keyError('the signing key is encrypted; tiu cannot ask for a passphrase', 'decrypt it into a file only the signing user can read: openssl pkey -in key.pem -out key-plain.pem');
  if (/Proc-Type:\s*4,ENCRYPTED/.test(keyPem)) throw encrypted;
  const parsed = parsePem(keyPem);
  if ('problem' in parsed) throw keyError(`the signing key is not valid PEM: ${parsed.problem}`, RSA_KEY_HINT);
  const block = parsed.blocks.find((b) => b.type.endsWith('PRIVATE KEY'));
  if (block?.type === 'ENCRYPTED PRIVATE KEY') throw encrypted;
  if (!block) {
    const found = parsed.blocks.map((b) => b.type).join(', ') || 'nothing';
    throw keyError(`the key file holds no private key (found ${found})`, RSA_KEY_HINT);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: keyPem, format: 'pem' });
  } catch (e) {
    throw keyError(`the signing key cannot be read: ${(e as Error).message}`, RSA_KEY_HINT, e);
  }
  if (key.asymmetricKeyType !== 'rsa') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    throw keyError(`the signing key is ${key.asymmetricKeyType}${curve ? ` (${curve})` : ''}; tiu needs an RSA key (reproducible signatures; archives signed elsewhere with ECDSA still verify)`, RSA_KEY_HINT);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw keyError(`the signing key has ${bits} bits; tiu needs at least ${MIN_RSA_BITS}`, RSA_KEY_HINT);
  return key;
}

/** Parses every CERTIFICATE block of a PEM text (other blocks, e.g. a key, are skipped). */
export function loadCertificates(pem: string, what: string): CertInfo[] {
  if (looksLikeDer(pem)) throw keyError(`the ${what} is binary (DER), tiu reads PEM`, 'convert it: openssl x509 -inform DER -in cert.der -out cert.pem');
  const parsed = parsePem(pem);
  if ('problem' in parsed) throw keyError(`the ${what} is not valid PEM: ${parsed.problem}`);
  const blocks = parsed.blocks.filter((b) => b.type === 'CERTIFICATE');
  if (blocks.length === 0) throw keyError(`the ${what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, 'give the certificate file in PEM form');
  return blocks.map((b, i) => {
    try {
      return parseCertificate(b.der);
    } catch (e) {
      throw keyError(`certificate #${i + 1} in the ${what} is malformed: ${(e as Error).message}`, undefined, e);
    }
  });
}

function asn1Of(der: Buffer): forge.asn1.Asn1 {
  return forge.asn1.fromDer(forge.util.createBuffer(der.toString('binary')));
}

/** The IssuerAndSerialNumber of `cert`, from its own bytes. */
function issuerAndSerial(cert: CertInfo): forge.asn1.Asn1 {
  const { asn1 } = forge;
  const serial = asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, cert.serialBytes.toString('binary'));
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, [asn1Of(cert.issuerDer), serial]);
}

/**
 * Signs `content`. Returns the DER CMS SignedData. Pure apart from CPU (no files, no clock).
 * Throws KEY_INVALID for an unusable key or certificate, or a key that does not match it.
 */
export function signManifest(o: SignOptions): Buffer {
  const key = loadSigningKey(o.keyPem);
  const [signer, ...rest] = loadCertificates(o.certPem, 'certificate file');
  const chain = [...rest, ...(o.chainPem ? loadCertificates(o.chainPem, 'chain file') : [])];
  if (!new X509Certificate(signer!.der).checkPrivateKey(key)) {
    throw keyError(`the signing key does not belong to the certificate '${signer!.subject}'`, 'pass the key that was used to request this certificate');
  }
  const usage = signerUsageProblem(signer!);
  if (usage) {
    throw keyError(`the certificate '${signer!.subject}' may not sign archives: ${usage}`, 'issue it with keyUsage digitalSignature and extendedKeyUsage emailProtection (and/or codeSigning); devices would reject it');
  }
  if (Number.isNaN(o.signingTime.getTime())) throw new TiuError('INTERNAL', 'signManifest: invalid signingTime');

  const { asn1, pki } = forge;
  const p7 = forge.pkcs7.createSignedData();
  p7.content = forge.util.createBuffer(o.content.toString('binary'));
  // forge's types lack the issuer/serialNumber form of addSigner; the signer id is replaced below anyway.
  p7.addSigner({
    // Signs with Node's RSA; forge passes the sha256 of the signed attributes.
    key: {
      sign(md: forge.md.MessageDigest) {
        const digest = Buffer.from(md.digest().getBytes(), 'binary');
        return privateEncrypt({ key, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([SHA256_DIGEST_INFO, digest])).toString('binary');
      },
    } as unknown as forge.pki.rsa.PrivateKey,
    issuer: [],
    serialNumber: '00',
    digestAlgorithm: pki.oids.sha256!,
    // DER orders a SET OF by encoding; for these three values that is this order.
    authenticatedAttributes: [
      { type: pki.oids.contentType!, value: pki.oids.data },
      { type: pki.oids.signingTime!, value: o.signingTime as unknown as string },
      { type: pki.oids.messageDigest! },
    ],
  } as unknown as Parameters<typeof p7.addSigner>[0]);
  p7.sign();
  const ci = p7.toAsn1();
  const sd = (ci.value[1] as forge.asn1.Asn1).value[0] as forge.asn1.Asn1;
  const fields = sd.value as forge.asn1.Asn1[];
  // fields: version, digestAlgorithms, encapContentInfo, signerInfos. Insert certificates [0].
  const seen = new Set<string>();
  const certs = [signer!, ...chain].filter((c) => !seen.has(c.sha256Fingerprint) && !!seen.add(c.sha256Fingerprint));
  fields.splice(3, 0, asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, certs.map((c) => asn1Of(c.der))));
  const signerInfo = ((fields[4] as forge.asn1.Asn1).value as forge.asn1.Asn1[])[0]!;
  (signerInfo.value as forge.asn1.Asn1[])[1] = issuerAndSerial(signer!);
  return Buffer.from(asn1.toDer(ci).getBytes(), 'binary');
}
