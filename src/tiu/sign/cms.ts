/**
 * Strict structural parse of a CMS SignedData blob (pure, no crypto).
 *
 * Accepts exactly: ContentInfo(signedData) with embedded id-data content, exactly one
 * SignerInfo with signed attributes holding one contentType (= id-data) and one messageDigest,
 * X.509 certificates only. Anything else throws an Error naming the problem.
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { parseDer } from './certinfo.ts';

export const OID_SIGNED_DATA = '1.2.840.113549.1.7.2';
export const OID_DATA = '1.2.840.113549.1.7.1';
export const OID_CONTENT_TYPE = '1.2.840.113549.1.9.3';
export const OID_MESSAGE_DIGEST = '1.2.840.113549.1.9.4';
export const OID_SIGNING_TIME = '1.2.840.113549.1.9.5';

/** Digest algorithms tiu accepts: OID -> Node/WebCrypto names. */
export const DIGESTS: Record<string, { node: string; webcrypto: string }> = {
  '2.16.840.1.101.3.4.2.1': { node: 'sha256', webcrypto: 'SHA-256' },
  '2.16.840.1.101.3.4.2.2': { node: 'sha384', webcrypto: 'SHA-384' },
  '2.16.840.1.101.3.4.2.3': { node: 'sha512', webcrypto: 'SHA-512' },
};

/** SignerInfo signature algorithms: OID -> the digest it implies (undefined: the SignerInfo's). */
export const SIGNATURE_ALGORITHMS: Record<string, { digest: string | undefined; kind: 'rsa' | 'ec' }> = {
  '1.2.840.113549.1.1.1': { digest: undefined, kind: 'rsa' }, // rsaEncryption: what forge and openssl write
  '1.2.840.113549.1.1.11': { digest: '2.16.840.1.101.3.4.2.1', kind: 'rsa' },
  '1.2.840.113549.1.1.12': { digest: '2.16.840.1.101.3.4.2.2', kind: 'rsa' },
  '1.2.840.113549.1.1.13': { digest: '2.16.840.1.101.3.4.2.3', kind: 'rsa' },
  '1.2.840.10045.4.3.2': { digest: '2.16.840.1.101.3.4.2.1', kind: 'ec' },
  '1.2.840.10045.4.3.3': { digest: '2.16.840.1.101.3.4.2.2', kind: 'ec' },
  '1.2.840.10045.4.3.4': { digest: '2.16.840.1.101.3.4.2.3', kind: 'ec' },
};

export type SignerId = { issuerDer: Buffer; serialBytes: Buffer } | { subjectKeyId: Buffer };

export interface ParsedSignedData {
  content: Buffer;
  /** The embedded certificates, exactly as encoded. */
  certificates: Buffer[];
  sid: SignerId;
  digestAlgorithm: string;
  signerInfo: pkijs.SignerInfo;
  /** The signed attributes re-tagged as SET: the bytes the signature covers. */
  signedAttrs: Buffer;
  messageDigest: Buffer;
  signingTime: Date | undefined;
}

function children(node: asn1js.AsnType): asn1js.AsnType[] {
  const v = (node as { valueBlock?: { value?: unknown } }).valueBlock?.value;
  return Array.isArray(v) ? (v as asn1js.AsnType[]) : [];
}

function isContext(node: asn1js.AsnType | undefined, n: number): boolean {
  return !!node && node.idBlock.tagClass === 3 && node.idBlock.tagNumber === n;
}

/** Parameters of a hash or RSA AlgorithmIdentifier: absent or NULL (RFC 5754, RFC 4055); ECDSA: absent (RFC 5758). */
function checkParams(alg: pkijs.AlgorithmIdentifier, what: string, nullAllowed: boolean): void {
  if (!('algorithmParams' in alg) || alg.algorithmParams === undefined) return;
  if (nullAllowed && alg.algorithmParams instanceof asn1js.Null) return;
  throw new Error(`unexpected parameters in the ${what} algorithm`);
}

function singleValue(attrs: pkijs.Attribute[], type: string, name: string): asn1js.AsnType | undefined {
  const found = attrs.filter((a) => a.type === type);
  if (found.length === 0) return undefined;
  if (found.length > 1 || found[0]!.values.length !== 1) throw new Error(`the ${name} attribute must occur once with one value`);
  return found[0]!.values[0] as asn1js.AsnType;
}

