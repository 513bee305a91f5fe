/**
 * Property tests: verifySignedData on hostile input only ever rejects with a TiuError, and
 * never accepts a changed blob: not in its signed parts (content, signed attributes, signature
 * value, certificates), and not in the unsigned bookkeeping either (strict DER, fixed versions).
 */
import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import { TiuError } from '../src/core/errors.ts';
import { signManifest } from '../src/tiu/sign/sign.ts';
import { verifySignedData } from '../src/tiu/sign/verify.ts';
import { certificateToPem, issueCertificate, rsaKeyPair } from '../src/tiu/sign/certs.ts';
import { OID } from '../src/tiu/sign/certinfo.ts';
import { parseSignedData } from '../src/tiu/sign/cms.ts';

const MANIFEST = Buffer.from(JSON.stringify({ format: 1, compatible: 'fuzz', version: '1', padding: 'x'.repeat(300) }));
const REJECT_CODES = ['ARCHIVE_SIGNATURE', 'ARCHIVE_UNTRUSTED', 'ARCHIVE_EXPIRED', 'ARCHIVE_KEY_USAGE'];
const DAY = 86_400_000;

let der: Buffer;
let keyringPem: string;
/** Byte ranges [start, end) of the blob that the signature or the chain protects. */
let covered: [number, number][];

const pemToDer = (pem: string) => Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');

beforeAll(() => {
  const [rootKey, interKey, signKey] = [rsaKeyPair(2048), rsaKeyPair(2048), rsaKeyPair(2048)];
  const notBefore = new Date(Date.now() - DAY);
  const notAfter = new Date(Date.now() + 30 * DAY);
  const root = issueCertificate({ subject: { CN: 'fuzz root' }, publicKey: rootKey.forgePublic, selfKey: rootKey.forgePrivate, notBefore, notAfter, ca: true, keyUsage: ['keyCertSign'] });
  const inter = issueCertificate({ subject: { CN: 'fuzz inter' }, publicKey: interKey.forgePublic, issuer: { cert: root, key: rootKey.forgePrivate }, notBefore, notAfter, ca: true, keyUsage: ['keyCertSign'] });
  const signer = issueCertificate({
    subject: { CN: 'fuzz signer' },
    publicKey: signKey.forgePublic,
    issuer: { cert: inter, key: interKey.forgePrivate },
    notBefore,
    notAfter,
    keyUsage: ['digitalSignature'],
    extKeyUsage: [OID.ekuEmailProtection],
  });
  keyringPem = certificateToPem(root);
  der = signManifest({ content: MANIFEST, keyPem: signKey.privateKeyPem, certPem: certificateToPem(signer), chainPem: certificateToPem(inter), signingTime: new Date('2026-01-01Z') });

  const range = (needle: Buffer, shift = 0): [number, number] => {
    const at = der.indexOf(needle);
    expect(at).toBeGreaterThan(0);
    return [at + shift, at + shift + needle.length - shift];
  };
  const attrs = parseSignedData(der).signedAttrs;
  covered = [
    range(MANIFEST),
    range(attrs.subarray(1), -1), // stored with tag [0] instead of SET: match from the 2nd byte
    [der.length - 256, der.length], // the RSA-2048 signature value ends the blob
    range(pemToDer(certificateToPem(signer))),
    range(pemToDer(certificateToPem(inter))),
  ];
});

/** Runs a verification; returns 'accepted' or the rejection, failing on anything but a TiuError. */
async function outcome(blob: Uint8Array): Promise<{ accepted: Buffer } | { code: string }> {
  try {
    const v = await verifySignedData(Buffer.from(blob), { keyringPem });
    return { accepted: v.content };
  } catch (e) {
    if (!(e instanceof TiuError)) throw new Error(`not a TiuError: ${e instanceof Error ? e.stack : String(e)}`);
    expect(e.oneLine()).not.toMatch(/\n|\s+at\s.*:\d+:\d+/);
    return { code: e.code };
  }
}

describe('verifySignedData under hostile input', () => {
  it('the unmodified blob verifies (control)', async () => {
    expect(await outcome(der)).toEqual({ accepted: MANIFEST });
  });

  it('random bytes are rejected with ARCHIVE_SIGNATURE', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 3000 }), fc.boolean(), async (bytes, header) => {
        // Half the time start like a DER SEQUENCE of the right length, to get past the first check.
        const blob = header && bytes.length > 4 ? Buffer.concat([Buffer.from([0x30, 0x82, (bytes.length >> 8) & 0xff, bytes.length & 0xff]), bytes]) : bytes;
        const r = await outcome(blob);
        expect(r).toEqual({ code: 'ARCHIVE_SIGNATURE' });
      }),
      { numRuns: 400 },
    );
  });

  it('every single-bit flip of every byte is rejected (exhaustive)', async () => {
    for (let pos = 0; pos < der.length; pos++) {
      const blob = Buffer.from(der);
      blob[pos]! ^= 0x01;
      const r = await outcome(blob);
      if (!('code' in r && REJECT_CODES.includes(r.code))) expect.fail(`accepted a flip at offset ${pos} of ${der.length}`);
    }
  });

  it('flipped bytes anywhere are rejected with an archive code (one encoding is accepted)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ pos: fc.nat({ max: 100_000 }), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 3 }),
        async (flips) => {
          const blob = Buffer.from(der);
          for (const f of flips) blob[f.pos % der.length]! ^= f.xor;
          if (blob.equals(der)) return; // two flips cancelled out
          const r = await outcome(blob);
          expect('code' in r && REJECT_CODES.includes(r.code), `accepted flips ${JSON.stringify(flips)}`).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('flips inside every signed region are always rejected', async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: 4 }), fc.nat({ max: 100_000 }), fc.integer({ min: 1, max: 255 }), async (region, offset, xor) => {
        const [s, e] = covered[region]!;
        const blob = Buffer.from(der);
        blob[s + (offset % (e - s))]! ^= xor;
        const r = await outcome(blob);
        expect('code' in r && REJECT_CODES.includes(r.code), JSON.stringify(r)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('truncations, insertions and deletions are rejected with an archive code', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ kind: fc.constant('truncate' as const), at: fc.nat({ max: 100_000 }) }),
          fc.record({ kind: fc.constant('insert' as const), at: fc.nat({ max: 100_000 }), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
          fc.record({ kind: fc.constant('delete' as const), at: fc.nat({ max: 100_000 }), n: fc.integer({ min: 1, max: 64 }) }),
        ),
        async (m) => {
          const at = m.at % der.length;
          const blob =
            m.kind === 'truncate'
              ? der.subarray(0, at)
              : m.kind === 'insert'
                ? Buffer.concat([der.subarray(0, at), m.bytes, der.subarray(at)])
                : Buffer.concat([der.subarray(0, at), der.subarray(at + m.n)]);
          const r = await outcome(blob);
          expect('code' in r && REJECT_CODES.includes(r.code), `accepted ${JSON.stringify(m)}`).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});
