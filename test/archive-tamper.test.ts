/**
 * Tamper matrix: from one good archive, copies damaged in each region (image, padding, hash tree,
 * manifest, signature, trailer), cut short, with a forged trailer, signed by a key the keyring
 * does not trust, by an expired certificate, or by the trusted key over a lying manifest.
 * For EACH: `tiu verify` exits with the specific code (and its exit code) and one error line,
 * no stack trace; `tiu info` fails the same way. Never exit 70 (our bug), never success.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import forge from 'node-forge';
import { ERROR_CODES, type ErrorCode } from '../src/core/errors.ts';
import { encodeTrailer } from '../src/tiu/archive/layout.ts';
import { issueCertificate, certificateToPem, rsaKeyPair } from '../src/tiu/sign/certs.ts';
import { OID } from '../src/tiu/sign/certinfo.ts';
import {
  archiveParts, buildTypesTree, copyFlipped, copyPrefix, createArchive, expectCliError, expectOk, makeKeys, readAt, spliceSignature, tiu,
  type ArchiveParts, type Keys,
} from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';
import { openArchive } from '../src/tiu/archive/open.ts';
import { createSystem } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';

let work: { path: string } & AsyncDisposable;
let keys: Keys;
let otherKeys: Keys;
let good: string;
let parts: ArchiveParts;
const w = (name: string) => join(work.path, name);

beforeAll(async () => {
  work = await tempDir('tiu-tamper-');
  [keys, otherKeys] = await Promise.all([makeKeys(w('keys')), makeKeys(w('other-keys'), { cn: 'someone else' })]);
  const tree = await buildTypesTree(w('tree'));
  good = await createArchive({ tree, out: w('good.tiu'), keys });
  parts = await archiveParts(good);
}, 300_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

/** `openssl cms -sign` over `content` with a certificate and key (as RAUC and release tooling sign). */
async function opensslSign(content: Buffer, cert: string, key: string, name: string): Promise<Buffer> {
  await writeFile(w(`${name}.content`), content);
  const r = await execa('openssl', ['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-signer', cert, '-inkey', key, '-in', w(`${name}.content`), '-out', w(`${name}.der`)], { reject: false });
  if (r.exitCode !== 0) throw new Error(`openssl cms -sign: ${r.stderr}`);
  return readFile(w(`${name}.der`));
}

/** A signing certificate from the trusted CA that expired yesterday (valid for 30 days before). */
async function expiredSigner(): Promise<{ cert: string; key: string }> {
  const caCert = forge.pki.certificateFromPem(await readFile(keys.caCert, 'utf8'));
  const caKey = forge.pki.privateKeyFromPem(await readFile(keys.caKey, 'utf8'));
  const pair = rsaKeyPair(2048);
  const day = 86_400_000;
  const cert = issueCertificate({
    subject: { CN: 'expired signer' },
    publicKey: pair.forgePublic,
    issuer: { cert: caCert, key: caKey },
    notBefore: new Date(Date.now() - 31 * day),
    notAfter: new Date(Date.now() - day),
    ca: false,
    keyUsage: ['digitalSignature'],
    extKeyUsage: [OID.ekuEmailProtection, OID.ekuCodeSigning],
  });
  await mkdir(w('expired'), { recursive: true });
  await writeFile(w('expired/cert.pem'), certificateToPem(cert));
  await writeFile(w('expired/key.pem'), pair.privateKeyPem);
  return { cert: w('expired/cert.pem'), key: w('expired/key.pem') };
}

/** The manifest with one field changed, as canonical JSON (what tiu create would have written). */
function lyingManifest(change: (m: Record<string, any>) => void): Buffer {
  const m = JSON.parse(parts.manifestBytes.toString('utf8'));
  change(m);
  return Buffer.from(`${JSON.stringify(m, null, 2)}\n`);
}

/**
 * docs/archive-format.md, "Reading an archive" step 1, applied to the last 8 bytes of a file that
 * was cut short: what those bytes now say decides the code. (With a random signature the top byte
 * is non-zero 255 times in 256 and the size is then far over 64 KiB.)
 */
