/**
 * tiu's certificate policy: the checks applied to a built chain (pure; throws TiuError).
 *
 * The chain is `[signer, intermediate..., keyring CA]`. Rules (docs/trust.md):
 * - every certificate: no critical extension tiu does not understand; RSA >= 2048 bits or
 *   ECDSA on P-256/P-384/P-521; valid at `now`; all but the keyring CA signed with SHA-256/384/512;
 * - every CA (all but the signer): basicConstraints cA=TRUE, keyUsage (if present) with
 *   keyCertSign, pathLenConstraint respected, extendedKeyUsage (if present) allowing signing;
 * - the signer: keyUsage (if present) with digitalSignature, extendedKeyUsage (if present)
 *   with emailProtection or codeSigning;
 * - optionally the signer's CN or subject is in the allow-list.
 */
import { TiuError } from '../../core/errors.ts';
import { OID, type CertInfo } from './certinfo.ts';
import { subjectMatches } from './names.ts';

/** Signature algorithms tiu accepts on certificates (SHA-1 and MD5 are refused). */
export const CERT_SIGNATURE_ALGORITHMS: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256WithRSAEncryption',
  '1.2.840.113549.1.1.12': 'sha384WithRSAEncryption',
  '1.2.840.113549.1.1.13': 'sha512WithRSAEncryption',
  '1.2.840.10045.4.3.2': 'ecdsa-with-SHA256',
  '1.2.840.10045.4.3.3': 'ecdsa-with-SHA384',
  '1.2.840.10045.4.3.4': 'ecdsa-with-SHA512',
};

const CURVES = new Set(['prime256v1', 'secp384r1', 'secp521r1', 'P-256', 'P-384', 'P-521']);

/** The purposes tiu accepts in a signer's extendedKeyUsage (see docs/trust.md for why both). */
export const SIGNER_EKUS: readonly string[] = [OID.ekuEmailProtection, OID.ekuCodeSigning];

/** How a certificate is named in messages, by its place in the chain. */
export function role(chain: readonly CertInfo[], i: number): string {
  const what = i === 0 ? 'signing certificate' : i === chain.length - 1 ? 'keyring CA' : 'intermediate CA';
  return `${what} '${chain[i]!.subject}'`;
}

const day = (d: Date) => d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');

/** Algorithm, key and extension rules for every certificate (an anchor's self-signature is not used, so not judged). */
export function checkCertificateBasics(cert: CertInfo, name: string, isAnchor = false): void {
  if (cert.unsupportedCritical.length > 0) {
    throw new TiuError('ARCHIVE_UNTRUSTED', `${name} has a critical extension tiu does not understand (${cert.unsupportedCritical.join(', ')})`, {
      hint: 'issue the certificate without it, or mark it non-critical',
    });
  }
  if (!isAnchor && !CERT_SIGNATURE_ALGORITHMS[cert.signatureAlgorithm]) {
    throw new TiuError('ARCHIVE_UNTRUSTED', `${name} is signed with an algorithm tiu does not accept (${cert.signatureAlgorithm})`, {
      hint: 'reissue it signed with SHA-256 or stronger (RSA or ECDSA)',
    });
  }
  const k = cert.publicKey;
  const ok = (k.type === 'rsa' && (k.bits ?? 0) >= 2048) || (k.type === 'ec' && CURVES.has(k.curve ?? ''));
  if (!ok) {
    const desc = k.type === 'rsa' ? `a ${k.bits}-bit RSA key` : k.type === 'ec' ? `an EC key on ${k.curve}` : `a ${k.type} key`;
    throw new TiuError('ARCHIVE_UNTRUSTED', `${name} has ${desc}; tiu accepts RSA of 2048 bits or more and ECDSA on P-256/P-384/P-521`, {
      hint: 'reissue the certificate with a stronger key',
    });
  }
}

