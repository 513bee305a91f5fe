/**
 * X.509 distinguished names: decoding, RFC 4514 formatting, and allow-list matching (pure).
 */
import * as asn1js from 'asn1js';

/** One attribute of a name, in certificate order, e.g. `{ key: 'CN', value: 'release' }`. */
export interface NameAttribute {
  key: string;
  value: string;
  /** The value is not a string type and is given as `#` + hex of its DER (RFC 4514). */
  hex?: boolean;
}

/** Short names as OpenSSL prints them; other types are shown as their dotted OID. */
const SHORT_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN',
  '2.5.4.4': 'SN',
  '2.5.4.5': 'serialNumber',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.9': 'street',
  '2.5.4.10': 'O',
  '2.5.4.11': 'OU',
  '2.5.4.12': 'title',
  '2.5.4.42': 'GN',
  '2.5.4.46': 'dnQualifier',
  '2.5.4.65': 'pseudonym',
  '0.9.2342.19200300.100.1.1': 'UID',
  '0.9.2342.19200300.100.1.25': 'DC',
  '1.2.840.113549.1.9.1': 'emailAddress',
};

/** Long spellings users may write in an allow-list. */
const ALIASES: Record<string, string> = {
  COMMONNAME: 'CN',
  COUNTRYNAME: 'C',
  LOCALITYNAME: 'L',
  STATEORPROVINCENAME: 'ST',
  ORGANIZATIONNAME: 'O',
  ORGANIZATIONALUNITNAME: 'OU',
  EMAIL: 'EMAILADDRESS',
  E: 'EMAILADDRESS',
  DOMAINCOMPONENT: 'DC',
  USERID: 'UID',
  SURNAME: 'SN',
  GIVENNAME: 'GN',
};

function canonicalKey(key: string): string {
  const up = key.trim().toUpperCase();
  return ALIASES[up] ?? up;
}

function valueText(block: asn1js.AsnType): { value: string; hex?: boolean } {
  // All the string types asn1js knows (Utf8String, PrintableString, IA5String, BmpString, ...).
  if (block instanceof asn1js.BaseStringBlock) return { value: block.getValue() };
  return { value: `#${Buffer.from(block.valueBeforeDecodeView).toString('hex')}`, hex: true };
}

/**
 * Decodes a DER Name into RDNs (outer array, certificate order), each a list of attributes
 * (more than one only for multi-valued RDNs). Throws on a malformed name.
 */
export function decodeName(der: Uint8Array): NameAttribute[][] {
  const parsed = asn1js.fromBER(der);
  if (parsed.offset !== der.byteLength || !(parsed.result instanceof asn1js.Sequence)) throw new Error('malformed name');
  return parsed.result.valueBlock.value.map((rdn) => {
    if (!(rdn instanceof asn1js.Set) || rdn.valueBlock.value.length === 0) throw new Error('malformed name: RDN is not a non-empty SET');
    return rdn.valueBlock.value.map((atv) => {
      const parts = atv instanceof asn1js.Sequence ? atv.valueBlock.value : [];
      const [type, value] = parts;
      if (parts.length !== 2 || !(type instanceof asn1js.ObjectIdentifier) || !value) throw new Error('malformed name: bad attribute');
      const oid = type.getValue();
      return { key: SHORT_NAMES[oid] ?? oid, ...valueText(value) };
    });
  });
}

function escapeValue(v: string): string {
  let out = v.replace(/[\\"+,;<>]/g, (c) => `\\${c}`).replace(/\0/g, '\\00');
  if (out.startsWith('#') || out.startsWith(' ')) out = `\\${out}`;
  if (out.endsWith(' ') && out.length > 1) out = `${out.slice(0, -1)}\\ `;
  return out;
}

/** RFC 4514 string (most specific RDN first), as `openssl x509 -nameopt RFC2253` prints it. */
export function formatName(rdns: NameAttribute[][]): string {
  return [...rdns]
    .reverse()
    .map((rdn) => rdn.map((a) => `${a.key}=${a.hex ? a.value : escapeValue(a.value)}`).join('+'))
    .join(',');
}

/** The most specific commonName (the last CN in certificate order), if any. */
export function commonName(rdns: NameAttribute[][]): string | undefined {
  const cns = rdns.flat().filter((a) => a.key === 'CN');
  return cns.at(-1)?.value;
}

/**
 * Parses a subject as a user writes it in `allowed_signers`: `CN=a,O=b` (either order),
 * `CN = a, O = b` (OpenSSL's default output) or `/O=b/CN=a` (OpenSSL's -subj form).
 * `\` escapes the next character. Returns undefined if it is not a DN (no `=`).
 */
export function parseSubjectPattern(text: string): NameAttribute[] | undefined {
  const s = text.trim();
  if (!s.includes('=')) return undefined;
  const slashForm = s.startsWith('/');
  const separators = slashForm ? ['/'] : [',', '+', ';'];
  const parts: string[] = [];
  let cur = '';
  for (let i = slashForm ? 1 : 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      cur += `\\${s[++i]}`;
    } else if (separators.includes(c)) {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  const out: NameAttribute[] = [];
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const value = part.slice(eq + 1).trim().replace(/\\(.)/g, '$1');
    out.push({ key: canonicalKey(part.slice(0, eq)), value });
  }
  return out;
}

function sameAttributes(a: NameAttribute[], b: NameAttribute[]): boolean {
  return a.length === b.length && a.every((x, i) => canonicalKey(x.key) === canonicalKey(b[i]!.key) && x.value === b[i]!.value);
}

/**
 * True if `entry` of an allow-list names this subject: an entry without `=` is compared with
 * the commonName, an entry with `=` with the whole subject (every attribute, values
 * case-sensitive, in forward or RFC 4514 reverse order).
 */
export function subjectMatches(entry: string, rdns: NameAttribute[][]): boolean {
  const pattern = parseSubjectPattern(entry);
  if (!pattern) return commonName(rdns) === entry.trim();
  const flat = rdns.flat();
  return sameAttributes(pattern, flat) || sameAttributes(pattern, [...flat].reverse());
}