async function expectedForCut(file: string, size: number): Promise<ErrorCode> {
  const v = (await readAt(file, size - 8, 8)).readBigUInt64BE(0);
  const sigOk = v !== 0n && v <= 65536n && (BigInt(size) - 8n - v) % 4096n === 0n && BigInt(size) - 8n - v >= 4096n;
  // A bad trailer in a file shorter than its squashfs image and hash tree: truncated, whatever the bytes.
  if (!sigOk && size < m().verity.hashOffset + m().verity.hashSize + 9) return 'ARCHIVE_TRUNCATED';
  if (v === 0n || v > 65536n) return 'ARCHIVE_FORMAT';
  const sigOffset = BigInt(size) - 8n - v;
  if (sigOffset < 4096n || sigOffset % 4096n !== 0n) return 'ARCHIVE_TRUNCATED';
  return 'ARCHIVE_SIGNATURE';
}

interface Case {
  name: string;
  /** Writes the damaged archive to `out`; returns the expected code if it depends on the bytes. */
  make: (out: string) => Promise<ErrorCode | void>;
  code?: ErrorCode;
  verifyArgs?: string[];
  /** `tiu info` checks no compatible string: it shows the archive. */
  infoSucceeds?: boolean;
}

const flip = (offset: () => number) => (out: string) => copyFlipped(good, out, offset());

/**
 * What the device side's opening gives (tiu extract and update): the archive opened with a System,
 * so that `veritysetup verify` checks the blocks in a child process, started before the signature
 * is checked. Returns the error (or undefined) and the commands it ran, from its debug log.
 */
async function deviceOpen(file: string, compatible?: string): Promise<{ error?: { code?: string; message: string }; log: string[] }> {
  const log: string[] = [];
  const sys = createSystem(createLogger('debug', (line) => void log.push(line)));
  try {
    await using a = await openArchive(file, { keyringPem: await readFile(keys.keyring, 'utf8'), compatible, sys });
    await a.verifyData();
    return { log };
  } catch (e) {
    return { error: e as { code?: string; message: string }, log };
  }
}

/** Every veritysetup started had ended when the call returned (none left running). */
function expectNoneRunning(log: string[]): void {
  const started = log.filter((l) => /run: veritysetup verify/.test(l)).length;
  const ended = log.filter((l) => /exit \S+: veritysetup verify/.test(l)).length;
  expect(ended).toBe(started);
}
const m = () => parts.manifest;

