/**
 * Verifying an archive's CMS SignedData against the device keyring (pkijs + WebCrypto).
 *
 * Order of checks, each with its own error code (docs/trust.md):
 *  1. the keyring parses and holds CA certificates                      KEYRING_INVALID
 *  2. size, strict structure, messageDigest, signature                  ARCHIVE_SIGNATURE
 *  3. a path signer -> embedded intermediates -> keyring CA             ARCHIVE_UNTRUSTED
 *  4. algorithms, key sizes, CA flags, pathlen                          ARCHIVE_UNTRUSTED / ARCHIVE_KEY_USAGE
 *  5. validity dates of every certificate at `now`                     ARCHIVE_EXPIRED
 *  6. the signer's keyUsage / extendedKeyUsage                          ARCHIVE_KEY_USAGE
 *  7. the allow-list                                                    ARCHIVE_SIGNER
 * No input makes it throw anything but a TiuError.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as pkijs from 'pkijs';
import { TiuError } from '../../core/errors.ts';
import { parseCertificate, type CertInfo } from './certinfo.ts';
import { buildChain } from './chain.ts';
import { DIGESTS, parseSignedData, SIGNATURE_ALGORITHMS, type ParsedSignedData } from './cms.ts';
import { parsePem } from './pem.ts';
import { checkChainPolicy } from './policy.ts';

export interface VerifyOptions {
  /** PEM text with one or more trusted CA certificates. */
  keyringPem: string;
  /** If non-empty: the signer's CN or full subject must match an entry. */
  allowedSigners?: string[];
  /** The time certificates must be valid at (default: the system clock). */
  now?: Date;
  /** Largest accepted blob in bytes (default 64 KiB, as the archive format allows). */
  maxSize?: number;
  /**
   * Called with the embedded content once the blob's CMS structure is parsed, before its
   * certificates, digest, signature or chain are checked: for work that may start early because
   * it is thrown away unless verification succeeds (the archive's block check). Not called for a
   * blob whose structure does not parse.
   */
  onContent?: (unverified: Buffer) => void;
}

export interface SignerSummary {
  /** RFC 4514 form, most specific first: `CN=release,O=Example`. */
  subject: string;
  commonName?: string;
  issuer: string;
  /** Upper-case hex, as `openssl x509 -serial`. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** `AB:CD:...`, as `openssl x509 -fingerprint -sha256`. */
  sha256Fingerprint: string;
}

export interface VerifiedSignature {
  /** The signed content (the manifest), exactly the bytes the signature covers. */
  content: Buffer;
  signer: SignerSummary;
  /** Subjects from the signer to the keyring CA. */
  chain: string[];
  /** The signingTime attribute, if any (informational: validity is checked at `now`). */
  signingTime?: Date;
}

export const DEFAULT_MAX_SIGNATURE_SIZE = 64 * 1024;

// Our own engine instance, so we neither depend on nor change pkijs' global engine.
const engine = new pkijs.CryptoEngine({ name: 'node-webcrypto', crypto: globalThis.crypto });

const KEYRING_HINT = 'put the trusted CA certificates (PEM) in the keyring (see docs/trust.md)';

/** Parses the keyring PEM into CA certificates. Throws KEYRING_INVALID. */
export function parseKeyring(pem: string): CertInfo[] {
  const parsed = parsePem(pem);
  if ('problem' in parsed) throw new TiuError('KEYRING_INVALID', `the keyring is not valid PEM: ${parsed.problem}`, { hint: KEYRING_HINT });
  const certs: CertInfo[] = [];
  for (const [i, block] of parsed.blocks.entries()) {
    if (block.type !== 'CERTIFICATE') {
      const key = block.type.includes('PRIVATE KEY');
      throw new TiuError('KEYRING_INVALID', `the keyring holds a ${block.type} block (#${i + 1}); it may only hold CA certificates`, {
        hint: key ? 'remove the private key from the keyring and keep it off the device' : KEYRING_HINT,
      });
    }
    try {
      certs.push(parseCertificate(block.der));
    } catch (e) {
      throw new TiuError('KEYRING_INVALID', `certificate #${i + 1} in the keyring is malformed: ${(e as Error).message}`, { hint: KEYRING_HINT, cause: e });
    }
  }
  if (certs.length === 0) throw new TiuError('KEYRING_INVALID', 'the keyring holds no certificates', { hint: KEYRING_HINT });
  return certs;
}

function malformed(problem: string, cause?: unknown): TiuError {
  return new TiuError('ARCHIVE_SIGNATURE', `the archive signature is malformed: ${problem}`, {
    hint: 'the archive is corrupt or was not made by tiu create; download or build it again',
    cause,
  });
}

function findSigner(p: ParsedSignedData, certs: CertInfo[]): CertInfo {
  const sid = p.sid;
  const found = certs.find((c) => ('issuerDer' in sid ? c.issuerDer.equals(sid.issuerDer) && c.serialBytes.equals(sid.serialBytes) : !!c.subjectKeyId?.equals(sid.subjectKeyId)));
  if (!found) throw malformed('the signer certificate is not embedded (sign without -nocerts)');
  return found;
}

