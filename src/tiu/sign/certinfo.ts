/**
 * One X.509 certificate, decoded into the facts tiu's trust checks need (pure, strict).
 *
 * The three extensions tiu enforces (basicConstraints, keyUsage, extendedKeyUsage) are decoded
 * here from their DER, not through pkijs' lenient extension parser: a malformed one is an error,
 * never "absent".
 */
import { createHash, createPublicKey } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { derProblem } from './der.ts';
import { commonName, decodeName, formatName, type NameAttribute } from './names.ts';

export const KEY_USAGE_BITS = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
] as const;
export type KeyUsageName = (typeof KEY_USAGE_BITS)[number];

export const OID = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  subjectAltName: '2.5.29.17',
  ekuEmailProtection: '1.3.6.1.5.5.7.3.4',
  ekuCodeSigning: '1.3.6.1.5.5.7.3.3',
  ekuServerAuth: '1.3.6.1.5.5.7.3.1',
  ekuClientAuth: '1.3.6.1.5.5.7.3.2',
  ekuAny: '2.5.29.37.0',
} as const;

/** Extensions tiu understands; any other extension marked critical makes the certificate unusable (RFC 5280 4.2). */
const UNDERSTOOD = new Set<string>([OID.basicConstraints, OID.keyUsage, OID.extKeyUsage, OID.subjectKeyIdentifier, OID.authorityKeyIdentifier, OID.subjectAltName]);

export interface CertInfo {
  /** The certificate exactly as encoded. */
  der: Buffer;
  /** The pkijs object, for signature checks. */
  cert: pkijs.Certificate;
  /** RFC 4514 subject (most specific first), e.g. `CN=release,O=Example`. */
  subject: string;
  subjectRdns: NameAttribute[][];
  commonName: string | undefined;
  issuer: string;
  subjectDer: Buffer;
  issuerDer: Buffer;
  /** Upper-case hex without leading zero bytes, as `openssl x509 -serial` prints it. */
  serial: string;
  /** The serialNumber INTEGER's content bytes as encoded. */
  serialBytes: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it. */
  sha256Fingerprint: string;
  basicConstraints: { ca: boolean; pathLen: number | undefined } | undefined;
  keyUsage: Set<KeyUsageName> | undefined;
  /** Extended key usage OIDs, if the extension is present. */
  extKeyUsage: string[] | undefined;
  subjectKeyId: Buffer | undefined;
  /** OIDs of critical extensions tiu does not understand. */
  unsupportedCritical: string[];
  publicKey: { type: string; bits?: number; curve?: string };
  /** OID of the algorithm the issuer signed this certificate with. */
  signatureAlgorithm: string;
}

/** Parses exactly one DER element (strict DER structure, no trailing bytes). Throws on anything else. */
export function parseDer(bytes: Uint8Array, what: string): asn1js.AsnType {
  const problem = derProblem(bytes);
  if (problem) throw new Error(`${what} is not valid DER: ${problem}`);
  const parsed = asn1js.fromBER(bytes);
  if (parsed.offset === -1 || parsed.result.error) throw new Error(`${what} is not valid DER`);
  if (parsed.offset !== bytes.byteLength) throw new Error(`${what} has ${bytes.byteLength - parsed.offset} trailing bytes`);
  return parsed.result;
}

function decodeKeyUsage(value: Uint8Array): Set<KeyUsageName> {
  const bits = parseDer(value, 'keyUsage');
  if (!(bits instanceof asn1js.BitString) || bits.valueBlock.isConstructed) throw new Error('keyUsage is not a BIT STRING');
  const bytes = bits.valueBlock.valueHexView;
  const out = new Set<KeyUsageName>();
  KEY_USAGE_BITS.forEach((name, i) => {
    const byte = bytes[i >> 3];
    if (byte !== undefined && (byte & (0x80 >> (i & 7))) !== 0) out.add(name);
  });
  return out;
}

function decodeBasicConstraints(value: Uint8Array): { ca: boolean; pathLen: number | undefined } {
  const seq = parseDer(value, 'basicConstraints');
  if (!(seq instanceof asn1js.Sequence)) throw new Error('basicConstraints is not a SEQUENCE');
  let ca = false;
  let pathLen: number | undefined;
  const items = [...seq.valueBlock.value];
  if (items[0] instanceof asn1js.Boolean) ca = (items.shift() as asn1js.Boolean).getValue();
  if (items[0] instanceof asn1js.Integer) {
    const n = (items.shift() as asn1js.Integer).toBigInt();
    if (n < 0n || n > 255n) throw new Error('basicConstraints pathLenConstraint out of range');
    pathLen = Number(n);
  }
  if (items.length > 0) throw new Error('basicConstraints has unexpected fields');
  return { ca, pathLen };
}