const CASES: Case[] = [
  { name: 'squashfs superblock (offset 10)', make: flip(() => 10), code: 'ARCHIVE_VERITY' },
  { name: 'squashfs data (middle of the image)', make: flip(() => Math.floor(m().image.size / 2)), code: 'ARCHIVE_VERITY' },
  {
    name: 'zero padding after the image',
    make: async (out) => {
      expect(m().verity.dataSize - m().image.size).toBeGreaterThan(1);
      await copyFlipped(good, out, m().image.size + 1);
    },
    code: 'ARCHIVE_VERITY',
  },
  { name: 'hash tree, first byte', make: flip(() => m().verity.hashOffset), code: 'ARCHIVE_VERITY' },
  // The last byte of the tree is zero padding of its last block, which tiu checks too.
  { name: 'hash tree, last byte', make: flip(() => m().verity.hashOffset + m().verity.hashSize - 1), code: 'ARCHIVE_VERITY' },
  {
    name: 'manifest inside the CMS content',
    make: async (out) => {
      const at = parts.der.indexOf(parts.manifestBytes);
      expect(at).toBeGreaterThan(0);
      // Inside the value of "version": the JSON stays valid, only the signature can tell.
      const inVersion = parts.manifestBytes.indexOf('"version": "1.0"') + '"version": "1'.length;
      await copyFlipped(good, out, parts.sigOffset + at + inVersion, 0x02);
      expect((await readAt(out, parts.sigOffset + at + inVersion - 1, 3)).toString()).toBe('1,0');
    },
    code: 'ARCHIVE_SIGNATURE',
  },
  { name: 'signature value (last byte of the CMS)', make: flip(() => parts.sigOffset + parts.sigSize - 1), code: 'ARCHIVE_SIGNATURE' },
  { name: 'signature value (8 bytes before the end of the CMS)', make: flip(() => parts.sigOffset + parts.sigSize - 8), code: 'ARCHIVE_SIGNATURE' },
  { name: 'trailer, lowest byte (size off by one)', make: flip(() => parts.size - 1), code: 'ARCHIVE_TRUNCATED' },
  { name: 'trailer, highest byte (size huge)', make: flip(() => parts.size - 8), code: 'ARCHIVE_FORMAT' },
  { name: 'cut by 1 byte', make: async (out) => (await copyPrefix(good, out, parts.size - 1), expectedForCut(out, parts.size - 1)) },
  { name: 'cut in half', make: async (out) => (await copyPrefix(good, out, Math.floor(parts.size / 2)), expectedForCut(out, Math.floor(parts.size / 2))) },
  { name: 'cut to the trailer alone', make: (out) => writeFile(out, encodeTrailer(parts.sigSize)), code: 'ARCHIVE_TRUNCATED' },
  { name: 'empty file', make: (out) => writeFile(out, ''), code: 'ARCHIVE_TRUNCATED' },
  {
    name: 'trailer points outside the file',
    // One block and a trailer claiming 64 KiB of signature: allowed size, but not in this file.
    make: (out) => copyPrefix(good, out, 4096, encodeTrailer(65536)),
    code: 'ARCHIVE_TRUNCATED',
  },
  { name: 'trailer with size 0', make: (out) => copyPrefix(good, out, parts.size - 8, encodeTrailer(0)), code: 'ARCHIVE_FORMAT' },
  {
    name: 'signature over 64 KiB (forged trailer, 4096-aligned start)',
    // Claims the CMS starts 64 KiB earlier than it does: aligned, inside the file, too big.
    make: (out) => copyPrefix(good, out, parts.size - 8, encodeTrailer(parts.sigSize + 65536)),
    code: 'ARCHIVE_FORMAT',
  },
  {
    name: 'signature over 64 KiB (a real CMS by the trusted key)',
    make: async (out) => {
      // The manifest followed by 70,000 spaces is still the same JSON; the CMS is then > 64 KiB.
      const der = await opensslSign(Buffer.concat([parts.manifestBytes, Buffer.alloc(70_000, ' ')]), keys.signingCert, keys.signingKey, 'big');
      expect(der.length).toBeGreaterThan(65536);
      await spliceSignature(good, der, out);
    },
    code: 'ARCHIVE_FORMAT',
  },
  {
    name: 'signature that is not CMS (trailer moved onto the hash tree)',
    make: (out) => copyPrefix(good, out, m().verity.hashOffset + 4096, encodeTrailer(4096)),
    code: 'ARCHIVE_SIGNATURE',
  },
  {
    name: 'certificate that does not chain to the keyring (another tiu keygen CA)',
    make: async (out) => spliceSignature(good, await opensslSign(parts.manifestBytes, otherKeys.signingCert, otherKeys.signingKey, 'other'), out),
    code: 'ARCHIVE_UNTRUSTED',
  },
  {
    name: 'expired signing certificate issued by the trusted CA',
    make: async (out) => {
      const e = await expiredSigner();
      await spliceSignature(good, await opensslSign(parts.manifestBytes, e.cert, e.key, 'expired'), out);
    },
    code: 'ARCHIVE_EXPIRED',
  },
  {
    name: 'trusted signature over a manifest whose hash tree size lies',
    make: async (out) => spliceSignature(good, await opensslSign(lyingManifest((x) => (x.verity.hashSize -= 4096)), keys.signingCert, keys.signingKey, 'layout'), out),
    code: 'ARCHIVE_MANIFEST',
  },
  {
    name: 'trusted signature over a manifest with an unknown key',
    make: async (out) => spliceSignature(good, await opensslSign(lyingManifest((x) => (x.extra = true)), keys.signingCert, keys.signingKey, 'unknown-key'), out),
    code: 'ARCHIVE_MANIFEST',
  },
  {
    name: 'trusted signature over a manifest with another root hash',
    make: async (out) => spliceSignature(good, await opensslSign(lyingManifest((x) => (x.verity.rootHash = 'ab'.repeat(32))), keys.signingCert, keys.signingKey, 'roothash'), out),
    code: 'ARCHIVE_VERITY',
  },
  {
    name: 'trusted signature over content that is not JSON',
    make: async (out) => spliceSignature(good, await opensslSign(Buffer.from('not a manifest\n'), keys.signingCert, keys.signingKey, 'notjson'), out),
    code: 'ARCHIVE_MANIFEST',
  },
  { name: 'wrong compatible (tiu verify --compatible other)', make: (out) => copyPrefix(good, out, parts.size), code: 'ARCHIVE_COMPATIBLE', verifyArgs: ['--compatible', 'other'], infoSucceeds: true },
];