/** Rules for a certificate that issued the one below it. `below` = CAs between it and the signer. */
export function checkCa(cert: CertInfo, name: string, below: number): void {
  if (!cert.basicConstraints?.ca) {
    throw new TiuError('ARCHIVE_UNTRUSTED', `${name} issued a certificate in the chain but is not a CA (basicConstraints CA:TRUE missing)`, {
      hint: 'only CA certificates may issue signing certificates; issue the signing certificate from a real CA',
    });
  }
  if (cert.keyUsage && !cert.keyUsage.has('keyCertSign')) {
    throw new TiuError('ARCHIVE_KEY_USAGE', `${name} is a CA whose keyUsage lacks keyCertSign`, { hint: 'reissue the CA certificate with keyUsage keyCertSign' });
  }
  const pathLen = cert.basicConstraints.pathLen;
  if (pathLen !== undefined && below > pathLen) {
    throw new TiuError('ARCHIVE_UNTRUSTED', `${name} allows ${pathLen} intermediate CA(s) below it (pathlen), the chain has ${below}`, {
      hint: 'shorten the chain or reissue the CA with a larger pathlen',
    });
  }
  const eku = cert.extKeyUsage;
  if (eku && !eku.includes(OID.ekuAny) && !SIGNER_EKUS.some((p) => eku.includes(p))) {
    throw new TiuError('ARCHIVE_KEY_USAGE', `${name} restricts its certificates to other purposes (extendedKeyUsage ${eku.join(', ')})`, {
      hint: 'the CA needs no extendedKeyUsage, or one including emailProtection or codeSigning',
    });
  }
}

/** Every certificate of the chain must be valid at `now` (the device's clock). */
export function checkValidity(chain: readonly CertInfo[], now: Date): void {
  chain.forEach((cert, i) => {
    if (now < cert.notBefore) {
      throw new TiuError('ARCHIVE_EXPIRED', `${role(chain, i)} is not valid before ${day(cert.notBefore)} (now is ${day(now)})`, {
        hint: "check this machine's clock; if it is right, wait or sign with a certificate that is already valid",
      });
    }
    if (now > cert.notAfter) {
      throw new TiuError('ARCHIVE_EXPIRED', `${role(chain, i)} expired on ${day(cert.notAfter)} (now is ${day(now)})`, {
        hint: "check this machine's clock; if it is right, re-sign the archive with a current certificate",
      });
    }
  });
}

/** The signer certificate must be meant for signing. Returns a problem or undefined. */
export function signerUsageProblem(cert: CertInfo): string | undefined {
  if (cert.keyUsage && !cert.keyUsage.has('digitalSignature')) {
    return `its keyUsage (${[...cert.keyUsage].join(', ') || 'empty'}) lacks digitalSignature`;
  }
  const eku = cert.extKeyUsage;
  if (eku && !SIGNER_EKUS.some((p) => eku.includes(p))) {
    return `its extendedKeyUsage (${eku.map(ekuName).join(', ')}) has neither emailProtection nor codeSigning`;
  }
  return undefined;
}

export function checkSignerUsage(chain: readonly CertInfo[]): void {
  const problem = signerUsageProblem(chain[0]!);
  if (problem) {
    throw new TiuError('ARCHIVE_KEY_USAGE', `${role(chain, 0)} is not allowed to sign archives: ${problem}`, {
      hint: 'issue the signing certificate with keyUsage digitalSignature and extendedKeyUsage emailProtection (and/or codeSigning)',
    });
  }
}

/** With a non-empty allow-list, the signer's CN or full subject must be on it. */
export function checkAllowedSigner(signer: CertInfo, allowed: readonly string[] | undefined): void {
  const list = (allowed ?? []).filter((e) => e.trim() !== '');
  if (list.length === 0) return;
  if (list.some((entry) => subjectMatches(entry, signer.subjectRdns))) return;
  throw new TiuError('ARCHIVE_SIGNER', `signer '${signer.subject}' is not in [trust] allowed_signers (${list.join('; ')})`, {
    hint: "add the signer's CN or subject to allowed_signers in tiu.conf, or use an archive signed by an allowed signer",
  });
}

const EKU_NAMES: Record<string, string> = {
  [OID.ekuEmailProtection]: 'emailProtection',
  [OID.ekuCodeSigning]: 'codeSigning',
  [OID.ekuServerAuth]: 'serverAuth',
  [OID.ekuClientAuth]: 'clientAuth',
  [OID.ekuAny]: 'anyExtendedKeyUsage',
  '1.3.6.1.5.5.7.3.8': 'timeStamping',
  '1.3.6.1.5.5.7.3.9': 'OCSPSigning',
};

export function ekuName(oid: string): string {
  return EKU_NAMES[oid] ?? oid;
}

/** Runs every chain rule in the documented order. */
export function checkChainPolicy(chain: readonly CertInfo[], now: Date, allowed?: readonly string[]): void {
  chain.forEach((cert, i) => checkCertificateBasics(cert, role(chain, i), i === chain.length - 1));
  for (let i = 1; i < chain.length; i++) checkCa(chain[i]!, role(chain, i), i - 1);
  checkValidity(chain, now);
  checkSignerUsage(chain);
  checkAllowedSigner(chain[0]!, allowed);
}
