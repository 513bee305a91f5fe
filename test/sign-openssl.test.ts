/**
 * Interop with the real openssl CLI, both ways: openssl verifies what tiu signs (as RAUC
 * would), and tiu verifies what `openssl cms -sign` makes, with RSA and ECDSA keys. The
 * certificates are made with the openssl commands docs/trust.md tells users to run.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../src/core/errors.ts';
import { signManifest } from '../src/tiu/sign/sign.ts';
import { verifySignedData } from '../src/tiu/sign/verify.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();
const MANIFEST = Buffer.from(`${JSON.stringify({ format: 1, compatible: 'interop', version: '2.0', bytes: '\u0000\u00ff' })}\n`);
const SIGNING_TIME = new Date('2026-02-02T02:02:02Z');

type Alg = 'rsa' | 'ec' | 'rsa1024';
const NEWKEY: Record<Alg, string[]> = {
  rsa: ['-newkey', 'rsa:3072'],
  ec: ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'],
  rsa1024: ['-newkey', 'rsa:1024'],
};

let dir: { path: string } & AsyncDisposable;
const p = (name: string) => join(dir.path, name);

async function openssl(args: string[], input?: Buffer): Promise<string> {
  return (await sys.run('openssl', args, input ? { input } : {})).stdout;
}

/** A self-signed CA: `openssl req -x509` as in docs/trust.md. */
async function makeCa(name: string, alg: Alg = 'rsa', cn = `${name} CA`): Promise<void> {
  await openssl(['req', '-x509', ...NEWKEY[alg], '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`), '-subj', `/O=Interop/CN=${cn}`, '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

/** A certificate issued by `ca` with the given extension lines: `openssl req` + `openssl x509 -req`. */
async function issue(name: string, ca: string, ext: string[], alg: Alg = 'rsa', days = '30'): Promise<void> {
  await writeFile(p(`${name}.ext`), [...ext, 'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid'].join('\n') + '\n');
  await openssl(['req', '-new', ...NEWKEY[alg], '-nodes', '-keyout', p(`${name}.key`), '-subj', `/O=Interop/CN=${name}`, '-out', p(`${name}.csr`)]);
  await openssl(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.pem`), '-CAkey', p(`${ca}.key`), '-days', days, '-extfile', p(`${name}.ext`), '-out', p(`${name}.pem`)]);
}

const SIGNER_EXT = ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature', 'extendedKeyUsage = emailProtection, codeSigning'];
const INTER_EXT = ['basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign'];

/** `openssl cms -sign` as RAUC does it: binary, embedded content, sha256, DER. */
async function opensslSign(signer: string, extra: string[] = []): Promise<Buffer> {
  await writeFile(p('manifest.json'), MANIFEST);
  await openssl(['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-in', p('manifest.json'), '-signer', p(`${signer}.pem`), '-inkey', p(`${signer}.key`), '-out', p('sig.der'), ...extra]);
  return readFile(p('sig.der'));
}

/** `openssl cms -verify`; returns the content it outputs. */
async function opensslVerify(der: Buffer, ca: string, extra: string[] = []): Promise<{ ok: boolean; content: Buffer; stderr: string }> {
  await writeFile(p('ours.der'), der);
  const r = await sys.run('openssl', ['cms', '-verify', '-CAfile', p(`${ca}.pem`), '-inform', 'DER', '-in', p('ours.der'), '-out', p('content.out'), ...extra], { allowFailure: true });
  const content = r.exitCode === 0 ? await readFile(p('content.out')) : Buffer.alloc(0);
  return { ok: r.exitCode === 0, content, stderr: r.stderr };
}

async function pem(name: string): Promise<string> {
  return readFile(p(name.endsWith('.pem') || name.endsWith('.key') ? name : `${name}.pem`), 'utf8');
}

async function ourSign(signer: string, chain?: string): Promise<Buffer> {
  return signManifest({ content: MANIFEST, keyPem: await pem(`${signer}.key`), certPem: await pem(signer), chainPem: chain ? await pem(chain) : undefined, signingTime: SIGNING_TIME });
}

async function code(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (e) {
    if (e instanceof TiuError) return `${e.code}: ${e.message}`;
    throw e;
  }
}

beforeAll(async () => {
  dir = await tempDir();
  await makeCa('root');
  await makeCa('other');
  await issue('signer', 'root', SIGNER_EXT);
  await issue('inter', 'root', INTER_EXT);
  await issue('deep', 'inter', SIGNER_EXT);
  await issue('tls', 'root', ['keyUsage = critical, digitalSignature', 'extendedKeyUsage = serverAuth']);
  await issue('encrypt', 'root', ['keyUsage = critical, keyEncipherment', 'extendedKeyUsage = emailProtection']);
  await issue('codesign', 'root', ['keyUsage = critical, digitalSignature', 'extendedKeyUsage = codeSigning']);
  await issue('notca', 'root', ['basicConstraints = critical, CA:FALSE', 'keyUsage = critical, digitalSignature, keyCertSign']);
  await issue('undernotca', 'notca', SIGNER_EXT);
  await issue('weak', 'root', SIGNER_EXT, 'rsa1024');
  await makeCa('ecroot', 'ec');
  await issue('ecsigner', 'ecroot', SIGNER_EXT, 'ec');
  await issue('mixed', 'root', SIGNER_EXT, 'ec');
}, 120_000);

afterAll(async () => {
  await dir[Symbol.asyncDispose]();
});

describe('openssl verifies what tiu signs', () => {
  it('accepts our signature with the CA only and outputs exactly the content', async () => {
    const r = await opensslVerify(await ourSign('signer'), 'root');
    expect(r.stderr).toMatch(/Verification successful/);
    expect(r.content.equals(MANIFEST)).toBe(true);
  });

  it('accepts an intermediate chain from the embedded certificates alone', async () => {
    const der = await ourSign('deep', 'inter');
    const r = await opensslVerify(der, 'root');
    expect(r.ok, r.stderr).toBe(true);
    expect(r.content.equals(MANIFEST)).toBe(true);
    // openssl lists the embedded certificates: signer and intermediate, nothing else.
    const certs = await openssl(['cms', '-cmsout', '-inform', 'DER', '-in', p('ours.der'), '-print']);
    expect(certs.match(/subject: O=Interop, CN=/g)).toHaveLength(2);
  });

  it('without the intermediate embedded, openssl needs it in -CAfile (and tiu refuses)', async () => {
    const der = await ourSign('deep');
    expect((await opensslVerify(der, 'root')).ok).toBe(false);
    // openssl 3.0's cms -verify does not use -certfile for the chain, so give it as trusted.
    await writeFile(p('root+inter.pem'), (await pem('root')) + (await pem('inter')));
    const r = await opensslVerify(der, 'root+inter');
    expect(r.ok, r.stderr).toBe(true);
    expect(r.content.equals(MANIFEST)).toBe(true);
    expect(await code(verifySignedData(der, { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_UNTRUSTED/);
  });

  it('openssl rejects our signature under another CA (the negative control)', async () => {
    expect((await opensslVerify(await ourSign('signer'), 'other')).ok).toBe(false);
  });

  it('produces byte-identical output to a second run (reproducible)', async () => {
    expect((await ourSign('deep', 'inter')).equals(await ourSign('deep', 'inter'))).toBe(true);
  });
});

describe('tiu verifies what openssl signs', () => {
  it('accepts an RSA signature, reporting the same serial and fingerprint as openssl', async () => {
    const v = await verifySignedData(await opensslSign('signer'), { keyringPem: await pem('root') });
    expect(v.content.equals(MANIFEST)).toBe(true);
    expect(v.chain).toEqual(['CN=signer,O=Interop', 'CN=root CA,O=Interop']);
    const info = await openssl(['x509', '-in', p('signer.pem'), '-noout', '-serial', '-fingerprint', '-sha256', '-subject', '-nameopt', 'RFC2253']);
    expect(info).toContain(`serial=${v.signer.serial}\n`);
    expect(info).toContain(`sha256 Fingerprint=${v.signer.sha256Fingerprint}\n`);
    expect(info).toContain(`subject=${v.signer.subject}\n`);
  });

  it('accepts a chain passed with -certfile and refuses it without', async () => {
    const keyringPem = await pem('root');
    const v = await verifySignedData(await opensslSign('deep', ['-certfile', p('inter.pem')]), { keyringPem });
    expect(v.chain).toEqual(['CN=deep,O=Interop', 'CN=inter,O=Interop', 'CN=root CA,O=Interop']);
    expect(await code(verifySignedData(await opensslSign('deep'), { keyringPem }))).toMatch(/^ARCHIVE_UNTRUSTED: .*CN=inter,O=Interop/);
  });

  it('accepts signatures with a subjectKeyIdentifier signer id (-keyid) and with SHA-512', async () => {
    const keyringPem = await pem('root');
    expect((await verifySignedData(await opensslSign('signer', ['-keyid']), { keyringPem })).content.equals(MANIFEST)).toBe(true);
    await openssl(['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha512', '-in', p('manifest.json'), '-signer', p('signer.pem'), '-inkey', p('signer.key'), '-out', p('sha512.der')]);
    expect((await verifySignedData(await readFile(p('sha512.der')), { keyringPem })).content.equals(MANIFEST)).toBe(true);
  });

  it('verifies ECDSA (prime256v1) signatures, under an EC CA and under an RSA CA', async () => {
    const ec = await verifySignedData(await opensslSign('ecsigner'), { keyringPem: await pem('ecroot') });
    expect(ec.content.equals(MANIFEST)).toBe(true);
    expect(ec.chain).toEqual(['CN=ecsigner,O=Interop', 'CN=ecroot CA,O=Interop']);
    const mixed = await verifySignedData(await opensslSign('mixed'), { keyringPem: await pem('root') });
    expect(mixed.signer.commonName).toBe('mixed');
    // A flipped bit in an ECDSA signature (the last bytes) is caught.
    const der = await opensslSign('ecsigner');
    der[der.length - 2]! ^= 0x10;
    expect(await code(verifySignedData(der, { keyringPem: await pem('ecroot') }))).toMatch(/^ARCHIVE_SIGNATURE/);
  });

  it('tiu refuses to sign with an EC key, saying it needs RSA', async () => {
    expect(await code(ourSign('ecsigner'))).toMatch(/^KEY_INVALID: the signing key is ec \(prime256v1\); tiu needs an RSA key/);
  });

  it('ARCHIVE_KEY_USAGE: serverAuth-only and keyEncipherment-only signers; codeSigning-only is accepted', async () => {
    const keyringPem = await pem('root');
    expect(await code(verifySignedData(await opensslSign('tls'), { keyringPem }))).toMatch(/^ARCHIVE_KEY_USAGE: .*extendedKeyUsage \(serverAuth\) has neither emailProtection nor codeSigning/);
    expect(await code(verifySignedData(await opensslSign('encrypt'), { keyringPem }))).toMatch(/^ARCHIVE_KEY_USAGE: .*lacks digitalSignature/);
    expect(await code(verifySignedData(await opensslSign('codesign'), { keyringPem }))).toBe('OK');
    // openssl (like RAUC) refuses both with its default S/MIME purpose check.
    expect((await opensslVerify(await opensslSign('tls'), 'root')).ok).toBe(false);
  });

  it('ARCHIVE_UNTRUSTED: a non-CA certificate used as issuer; openssl agrees', async () => {
    const der = await opensslSign('undernotca', ['-certfile', p('notca.pem')]);
    expect(await code(verifySignedData(der, { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_UNTRUSTED: intermediate CA 'CN=notca,O=Interop' .*not a CA/);
    expect((await opensslVerify(der, 'root')).ok).toBe(false);
  });

  it('ARCHIVE_UNTRUSTED: a 1024-bit RSA signer', async () => {
    expect(await code(verifySignedData(await opensslSign('weak'), { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_UNTRUSTED: .*1024-bit RSA key/);
  });

  it('ARCHIVE_SIGNATURE: a detached signature (no embedded content)', async () => {
    await openssl(['cms', '-sign', '-binary', '-outform', 'DER', '-md', 'sha256', '-in', p('manifest.json'), '-signer', p('signer.pem'), '-inkey', p('signer.key'), '-out', p('detached.der')]);
    expect(await code(verifySignedData(await readFile(p('detached.der')), { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_SIGNATURE: .*no embedded content/);
  });

  it('ARCHIVE_SIGNATURE: signed without the signer certificate (-nocerts)', async () => {
    expect(await code(verifySignedData(await opensslSign('signer', ['-nocerts']), { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_SIGNATURE: .*not embedded/);
  });

  it('ARCHIVE_SIGNATURE: two signers', async () => {
    await openssl(['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-in', p('manifest.json'), '-signer', p('signer.pem'), '-inkey', p('signer.key'), '-signer', p('codesign.pem'), '-inkey', p('codesign.key'), '-out', p('two.der')]);
    expect(await code(verifySignedData(await readFile(p('two.der')), { keyringPem: await pem('root') }))).toMatch(/^ARCHIVE_SIGNATURE: .*2 signers/);
  });
});