describe('the good archive', () => {
  it('verifies and shows (so every failure below is caused by the damage)', async () => {
    const [v, i, d] = await Promise.all([tiu(['verify', good, '--keyring', keys.keyring, '--compatible', 'test-x86_64']), tiu(['info', good, '--keyring', keys.keyring]), deviceOpen(good, 'test-x86_64')]);
    expect(d.error).toBeUndefined();
    // (the blocks were checked by veritysetup, which said yes)
    expect(d.log.filter((l) => /exit 0: veritysetup verify/.test(l))).toHaveLength(1);
    expectOk(v);
    expect(v.stdout).toMatch(/: OK \(/);
    expectOk(i);
    expect(i.stdout).toContain('Data blocks   verified against the verity tree');
  });
});

describe('tamper matrix', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const file = w(`case-${CASES.indexOf(c)}.tiu`);
    const computed = await c.make(file);
    const code = c.code ?? computed;
    expect(code, 'the case names its expected code').toBeDefined();
    const [verify, info, device] = await Promise.all([
      tiu(['verify', file, '--keyring', keys.keyring, ...(c.verifyArgs ?? [])]),
      tiu(['info', file, '--keyring', keys.keyring]),
      deviceOpen(file, c.verifyArgs?.[1]),
    ]);
    // The device side (veritysetup in a child, from before the signature is checked) rejects it
    // the same way, and leaves no veritysetup running when the signature fails.
    expect(device.error?.code, device.error?.message).toBe(code);
    expectNoneRunning(device.log);
    // (a signer the keyring does not trust: the check had started from the parsed manifest; it
    // ended, or was stopped, before the error came; its result did not count)
    if (code === 'ARCHIVE_UNTRUSTED') expect(device.log.some((l) => /run: veritysetup verify/.test(l)), device.log.join('\n')).toBe(true);
    if (code === 'ARCHIVE_VERITY') {
      // (veritysetup found it; tiu's own verifier then named the block and where)
      expect(device.log.some((l) => /exit [12]: veritysetup verify/.test(l)), device.log.join('\n')).toBe(true);
      expect(device.log.some((l) => /could not check/.test(l)), device.log.join('\n')).toBe(false);
      expect(device.error!.message).toMatch(/verity: (data|hash) block \d+.* \(byte offset \d+\) (does not match|has non-zero padding)/);
    }
    const line = expectCliError(verify, code!);
    expect(verify.stdout).not.toMatch(/OK/);
    expect(line).not.toMatch(/internal error/);
    if (c.infoSucceeds) {
      expectOk(info);
    } else {
      expect(info.exitCode, info.stderr).not.toBe(0);
      expect(info.exitCode, info.stderr).not.toBe(ERROR_CODES.INTERNAL.exit);
      expectCliError(info, code!);
    }
  });
});

describe('the device side without veritysetup', () => {
  it('checks every block in this process: a flipped data byte is still found and named', async () => {
    const file = w('no-veritysetup.tiu');
    await copyFlipped(good, file, Math.floor(m().image.size / 2));
    const path = process.env.PATH;
    process.env.PATH = w('empty-bin');
    let r;
    try {
      r = await deviceOpen(file);
    } finally {
      process.env.PATH = path;
    }
    expect(r.log.some((l) => /run: veritysetup verify/.test(l))).toBe(true);
    expect(r.error?.code).toBe('ARCHIVE_VERITY');
    expect(r.error?.message).toMatch(/verity: data block \d+ \(byte offset \d+\) does not match the hash tree/);
  });
});

describe('a cut-off download', () => {
  it('is reported as truncated with its size, not as the image bytes read as a trailer', async () => {
    const file = w('cut-90.tiu');
    const size = Math.floor(parts.size * 0.9);
    await copyPrefix(good, file, size);
    const r = await tiu(['verify', file, '--keyring', keys.keyring]);
    const line = expectCliError(r, 'ARCHIVE_TRUNCATED');
    const min = m().verity.hashOffset + m().verity.hashSize + 9;
    expect(line).toContain(`archive is truncated (${size} of at least ${min} bytes); download it again`);
    expect(line).not.toMatch(/signature size/);
  });
});
