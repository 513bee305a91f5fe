/**
 * Signing and verification with certificates made in-process (forge): the round trip,
 * reproducibility, and every rejection path of the trust checks.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../src/core/errors.ts';
import { signManifest } from '../src/tiu/sign/sign.ts';
import { verifySignedData, type VerifiedSignature } from '../src/tiu/sign/verify.ts';
import { generateDevKeys } from '../src/tiu/sign/keygen.ts';
import { certificateToPem, issueCertificate, rsaKeyPair, type Issuer, type KeyPair } from '../src/tiu/sign/certs.ts';
import { OID } from '../src/tiu/sign/certinfo.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const DAY = 86_400_000;
const NOW = new Date();
const at = (days: number) => new Date(NOW.getTime() + days * DAY);
const SIGNING_TIME = new Date('2026-03-01T12:00:00Z');
const MANIFEST = Buffer.from(JSON.stringify({ format: 1, compatible: 'test-device', version: '1.0', note: 'signed \u00e9' }));

/** Resolves to the TiuError a promise rejects with (fails the test if it resolves or throws anything else). */
async function rejection(p: Promise<unknown>): Promise<TiuError> {
  let value: unknown;
  try {
    value = await p;
  } catch (e) {
    if (e instanceof TiuError) return e;
    throw new Error(`expected a TiuError, got: ${String(e)}`);
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(value)?.slice(0, 200)}`);
}

function thrown(fn: () => unknown): TiuError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TiuError) return e;
    throw new Error(`expected a TiuError, got: ${String(e)}`);
  }
  throw new Error('expected a throw');
}

interface Ca {
  pem: string;
  issuer: Issuer;
}

let keys: KeyPair[] = [];
let root: Ca;
let otherRoot: Ca;

function makeCa(cn: string, key: KeyPair, opts: { parent?: Ca; ca?: boolean | { pathLen: number }; keyUsage?: string[]; notBefore?: Date; notAfter?: Date; extKeyUsage?: string[] } = {}): Ca {
  const cert = issueCertificate({
    subject: { O: 'tiu tests', CN: cn },
    publicKey: key.forgePublic,
    ...(opts.parent ? { issuer: opts.parent.issuer } : { selfKey: key.forgePrivate }),
    notBefore: opts.notBefore ?? at(-1),
    notAfter: opts.notAfter ?? at(30),
    ca: 'ca' in opts ? opts.ca : true,
    keyUsage: 'keyUsage' in opts ? opts.keyUsage : ['keyCertSign', 'cRLSign'],
    extKeyUsage: opts.extKeyUsage,
  });
  return { pem: certificateToPem(cert), issuer: { cert, key: key.forgePrivate } };
}

function makeSigner(cn: string, key: KeyPair, parent: Ca, opts: { notBefore?: Date; notAfter?: Date; keyUsage?: string[]; extKeyUsage?: string[]; extra?: object[] } = {}): string {
  return certificateToPem(
    issueCertificate({
      subject: { O: 'tiu tests', CN: cn },
      publicKey: key.forgePublic,
      issuer: parent.issuer,
      notBefore: opts.notBefore ?? at(-1),
      notAfter: opts.notAfter ?? at(30),
      ca: false,
      keyUsage: 'keyUsage' in opts ? opts.keyUsage : ['digitalSignature'],
      extKeyUsage: 'extKeyUsage' in opts ? opts.extKeyUsage : [OID.ekuEmailProtection, OID.ekuCodeSigning],
      extraExtensions: opts.extra,
    }),
  );
}

function sign(certPem: string, key: KeyPair, chainPem?: string, content = MANIFEST): Buffer {
  return signManifest({ content, keyPem: key.privateKeyPem, certPem, chainPem, signingTime: SIGNING_TIME });
}

beforeAll(() => {
  keys = [rsaKeyPair(2048), rsaKeyPair(2048), rsaKeyPair(2048), rsaKeyPair(2048)];
  root = makeCa('root CA', keys[0]!);
  otherRoot = makeCa('other CA', keys[1]!);
});

describe('signManifest + verifySignedData', () => {
  it('round-trips the content and reports the signer and chain', async () => {
    const signer = makeSigner('release', keys[2]!, root);
    const der = sign(signer, keys[2]!);
    const v = await verifySignedData(der, { keyringPem: root.pem });
    expect(v.content.equals(MANIFEST)).toBe(true);
    expect(v.signer.subject).toBe('CN=release,O=tiu tests');
    expect(v.signer.commonName).toBe('release');
    expect(v.signer.issuer).toBe('CN=root CA,O=tiu tests');
    expect(v.chain).toEqual(['CN=release,O=tiu tests', 'CN=root CA,O=tiu tests']);
    expect(v.signingTime?.toISOString()).toBe(SIGNING_TIME.toISOString());
    expect(v.signer.sha256Fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it('is deterministic: equal inputs give identical bytes, another time gives others', () => {
    const signer = makeSigner('release', keys[2]!, root);
    const a = sign(signer, keys[2]!);
    const b = sign(signer, keys[2]!);
    expect(a.equals(b)).toBe(true);
    const c = signManifest({ content: MANIFEST, keyPem: keys[2]!.privateKeyPem, certPem: signer, signingTime: new Date(SIGNING_TIME.getTime() + 1000) });
    expect(c.equals(a)).toBe(false);
    expect(c.length).toBe(a.length);
  });

  it('embeds intermediates from chainPem and from extra certificates in the cert file', async () => {
    const inter = makeCa('intermediate', keys[1]!, { parent: root });
    const signer = makeSigner('release', keys[2]!, inter);
    for (const der of [sign(signer, keys[2]!, inter.pem), sign(signer + inter.pem, keys[2]!)]) {
      const v = await verifySignedData(der, { keyringPem: root.pem });
      expect(v.chain).toEqual(['CN=release,O=tiu tests', 'CN=intermediate,O=tiu tests', 'CN=root CA,O=tiu tests']);
    }
    // Without the intermediate there is no path to the keyring.
    const e = await rejection(verifySignedData(sign(signer, keys[2]!), { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_UNTRUSTED');
    expect(e.message).toMatch(/CN=intermediate,O=tiu tests/);
  });

  it('accepts a keyring with several CAs, in any order, and an intermediate as trust anchor', async () => {
    const inter = makeCa('intermediate', keys[1]!, { parent: root });
    const signer = makeSigner('release', keys[2]!, inter);
    const der = sign(signer, keys[2]!, inter.pem);
    expect((await verifySignedData(der, { keyringPem: otherRoot.pem + '\n# comment\n' + root.pem })).chain).toHaveLength(3);
    expect((await verifySignedData(der, { keyringPem: inter.pem })).chain).toEqual(['CN=release,O=tiu tests', 'CN=intermediate,O=tiu tests']);
  });
});

describe('trust failures', () => {
  it('ARCHIVE_UNTRUSTED: keyring of another CA', async () => {
    const der = sign(makeSigner('release', keys[2]!, root), keys[2]!);
    const e = await rejection(verifySignedData(der, { keyringPem: otherRoot.pem }));
    expect(e.code).toBe('ARCHIVE_UNTRUSTED');
    expect(e.oneLine()).toMatch(/does not chain to the keyring.*install/);
  });

  it('ARCHIVE_UNTRUSTED: a CA with the right name but another key', async () => {
    const impostor = makeCa('root CA', keys[3]!);
    const der = sign(makeSigner('release', keys[2]!, root), keys[2]!);
    const e = await rejection(verifySignedData(der, { keyringPem: impostor.pem }));
    expect(e.code).toBe('ARCHIVE_UNTRUSTED');
    expect(e.message).toMatch(/key did not sign it/);
  });

  it('ARCHIVE_EXPIRED: expired and not-yet-valid signing certificates, naming the date', async () => {
    const expired = makeSigner('old', keys[2]!, root, { notBefore: at(-30), notAfter: at(-2) });
    let e = await rejection(verifySignedData(sign(expired, keys[2]!), { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_EXPIRED');
    expect(e.message).toContain(`signing certificate 'CN=old,O=tiu tests' expired on ${at(-2).toISOString().slice(0, 10)}`);

    const future = makeSigner('future', keys[2]!, root, { notBefore: at(2), notAfter: at(30) });
    e = await rejection(verifySignedData(sign(future, keys[2]!), { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_EXPIRED');
    expect(e.message).toContain(`'CN=future,O=tiu tests' is not valid before ${at(2).toISOString().slice(0, 10)}`);
  });

  it('ARCHIVE_EXPIRED: checks the CAs too, at the given time', async () => {
    const shortRoot = makeCa('short root', keys[0]!, { notAfter: at(10) });
    const signer = makeSigner('release', keys[2]!, shortRoot, { notAfter: at(20) });
    const der = sign(signer, keys[2]!);
    await expect(verifySignedData(der, { keyringPem: shortRoot.pem })).resolves.toBeTruthy();
    const e = await rejection(verifySignedData(der, { keyringPem: shortRoot.pem, now: at(15) }));
    expect(e.code).toBe('ARCHIVE_EXPIRED');
    expect(e.message).toMatch(/^keyring CA 'CN=short root,O=tiu tests' expired on/);
    expect((await rejection(verifySignedData(der, { keyringPem: shortRoot.pem, now: at(-5) }))).code).toBe('ARCHIVE_EXPIRED');
  });

  it('ARCHIVE_UNTRUSTED: an issuer that is not a CA (CA:FALSE or no basicConstraints)', async () => {
    for (const ca of [false, undefined]) {
      const fake = makeCa('not a ca', keys[1]!, { parent: root, ca, keyUsage: ['digitalSignature', 'keyCertSign'] });
      const signer = makeSigner('release', keys[2]!, fake);
      const e = await rejection(verifySignedData(sign(signer, keys[2]!, fake.pem), { keyringPem: root.pem }));
      expect(e.code).toBe('ARCHIVE_UNTRUSTED');
      expect(e.message).toMatch(/intermediate CA 'CN=not a ca,O=tiu tests' .*not a CA/);
    }
  });

  it('ARCHIVE_KEY_USAGE: a CA whose keyUsage lacks keyCertSign; a CA restricted to serverAuth', async () => {
    const noSign = makeCa('crl only', keys[1]!, { parent: root, keyUsage: ['cRLSign'] });
    let e = await rejection(verifySignedData(sign(makeSigner('r', keys[2]!, noSign), keys[2]!, noSign.pem), { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_KEY_USAGE');
    expect(e.message).toMatch(/keyCertSign/);
    const tls = makeCa('tls only', keys[1]!, { parent: root, extKeyUsage: [OID.ekuServerAuth] });
    e = await rejection(verifySignedData(sign(makeSigner('r', keys[2]!, tls), keys[2]!, tls.pem), { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_KEY_USAGE');
  });

  it('ARCHIVE_UNTRUSTED: pathlen exceeded', async () => {
    const strict = makeCa('strict root', keys[0]!, { ca: { pathLen: 0 } });
    const inter = makeCa('intermediate', keys[1]!, { parent: strict });
    const der = sign(makeSigner('release', keys[2]!, inter), keys[2]!, inter.pem);
    const e = await rejection(verifySignedData(der, { keyringPem: strict.pem }));
    expect(e.code).toBe('ARCHIVE_UNTRUSTED');
    expect(e.message).toMatch(/pathlen/);
  });

  it('ARCHIVE_UNTRUSTED: an unknown critical extension', async () => {
    const ext = { id: '1.3.6.1.4.1.99999.1', critical: true, value: '\x05\x00' };
    const der = sign(makeSigner('release', keys[2]!, root, { extra: [ext] }), keys[2]!);
    const e = await rejection(verifySignedData(der, { keyringPem: root.pem }));
    expect(e.code).toBe('ARCHIVE_UNTRUSTED');
    expect(e.message).toContain('1.3.6.1.4.1.99999.1');
    // The same extension, non-critical, is fine.
    const ok = sign(makeSigner('release', keys[2]!, root, { extra: [{ ...ext, critical: false }] }), keys[2]!);
    await expect(verifySignedData(ok, { keyringPem: root.pem })).resolves.toBeTruthy();
  });

  it('signManifest refuses a certificate devices would reject for its key usage', () => {
    for (const [ku, eku] of [[['digitalSignature'], [OID.ekuServerAuth]], [['keyEncipherment'], [OID.ekuEmailProtection]]] as const) {
      const cert = makeSigner('tls', keys[2]!, root, { keyUsage: [...ku], extKeyUsage: [...eku] });
      const e = thrown(() => sign(cert, keys[2]!));
      expect(e.code).toBe('KEY_INVALID');
      expect(e.message).toMatch(/may not sign archives/);
    }
    // Absent keyUsage / extendedKeyUsage means unrestricted, as in RFC 5280.
    expect(sign(makeSigner('plain', keys[2]!, root, { keyUsage: undefined, extKeyUsage: undefined }), keys[2]!).length).toBeGreaterThan(0);
    expect(sign(makeSigner('codesign', keys[2]!, root, { extKeyUsage: [OID.ekuCodeSigning] }), keys[2]!).length).toBeGreaterThan(0);
  });
});

describe('allow-list', () => {
  it('matches the CN or the full subject in either order; rejects others with ARCHIVE_SIGNER', async () => {
    const der = sign(makeSigner('release-2026', keys[2]!, root), keys[2]!);
    const ok = async (allowed: string[]) => (await verifySignedData(der, { keyringPem: root.pem, allowedSigners: allowed })).signer.commonName;
    expect(await ok(['release-2026'])).toBe('release-2026');
    expect(await ok(['someone else', 'CN=release-2026,O=tiu tests'])).toBe('release-2026');
    expect(await ok(['O = tiu tests, CN = release-2026'])).toBe('release-2026');
    expect(await ok(['/O=tiu tests/CN=release-2026'])).toBe('release-2026');
    expect(await ok([])).toBe('release-2026');
    for (const allowed of [['release'], ['Release-2026'], ['CN=release-2026'], ['CN=release-2026,O=other']]) {
      const e = await rejection(verifySignedData(der, { keyringPem: root.pem, allowedSigners: allowed }));
      expect(e.code).toBe('ARCHIVE_SIGNER');
      expect(e.oneLine()).toMatch(/not in \[trust\] allowed_signers.*add the signer/);
    }
  });
});

describe('tampering and malformed input', () => {
  let der: Buffer;
  let certDer: Buffer;
  beforeAll(() => {
    const pem = makeSigner('release', keys[2]!, root);
    der = sign(pem, keys[2]!);
    certDer = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  });
  const flip = (buf: Buffer, pos: number) => {
    const c = Buffer.from(buf);
    c[pos]! ^= 0x01;
    return c;
  };

  it('rejects one flipped bit in the content, signed attributes, signature value and certificate', async () => {
    const contentAt = der.indexOf(MANIFEST);
    const timeAt = der.indexOf(Buffer.from('260301120000Z'));
    const certAt = der.indexOf(certDer);
    expect([contentAt, timeAt, certAt].every((p) => p > 0)).toBe(true);
    const cases: [string, number, string[]][] = [
      ['content start', contentAt, ['ARCHIVE_SIGNATURE']],
      ['content end', contentAt + MANIFEST.length - 1, ['ARCHIVE_SIGNATURE']],
      ['signingTime', timeAt + 3, ['ARCHIVE_SIGNATURE']],
      ['messageDigest', der.length - 256 - 40, ['ARCHIVE_SIGNATURE']],
      ['signature value first byte', der.length - 256, ['ARCHIVE_SIGNATURE']],
      ['signature value last byte', der.length - 1, ['ARCHIVE_SIGNATURE']],
      ['certificate serial', certAt + 16, ['ARCHIVE_SIGNATURE', 'ARCHIVE_UNTRUSTED']],
      ['certificate subject', certDer.indexOf(Buffer.from('release')) + certAt, ['ARCHIVE_SIGNATURE', 'ARCHIVE_UNTRUSTED']],
      ['certificate public key', certAt + certDer.length - 400, ['ARCHIVE_SIGNATURE', 'ARCHIVE_UNTRUSTED']],
      ['certificate signature', certAt + certDer.length - 3, ['ARCHIVE_SIGNATURE', 'ARCHIVE_UNTRUSTED']],
      ['outer length', 1, ['ARCHIVE_SIGNATURE']],
    ];
    for (const [what, pos, codes] of cases) {
      const e = await rejection(verifySignedData(flip(der, pos), { keyringPem: root.pem }));
      expect(codes, `${what}: ${e.code} ${e.message}`).toContain(e.code);
    }
  });

  it('rejects truncation, trailing bytes, empty input and a 70 KiB blob', async () => {
    for (const bad of [der.subarray(0, der.length - 1), Buffer.concat([der, Buffer.from([0])]), Buffer.alloc(0), Buffer.from('not a signature')]) {
      expect((await rejection(verifySignedData(bad, { keyringPem: root.pem }))).code).toBe('ARCHIVE_SIGNATURE');
    }
    const big = await rejection(verifySignedData(Buffer.alloc(70 * 1024, 0x30), { keyringPem: root.pem }));
    expect(big.code).toBe('ARCHIVE_SIGNATURE');
    expect(big.message).toMatch(/71680 bytes, more than the 65536 allowed/);
    // maxSize is the caller's limit.
    expect((await rejection(verifySignedData(der, { keyringPem: root.pem, maxSize: der.length - 1 }))).message).toMatch(/more than/);
  });

  it('KEYRING_INVALID: empty, garbage, a private key, a broken certificate', async () => {
    const bad = ['', '   \n', 'hello', '-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n', keys[0]!.privateKeyPem, '-----BEGIN CERTIFICATE-----\nMIIBCgKCAQEA\n-----END CERTIFICATE-----\n'];
    for (const keyringPem of bad) {
      const e = await rejection(verifySignedData(der, { keyringPem }));
      expect(e.code, keyringPem).toBe('KEYRING_INVALID');
    }
    expect((await rejection(verifySignedData(der, { keyringPem: root.pem + keys[0]!.privateKeyPem }))).hint).toMatch(/remove the private key/);
  });
});

describe('signManifest input errors', () => {
  it('KEY_INVALID: key does not match the certificate', () => {
    const cert = makeSigner('release', keys[2]!, root);
    const e = thrown(() => sign(cert, keys[3]!));
    expect(e.code).toBe('KEY_INVALID');
    expect(e.message).toMatch(/does not belong to the certificate 'CN=release,O=tiu tests'/);
  });

  it('KEY_INVALID: encrypted, EC, small, missing and garbled keys', async () => {
    const cert = makeSigner('release', keys[2]!, root);
    const { createPrivateKey, generateKeyPairSync } = await import('node:crypto');
    const encrypted = createPrivateKey(keys[2]!.privateKeyPem).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString();
    const legacyEncrypted = createPrivateKey(keys[2]!.privateKeyPem).export({ type: 'pkcs1', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }).toString();
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const cases: [string, RegExp][] = [
      [encrypted, /^the signing key is encrypted/],
      [legacyEncrypted, /^the signing key is encrypted/],
      [ec, /is ec \(prime256v1\); tiu needs an RSA key/],
      [small, /1024 bits; tiu needs at least 2048/],
      [cert, /no private key \(found CERTIFICATE\)/],
      ['', /no private key \(found nothing\)/],
      ['-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n', /cannot be read/],
    ];
    for (const [keyPem, re] of cases) {
      const e = thrown(() => signManifest({ content: MANIFEST, keyPem, certPem: cert, signingTime: SIGNING_TIME }));
      expect(e.code).toBe('KEY_INVALID');
      expect(e.message).toMatch(re);
    }
  });

  it('KEY_INVALID: certificate that is not PEM (DER, key, garbage)', () => {
    const pem = makeSigner('release', keys[2]!, root);
    const derText = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64').toString('latin1');
    const cases: [string, RegExp][] = [
      [derText, /binary \(DER\)/],
      [keys[2]!.privateKeyPem, /holds no PEM certificate/],
      ['garbage', /holds no PEM certificate/],
      ['-----BEGIN CERTIFICATE-----\nMIIB\n', /no END line/],
    ];
    for (const [certPem, re] of cases) {
      const e = thrown(() => signManifest({ content: MANIFEST, keyPem: keys[2]!.privateKeyPem, certPem, signingTime: SIGNING_TIME }));
      expect(e.code).toBe('KEY_INVALID');
      expect(e.message).toMatch(re);
    }
    const chainErr = thrown(() => signManifest({ content: MANIFEST, keyPem: keys[2]!.privateKeyPem, certPem: pem, chainPem: 'nope', signingTime: SIGNING_TIME }));
    expect(chainErr.message).toMatch(/chain file holds no PEM certificate/);
  });
});

describe('generateDevKeys', () => {
  it('writes a CA, a signing cert and keyring that sign, verify, and satisfy openssl', async () => {
    await using d = await tempDir();
    const sys = testSystem();
    const out = join(d.path, 'keys');
    const fixed = new Date('2026-06-01T00:00:00Z');
    const k = await generateDevKeys({ outDir: out, commonName: 'dev signer', days: 10, now: fixed });
    for (const p of [k.caKey, k.signingKey]) expect((await stat(p)).mode & 0o777).toBe(0o600);
    expect((await stat(k.caCert)).mode & 0o077).toBe(0o044);
    expect(await readFile(k.keyring, 'utf8')).toBe(await readFile(k.caCert, 'utf8'));
    expect(k.chain).toBeUndefined();

    const der = signManifest({ content: MANIFEST, keyPem: await readFile(k.signingKey, 'utf8'), certPem: await readFile(k.signingCert, 'utf8'), signingTime: fixed });
    const v: VerifiedSignature = await verifySignedData(der, { keyringPem: await readFile(k.keyring, 'utf8'), now: new Date('2026-06-05T00:00:00Z') });
    expect(v.chain).toEqual(['CN=dev signer', 'CN=dev signer CA']);
    expect(v.signer.notAfter.toISOString()).toBe('2026-06-11T00:00:00.000Z');
    expect((await rejection(verifySignedData(der, { keyringPem: await readFile(k.keyring, 'utf8'), now: new Date('2026-06-12T00:00:00Z') }))).code).toBe('ARCHIVE_EXPIRED');

    const text = (await sys.run('openssl', ['x509', '-in', k.signingCert, '-noout', '-text'])).stdout;
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/Extended Key Usage:\s+E-mail Protection, Code Signing/);
    expect(text).toMatch(/Public-Key: \(3072 bit\)/);
    const caText = (await sys.run('openssl', ['x509', '-in', k.caCert, '-noout', '-text'])).stdout;
    expect(caText).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(caText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    const verify = await sys.run('openssl', ['verify', '-attime', String(Date.parse('2026-06-05') / 1000), '-purpose', 'smimesign', '-CAfile', k.keyring, k.signingCert]);
    expect(verify.stdout).toMatch(/: OK/);
    await sys.run('openssl', ['pkey', '-in', k.signingKey, '-noout']);

    // Never overwrites: a second run fails and leaves the files as they were.
    const before = await readFile(k.caKey, 'utf8');
    const e = await rejection(generateDevKeys({ outDir: out }));
    expect(e.code).toBe('INPUT_INVALID');
    expect(e.message).toMatch(/already exists/);
    expect(await readFile(k.caKey, 'utf8')).toBe(before);
  });

  it('with intermediate: writes chain.pem, and the chain verifies with tiu and openssl', async () => {
    await using d = await tempDir();
    const sys = testSystem();
    const k = await generateDevKeys({ outDir: d.path, intermediate: true });
    expect((await stat(k.intermediateKey!)).mode & 0o777).toBe(0o600);
    const der = signManifest({
      content: MANIFEST,
      keyPem: await readFile(k.signingKey, 'utf8'),
      certPem: await readFile(k.signingCert, 'utf8'),
      chainPem: await readFile(k.chain!, 'utf8'),
      signingTime: SIGNING_TIME,
    });
    const v = await verifySignedData(der, { keyringPem: await readFile(k.keyring, 'utf8') });
    expect(v.chain).toEqual(['CN=tiu development', 'CN=tiu development intermediate CA', 'CN=tiu development CA']);
    const r = await sys.run('openssl', ['verify', '-purpose', 'smimesign', '-CAfile', k.keyring, '-untrusted', k.chain!, k.signingCert]);
    expect(r.stdout).toMatch(/: OK/);
    // The intermediate has pathlen 0: it cannot issue further CAs.
    expect((await sys.run('openssl', ['x509', '-in', k.intermediateCert!, '-noout', '-text'])).stdout).toMatch(/CA:TRUE, pathlen:0/);
  });

  it('rejects a bad days value', async () => {
    await using d = await tempDir();
    expect((await rejection(generateDevKeys({ outDir: d.path, days: 0 }))).code).toBe('USAGE');
  });
});
