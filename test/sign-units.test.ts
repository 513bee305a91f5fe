/** Pure parts of the trust code: PEM, DER structure, names and allow-list, chain building, policy. */
import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import { parsePem, looksLikeDer } from '../src/tiu/sign/pem.ts';
import { derProblem } from '../src/tiu/sign/der.ts';
import { decodeName, formatName, parseSubjectPattern, subjectMatches, type NameAttribute } from '../src/tiu/sign/names.ts';
import { buildChain, MAX_CHAIN } from '../src/tiu/sign/chain.ts';
import { parseCertificate, OID, type CertInfo } from '../src/tiu/sign/certinfo.ts';
import { checkChainPolicy, checkValidity, signerUsageProblem } from '../src/tiu/sign/policy.ts';
import { certificateToPem, issueCertificate, rsaKeyPair } from '../src/tiu/sign/certs.ts';
import { TiuError } from '../src/core/errors.ts';
import forge from 'node-forge';

describe('parsePem', () => {
  it('splits blocks and ignores text between them', () => {
    const text = 'subject=CN=x\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n# note\r\n-----BEGIN PRIVATE KEY-----\r\nBAU=\r\n-----END PRIVATE KEY-----\r\n';
    const r = parsePem(text);
    expect(r).toEqual({ blocks: [{ type: 'CERTIFICATE', der: Buffer.from([0, 1, 2, 3]) }, { type: 'PRIVATE KEY', der: Buffer.from([4, 5]) }] });
  });

  it('reports malformed blocks', () => {
    const cases: [string, RegExp][] = [
      ['-----BEGIN CERTIFICATE-----\nAAAA\n', /no END line/],
      ['-----END CERTIFICATE-----\n', /END CERTIFICATE without BEGIN/],
      ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n', /closes BEGIN CERTIFICATE/],
      ['-----BEGIN CERTIFICATE-----\nAA*A\n-----END CERTIFICATE-----\n', /not valid base64/],
      ['-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n', /not valid base64/],
      ['-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END RSA PRIVATE KEY-----\n', /headers \(Proc-Type\); is it encrypted/],
      ['-----BEGIN A-----\n-----BEGIN B-----\n', /BEGIN inside/],
    ];
    for (const [text, re] of cases) {
      const r = parsePem(text);
      expect('problem' in r && r.problem, text).toMatch(re);
    }
    expect(parsePem('')).toEqual({ blocks: [] });
  });

  it('never throws on arbitrary text', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => void parsePem(`-----BEGIN X-----\n${s}\n-----END X-----\n${s}`)));
  });

  it('recognises binary DER read as text', () => {
    expect(looksLikeDer(Buffer.from([0x30, 0x82, 0x03, 0x1b, 0x30, 0x82]).toString('latin1'))).toBe(true);
    expect(looksLikeDer(Buffer.from([0x30, 0x82, 0x03, 0xff]).toString('utf8'))).toBe(true);
    expect(looksLikeDer('-----BEGIN CERTIFICATE-----')).toBe(false);
    expect(looksLikeDer('0 is a digit')).toBe(false);
  });
});