async function verifySignerSignature(p: ParsedSignedData, signer: CertInfo): Promise<boolean> {
  const alg = p.signerInfo.signatureAlgorithm;
  const known = SIGNATURE_ALGORITHMS[alg.algorithmId];
  if (!known) throw malformed(`unsupported signature algorithm ${alg.algorithmId}`);
  if (known.digest && known.digest !== p.digestAlgorithm) throw malformed('the signature algorithm and the digest algorithm disagree');
  if (known.kind !== signer.publicKey.type) throw malformed(`an ${known.kind.toUpperCase()} signature from a certificate with a ${signer.publicKey.type} key`);
  const signature = p.signerInfo.signature;
  return known.digest
    ? engine.verifyWithPublicKey(p.signedAttrs, signature, signer.cert.subjectPublicKeyInfo, alg)
    : engine.verifyWithPublicKey(p.signedAttrs, signature, signer.cert.subjectPublicKeyInfo, alg, DIGESTS[p.digestAlgorithm]!.webcrypto);
}

/** Checks size, structure, digest and signature. Returns the parsed blob and its signer. */
async function authenticate(der: Buffer, maxSize: number, onContent?: (unverified: Buffer) => void): Promise<{ parsed: ParsedSignedData; signer: CertInfo; embedded: CertInfo[] }> {
  if (der.length === 0) throw malformed('it is empty');
  if (der.length > maxSize) {
    throw new TiuError('ARCHIVE_SIGNATURE', `the archive signature is ${der.length} bytes, more than the ${maxSize} allowed`, {
      hint: 'the archive is corrupt or not a tiu archive',
    });
  }
  let parsed: ParsedSignedData;
  let embedded: CertInfo[];
  try {
    parsed = parseSignedData(der);
    // (the consumer's own failures are its business: a check it starts is thrown away with ours)
    try {
      onContent?.(parsed.content);
    } catch {}
    embedded = parsed.certificates.map((c, i) => {
      try {
        return parseCertificate(c);
      } catch (e) {
        throw new Error(`embedded certificate #${i + 1}: ${(e as Error).message}`);
      }
    });
  } catch (e) {
    throw malformed((e as Error).message ?? String(e), e);
  }
  const signer = findSigner(parsed, embedded);

  const digest = createHash(DIGESTS[parsed.digestAlgorithm]!.node).update(parsed.content).digest();
  if (digest.length !== parsed.messageDigest.length || !timingSafeEqual(digest, parsed.messageDigest)) {
    throw new TiuError('ARCHIVE_SIGNATURE', 'the signed manifest does not match its signature (messageDigest differs)', {
      hint: 'the archive was modified or damaged after signing; do not use it',
    });
  }
  let ok: boolean;
  try {
    ok = await verifySignerSignature(parsed, signer);
  } catch (e) {
    if (e instanceof TiuError) throw e;
    ok = false;
  }
  if (!ok) {
    throw new TiuError('ARCHIVE_SIGNATURE', `the archive signature does not verify with the key of '${signer.subject}'`, {
      hint: 'the archive was modified or damaged after signing; do not use it',
    });
  }
  return { parsed, signer, embedded };
}

async function certSignedBy(child: CertInfo, issuer: CertInfo): Promise<boolean> {
  try {
    return await child.cert.verify(issuer.cert, engine);
  } catch {
    return false;
  }
}

/**
 * Verifies a DER CMS SignedData with embedded content against the PEM keyring.
 * Resolves with the content and who signed it; rejects with a TiuError (see module comment).
 * Pure apart from CPU: no files, no clock unless `now` is omitted.
 */
export async function verifySignedData(der: Buffer, options: VerifyOptions): Promise<VerifiedSignature> {
  try {
    // (the blob first: `onContent` gets the content as early as it can)
    const { parsed, signer, embedded } = await authenticate(der, options.maxSize ?? DEFAULT_MAX_SIGNATURE_SIZE, options.onContent);
    const anchors = parseKeyring(options.keyringPem);
    const built = await buildChain(signer, embedded, anchors, certSignedBy);
    if ('problem' in built) {
      throw new TiuError('ARCHIVE_UNTRUSTED', `the archive is signed by '${signer.subject}', which does not chain to the keyring: ${built.problem}`, {
        hint: "install the signer's CA certificate in the keyring (--keyring or [trust] keyring), or use an archive signed by a trusted key",
      });
    }
    checkChainPolicy(built.chain, options.now ?? new Date(), options.allowedSigners);
    return {
      content: parsed.content,
      signer: {
        subject: signer.subject,
        commonName: signer.commonName,
        issuer: signer.issuer,
        serial: signer.serial,
        notBefore: signer.notBefore,
        notAfter: signer.notAfter,
        sha256Fingerprint: signer.sha256Fingerprint,
      },
      chain: built.chain.map((c) => c.subject),
      signingTime: parsed.signingTime,
    };
  } catch (e) {
    if (e instanceof TiuError) throw e;
    // Anything unexpected while handling untrusted bytes is a rejection, never a crash.
    throw malformed(e instanceof Error ? e.message : String(e), e);
  }
}