function decodeExtKeyUsage(value: Uint8Array): string[] {
  const seq = parseDer(value, 'extendedKeyUsage');
  if (!(seq instanceof asn1js.Sequence) || seq.valueBlock.value.length === 0) throw new Error('extendedKeyUsage is not a non-empty SEQUENCE');
  return seq.valueBlock.value.map((o) => {
    if (!(o instanceof asn1js.ObjectIdentifier)) throw new Error('extendedKeyUsage holds a non-OID');
    return o.getValue();
  });
}

function decodeSubjectKeyId(value: Uint8Array): Buffer {
  const os = parseDer(value, 'subjectKeyIdentifier');
  if (!(os instanceof asn1js.OctetString)) throw new Error('subjectKeyIdentifier is not an OCTET STRING');
  return Buffer.from(os.valueBlock.valueHexView);
}

function hexColons(buf: Buffer): string {
  return buf.toString('hex').toUpperCase().match(/../g)!.join(':');
}

function derOf(block: { toSchema(): asn1js.AsnType }): Buffer {
  return Buffer.from(block.toSchema().toBER(false));
}

/** Decodes a certificate. Throws an Error saying what is malformed (callers map it to their code). */
export function parseCertificate(der: Uint8Array): CertInfo {
  const node = parseDer(der, 'certificate');
  const cert = new pkijs.Certificate({ schema: node });
  // The algorithm inside the signed part must be the one outside (RFC 5280 4.1.1.2).
  if (!derOf(cert.signature).equals(derOf(cert.signatureAlgorithm))) throw new Error('certificate signature algorithms disagree');
  // Unused bits would be ignored by the signature check: allow one encoding only.
  if (cert.signatureValue.valueBlock.unusedBits !== 0 || cert.subjectPublicKeyInfo.subjectPublicKey.valueBlock.unusedBits !== 0) {
    throw new Error('certificate has a BIT STRING with unused bits');
  }
  const subjectDer = Buffer.from(cert.subject.valueBeforeDecode);
  const issuerDer = Buffer.from(cert.issuer.valueBeforeDecode);
  const subjectRdns = decodeName(subjectDer);
  const issuerRdns = decodeName(issuerDer);

  let basicConstraints: CertInfo['basicConstraints'];
  let keyUsage: CertInfo['keyUsage'];
  let extKeyUsage: CertInfo['extKeyUsage'];
  let subjectKeyId: Buffer | undefined;
  const unsupportedCritical: string[] = [];
  const seen = new Set<string>();
  for (const ext of cert.extensions ?? []) {
    if (seen.has(ext.extnID)) throw new Error(`certificate has extension ${ext.extnID} twice`);
    seen.add(ext.extnID);
    const value = ext.extnValue.valueBlock.valueHexView;
    if (ext.extnID === OID.basicConstraints) basicConstraints = decodeBasicConstraints(value);
    else if (ext.extnID === OID.keyUsage) keyUsage = decodeKeyUsage(value);
    else if (ext.extnID === OID.extKeyUsage) extKeyUsage = decodeExtKeyUsage(value);
    else if (ext.extnID === OID.subjectKeyIdentifier) subjectKeyId = decodeSubjectKeyId(value);
    if (ext.critical && !UNDERSTOOD.has(ext.extnID)) unsupportedCritical.push(ext.extnID);
  }

  const spki = createPublicKey({ key: derOf(cert.subjectPublicKeyInfo), format: 'der', type: 'spki' });
  const details = spki.asymmetricKeyDetails ?? {};
  const serialBytes = Buffer.from(cert.serialNumber.valueBlock.valueHexView);
  const serialHex = serialBytes.toString('hex').toUpperCase().replace(/^(00)+(?=..)/, '');
  const buf = Buffer.from(der);
  return {
    der: buf,
    cert,
    subject: formatName(subjectRdns),
    subjectRdns,
    commonName: commonName(subjectRdns),
    issuer: formatName(issuerRdns),
    subjectDer,
    issuerDer,
    serial: serialHex,
    serialBytes,
    notBefore: cert.notBefore.value,
    notAfter: cert.notAfter.value,
    sha256Fingerprint: hexColons(createHash('sha256').update(buf).digest()),
    basicConstraints,
    keyUsage,
    extKeyUsage,
    subjectKeyId,
    unsupportedCritical,
    publicKey: { type: spki.asymmetricKeyType ?? 'unknown', bits: details.modulusLength, curve: details.namedCurve },
    signatureAlgorithm: cert.signatureAlgorithm.algorithmId,
  };
}