/** Parses the blob. Throws an Error whose message says what is wrong. */
export function parseSignedData(der: Uint8Array): ParsedSignedData {
  const root = parseDer(der, 'the signature');
  const contentInfo = new pkijs.ContentInfo({ schema: root });
  if (contentInfo.contentType !== OID_SIGNED_DATA) throw new Error(`it is a CMS ${contentInfo.contentType}, not SignedData`);
  const signedData = new pkijs.SignedData({ schema: contentInfo.content });

  const eci = signedData.encapContentInfo;
  if (eci.eContentType !== OID_DATA) throw new Error(`the embedded content type is ${eci.eContentType}, not id-data`);
  if (!eci.eContent) throw new Error('no embedded content (detached signature?)');
  if (!(eci.eContent instanceof asn1js.OctetString)) throw new Error('the embedded content is not an OCTET STRING');
  const content = Buffer.from(eci.eContent.getValue());

  if (signedData.signerInfos.length !== 1) throw new Error(`it has ${signedData.signerInfos.length} signers, tiu needs exactly one`);
  const signerInfo = signedData.signerInfos[0]!;
  if (!signerInfo.signedAttrs || signerInfo.signedAttrs.attributes.length === 0) throw new Error('the signer has no signed attributes');

  // Certificates, exactly as encoded: walk the raw tree (pkijs would re-encode them).
  const sdFields = children(contentInfo.content);
  const certSet = sdFields.find((f, i) => i >= 3 && isContext(f, 0));
  const certificates: Buffer[] = [];
  for (const c of certSet ? children(certSet) : []) {
    if (!(c instanceof asn1js.Sequence)) throw new Error('it embeds a certificate type other than X.509');
    certificates.push(Buffer.from(c.valueBeforeDecodeView));
  }

  const digestAlgorithm = signerInfo.digestAlgorithm.algorithmId;
  if (!DIGESTS[digestAlgorithm]) throw new Error(`unsupported digest algorithm ${digestAlgorithm} (tiu accepts SHA-256/384/512)`);
  checkParams(signerInfo.digestAlgorithm, 'digest', true);
  // The bookkeeping fields are not signed: accept exactly one value for each (RFC 5652 5.1, 5.3).
  const ds = signedData.digestAlgorithms;
  if (ds.length !== 1 || ds[0]!.algorithmId !== digestAlgorithm) throw new Error('digestAlgorithms does not list exactly the signer\'s digest');
  checkParams(ds[0]!, 'digest', true);
  const sigAlg = SIGNATURE_ALGORITHMS[signerInfo.signatureAlgorithm.algorithmId];
  if (!sigAlg) throw new Error(`unsupported signature algorithm ${signerInfo.signatureAlgorithm.algorithmId}`);
  checkParams(signerInfo.signatureAlgorithm, 'signature', sigAlg.kind === 'rsa');
  if (signerInfo.unsignedAttrs) throw new Error('the signer has unsigned attributes');
  if (signedData.crls && signedData.crls.length > 0) throw new Error('it carries CRLs, which tiu does not use');

  const attrs = signerInfo.signedAttrs.attributes;
  const seen = new Set<string>();
  for (const a of attrs) {
    if (seen.has(a.type)) throw new Error(`signed attribute ${a.type} occurs twice`);
    seen.add(a.type);
  }
  const ct = singleValue(attrs, OID_CONTENT_TYPE, 'contentType');
  if (!(ct instanceof asn1js.ObjectIdentifier) || ct.getValue() !== eci.eContentType) throw new Error('the contentType attribute is missing or does not match the content');
  const md = singleValue(attrs, OID_MESSAGE_DIGEST, 'messageDigest');
  if (!(md instanceof asn1js.OctetString) || md.valueBlock.isConstructed) throw new Error('the messageDigest attribute is missing or malformed');
  const st = singleValue(attrs, OID_SIGNING_TIME, 'signingTime');
  const signingTime = st instanceof asn1js.UTCTime || st instanceof asn1js.GeneralizedTime ? st.toDate() : undefined;

  let sid: SignerId;
  if (signerInfo.sid instanceof pkijs.IssuerAndSerialNumber) {
    sid = { issuerDer: Buffer.from(signerInfo.sid.issuer.valueBeforeDecode), serialBytes: Buffer.from(signerInfo.sid.serialNumber.valueBlock.valueHexView) };
  } else {
    const node = signerInfo.sid as asn1js.AsnType;
    const raw = node.idBlock.isConstructed ? children(node)[0] : node;
    if (!raw) throw new Error('malformed signer identifier');
    sid = { subjectKeyId: Buffer.from((raw as asn1js.OctetString).valueBlock.valueHexView) };
  }

  const expectedVersion = 'issuerDer' in sid ? 1 : 3;
  if (signerInfo.version !== expectedVersion || signedData.version !== expectedVersion) {
    throw new Error(`version fields (SignedData ${signedData.version}, SignerInfo ${signerInfo.version}) do not match the signer identifier (expected ${expectedVersion})`);
  }

  return {
    content,
    certificates,
    sid,
    digestAlgorithm,
    signerInfo,
    signedAttrs: Buffer.from(signerInfo.signedAttrs.encodedValue),
    messageDigest: Buffer.from(md.valueBlock.valueHexView),
    signingTime,
  };
}