describe('derProblem', () => {
  const ok = (hex: string) => expect(derProblem(Buffer.from(hex, 'hex')), hex).toBeUndefined();
  const bad = (hex: string, re: RegExp) => expect(derProblem(Buffer.from(hex, 'hex')), hex).toMatch(re);

  it('accepts DER', () => {
    ok('0500');
    ok('3003020101');
    ok('30060201010201ff');
    ok(`308180047e${'00'.repeat(126)}`);
    ok(`0481ff${'00'.repeat(255)}`);
    ok(`04820100${'00'.repeat(256)}`);
    ok('9f810100'); // high tag number [129]
  });

  it('rejects BER and inconsistent lengths', () => {
    bad('3080020101' + '0000', /indefinite/);
    bad('308103020101', /non-minimal/);
    bad('30820003020101', /non-minimal/);
    bad('3004020101', /runs past|missing tag/);
    bad('3002020101', /runs past/);
    bad('050000', /1 bytes after the end/);
    bad('', /missing tag/);
    bad('30', /missing length/);
    bad('0485ffffffffff', /bad length/);
  });

  it('never throws and agrees with a definite-length encoder on random trees', () => {
    // Build random DER trees; each must pass; a flipped length byte must never throw.
    const tree: fc.Arbitrary<Buffer> = fc.letrec<{ node: Buffer }>((rec) => ({
      node: fc.oneof(
        { depthSize: 'small' },
        fc.uint8Array({ maxLength: 300 }).map((b) => encode(0x04, Buffer.from(b))),
        fc.array(rec('node'), { maxLength: 4 }).map((kids) => encode(0x30, Buffer.concat(kids))),
      ),
    })).node;
    fc.assert(
      fc.property(tree, fc.nat(), (der, at) => {
        expect(derProblem(der)).toBeUndefined();
        const c = Buffer.from(der);
        c[at % c.length]! ^= 0x01;
        derProblem(c);
      }),
    );
  });
});

function encode(tag: number, content: Buffer): Buffer {
  const n = content.length;
  const len = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), len, content]);
}

describe('names', () => {
  const rdns: NameAttribute[][] = [[{ key: 'C', value: 'DE' }], [{ key: 'O', value: 'Example, Inc.' }], [{ key: 'CN', value: 'release 2026' }]];

  it('formats RFC 4514 with escaping, most specific first', () => {
    expect(formatName(rdns)).toBe('CN=release 2026,O=Example\\, Inc.,C=DE');
    expect(formatName([[{ key: 'CN', value: ' #lead+trail ' }]])).toBe('CN=\\ #lead\\+trail\\ ');
    expect(formatName([[{ key: 'CN', value: 'a' }, { key: 'UID', value: 'b' }]])).toBe('CN=a+UID=b');
  });

  it('decodes a certificate name', () => {
    const key = rsaKeyPair(2048);
    const cert = issueCertificate({
      subject: { C: 'DE', O: 'Example, Inc.', CN: 'release' },
      publicKey: key.forgePublic,
      selfKey: key.forgePrivate,
      notBefore: new Date(),
      notAfter: new Date(Date.now() + 1e9),
    });
    const info = parseCertificate(Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes(), 'binary'));
    expect(info.subject).toBe('CN=release,O=Example\\, Inc.,C=DE');
    expect(info.commonName).toBe('release');
    expect(decodeName(info.subjectDer)).toEqual([[{ key: 'C', value: 'DE' }], [{ key: 'O', value: 'Example, Inc.' }], [{ key: 'CN', value: 'release' }]]);
  });

  it('parses the subject spellings users write', () => {
    const expected = [
      { key: 'CN', value: 'release 2026' },
      { key: 'O', value: 'Example, Inc.' },
      { key: 'C', value: 'DE' },
    ];
    expect(parseSubjectPattern('CN=release 2026,O=Example\\, Inc.,C=DE')).toEqual(expected);
    expect(parseSubjectPattern(' commonName = release 2026 , O = Example\\, Inc. , c = DE ')).toEqual(expected);
    expect(parseSubjectPattern('/C=DE/O=Example, Inc./CN=release 2026')).toEqual([...expected].reverse());
    expect(parseSubjectPattern('release 2026')).toBeUndefined();
    expect(parseSubjectPattern('=x')).toBeUndefined();
  });

  it('matches CN entries against the CN and DN entries against the whole subject', () => {
    expect(subjectMatches('release 2026', rdns)).toBe(true);
    expect(subjectMatches(' release 2026 ', rdns)).toBe(true);
    expect(subjectMatches('release', rdns)).toBe(false);
    expect(subjectMatches('RELEASE 2026', rdns)).toBe(false);
    expect(subjectMatches('CN=release 2026,O=Example\\, Inc.,C=DE', rdns)).toBe(true);
    expect(subjectMatches('C=DE, O=Example\\, Inc., CN=release 2026', rdns)).toBe(true);
    expect(subjectMatches('/C=DE/O=Example, Inc./CN=release 2026', rdns)).toBe(true);
    expect(subjectMatches('CN=release 2026', rdns)).toBe(false);
    expect(subjectMatches('CN=release 2026,O=Example\\, Inc.,C=FR', rdns)).toBe(false);
    expect(subjectMatches('O=Example\\, Inc.,CN=release 2026,C=DE', rdns)).toBe(false);
  });
});

