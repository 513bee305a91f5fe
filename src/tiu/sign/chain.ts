/**
 * Building the certificate path from the signer to a keyring CA.
 *
 * A certificate's issuer is looked up by exact name (DER bytes) among the keyring CAs first,
 * then among the certificates embedded in the CMS; a candidate counts only if the child's
 * signature verifies with its key. Keyring certificates are trust anchors whether or not they
 * are self-signed (an intermediate CA may be trusted directly). Backtracks over candidates
 * that share a name; paths are at most {@link MAX_CHAIN} certificates long.
 */
import type { CertInfo } from './certinfo.ts';

export const MAX_CHAIN = 8;

/** Verifies `child`'s signature with `issuer`'s public key; never throws. */
export type SignatureCheck = (child: CertInfo, issuer: CertInfo) => Promise<boolean>;

export type ChainResult = { chain: CertInfo[] } | { problem: string };

/** Finds `[signer, ..., anchor]`, or says why there is none. */
export async function buildChain(signer: CertInfo, embedded: readonly CertInfo[], anchors: readonly CertInfo[], verifies: SignatureCheck): Promise<ChainResult> {
  let sawNameOnly: { child: CertInfo; issuer: CertInfo } | undefined;
  let deepest: CertInfo[] = [signer];

  async function extend(path: CertInfo[]): Promise<CertInfo[] | undefined> {
    const cur = path.at(-1)!;
    if (path.length > deepest.length) deepest = path;
    for (const a of anchors) {
      if (!a.subjectDer.equals(cur.issuerDer)) continue;
      if (await verifies(cur, a)) return [...path, a];
      sawNameOnly ??= { child: cur, issuer: a };
    }
    if (path.length >= MAX_CHAIN - 1) return undefined;
    for (const c of embedded) {
      if (!c.subjectDer.equals(cur.issuerDer) || path.some((p) => p.der.equals(c.der))) continue;
      if (!(await verifies(cur, c))) {
        sawNameOnly ??= { child: cur, issuer: c };
        continue;
      }
      const found = await extend([...path, c]);
      if (found) return found;
    }
    return undefined;
  }

  const chain = await extend([signer]);
  if (chain) return { chain };
  if (sawNameOnly) {
    return { problem: `'${sawNameOnly.child.subject}' names '${sawNameOnly.issuer.subject}' as issuer, but that certificate's key did not sign it` };
  }
  const last = deepest.at(-1)!;
  const what = deepest.length === 1 ? 'the signing certificate' : 'the chain ends at';
  return { problem: `${what} '${last.subject}', whose issuer '${last.issuer}' is neither in the keyring nor embedded in the signature` };
}