describe('buildChain', () => {
  // Fake certificates: names and identities only; "signatures" are a table.
  const cert = (id: string, subject: string, issuer: string) => ({ der: Buffer.from(id), subject, issuer, subjectDer: Buffer.from(subject), issuerDer: Buffer.from(issuer) }) as unknown as CertInfo;
  const signedBy = (pairs: [CertInfo, CertInfo][]) => async (c: CertInfo, i: CertInfo) => pairs.some(([a, b]) => a === c && b === i);

  it('walks signer -> intermediates -> anchor, trying same-named candidates', async () => {
    const root = cert('root', 'R', 'R');
    const interBad = cert('i1', 'I', 'R');
    const interGood = cert('i2', 'I', 'R');
    const leaf = cert('leaf', 'L', 'I');
    const r = await buildChain(leaf, [interBad, interGood], [root], signedBy([[leaf, interGood], [interGood, root], [leaf, interBad]]));
    // interBad signed the leaf but is not signed by the root: backtrack to interGood.
    expect('chain' in r && r.chain.map((c) => c.der.toString())).toEqual(['leaf', 'i2', 'root']);
  });

  it('does not loop and stops at the maximum length', async () => {
    const a = cert('a', 'A', 'B');
    const b = cert('b', 'B', 'A');
    const leaf = cert('leaf', 'L', 'A');
    const r = await buildChain(leaf, [a, b], [], signedBy([[leaf, a], [a, b], [b, a]]));
    expect('problem' in r && r.problem).toMatch(/neither in the keyring nor embedded/);

    const links = Array.from({ length: MAX_CHAIN + 2 }, (_, i) => cert(`c${i}`, `N${i}`, `N${i + 1}`));
    const anchor = cert('anchor', `N${links.length}`, `N${links.length}`);
    const pairs = links.map((c, i) => [c, links[i + 1] ?? anchor] as [CertInfo, CertInfo]);
    expect('problem' in (await buildChain(links[0]!, links.slice(1), [anchor], signedBy(pairs)))).toBe(true);
    const short = links.slice(links.length - (MAX_CHAIN - 1));
    const ok = await buildChain(short[0]!, short.slice(1), [anchor], signedBy(pairs));
    expect('chain' in ok && ok.chain).toHaveLength(MAX_CHAIN);
  });

  it('names the impostor when a same-named issuer did not sign', async () => {
    const root = cert('root', 'R', 'R');
    const leaf = cert('leaf', 'L', 'R');
    const r = await buildChain(leaf, [], [root], signedBy([]));
    expect('problem' in r && r.problem).toBe("'L' names 'R' as issuer, but that certificate's key did not sign it");
  });
});

describe('policy', () => {
  let leaf: CertInfo;
  let ca: CertInfo;
  beforeAll(() => {
    const key = rsaKeyPair(2048);
    const nb = new Date('2026-01-01T00:00:00Z');
    const na = new Date('2026-12-31T00:00:00Z');
    const caCert = issueCertificate({ subject: { CN: 'ca' }, publicKey: key.forgePublic, selfKey: key.forgePrivate, notBefore: nb, notAfter: na, ca: true, keyUsage: ['keyCertSign'] });
    const leafCert = issueCertificate({ subject: { CN: 'leaf' }, publicKey: key.forgePublic, issuer: { cert: caCert, key: key.forgePrivate }, notBefore: nb, notAfter: na, keyUsage: ['digitalSignature'] });
    const der = (c: forge.pki.Certificate) => Buffer.from(certificateToPem(c).replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    ca = parseCertificate(der(caCert));
    leaf = parseCertificate(der(leafCert));
  });

  it('checks validity at the boundaries (inclusive)', () => {
    expect(() => checkValidity([leaf, ca], leaf.notBefore)).not.toThrow();
    expect(() => checkValidity([leaf, ca], leaf.notAfter)).not.toThrow();
    const code = (now: Date) => {
      try {
        checkValidity([leaf, ca], now);
        return 'OK';
      } catch (e) {
        return (e as TiuError).code;
      }
    };
    expect(code(new Date(leaf.notBefore.getTime() - 1000))).toBe('ARCHIVE_EXPIRED');
    expect(code(new Date(leaf.notAfter.getTime() + 1000))).toBe('ARCHIVE_EXPIRED');
  });

  it('signer usage: keyUsage and extendedKeyUsage rules', () => {
    const variant = (keyUsage: CertInfo['keyUsage'], extKeyUsage: CertInfo['extKeyUsage']) => signerUsageProblem({ ...leaf, keyUsage, extKeyUsage });
    expect(variant(undefined, undefined)).toBeUndefined();
    expect(variant(new Set(['digitalSignature']), [OID.ekuCodeSigning])).toBeUndefined();
    expect(variant(new Set(['digitalSignature', 'nonRepudiation']), [OID.ekuServerAuth, OID.ekuEmailProtection])).toBeUndefined();
    expect(variant(new Set(['nonRepudiation']), undefined)).toMatch(/lacks digitalSignature/);
    expect(variant(undefined, [OID.ekuAny])).toMatch(/anyExtendedKeyUsage\) has neither/);
    expect(variant(undefined, [OID.ekuClientAuth])).toMatch(/clientAuth/);
  });

  it('runs the whole policy on a good chain and maps each failure to its code', () => {
    const now = new Date('2026-06-01T00:00:00Z');
    expect(() => checkChainPolicy([leaf, ca], now, ['leaf'])).not.toThrow();
    const code = (chain: CertInfo[], allowed: string[] = []) => {
      try {
        checkChainPolicy(chain, now, allowed);
        return 'OK';
      } catch (e) {
        return (e as TiuError).code;
      }
    };
    expect(code([leaf, ca], ['other'])).toBe('ARCHIVE_SIGNER');
    expect(code([leaf, { ...ca, basicConstraints: undefined }])).toBe('ARCHIVE_UNTRUSTED');
    expect(code([leaf, { ...ca, keyUsage: new Set(['cRLSign']) }])).toBe('ARCHIVE_KEY_USAGE');
    expect(code([{ ...leaf, signatureAlgorithm: '1.2.840.113549.1.1.5' }, ca])).toBe('ARCHIVE_UNTRUSTED'); // sha1WithRSA
    expect(code([leaf, { ...ca, signatureAlgorithm: '1.2.840.113549.1.1.5' }])).toBe('OK'); // an anchor's self-signature is not used
    expect(code([{ ...leaf, publicKey: { type: 'ed25519' } }, ca])).toBe('ARCHIVE_UNTRUSTED');
    expect(code([{ ...leaf, publicKey: { type: 'ec', curve: 'secp256k1' } }, ca])).toBe('ARCHIVE_UNTRUSTED');
    expect(code([{ ...leaf, keyUsage: new Set(['keyEncipherment']) }, ca])).toBe('ARCHIVE_KEY_USAGE');
    expect(code([leaf, { ...ca, notAfter: new Date('2026-05-01T00:00:00Z') }])).toBe('ARCHIVE_EXPIRED');
  });
});
