/**
 * `tiu keygen` -> `tiu create` -> `tiu verify` / `tiu info`, with an intermediate CA passed as
 * --chain: openssl agrees the keys form a chain, the archive verifies, `tiu info --json` is JSON
 * with the manifest, and without the chain the same signer is not trusted.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { archiveParts, buildTypesTree, createArchive, expectCliError, expectOk, makeKeys, runCreate, sha256File, tiu, type Keys } from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';

let work: { path: string } & AsyncDisposable;
let keys: Keys;
let tree: string;
const w = (name: string) => join(work.path, name);

beforeAll(async () => {
  work = await tempDir('tiu-keygen-');
  keys = await makeKeys(w('keys'), { intermediate: true, cn: 'release signing' });
  tree = await buildTypesTree(w('tree'));
}, 300_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

const certCount = async (pem: string) => ((await readFile(pem, 'utf8')).match(/-----BEGIN CERTIFICATE-----/g) ?? []).length;

describe('tiu keygen --intermediate', () => {
  it('writes a CA, an intermediate and a signing certificate that openssl verifies as a chain', async () => {
    expect(await certCount(keys.keyring)).toBe(1);
    expect(await certCount(keys.chain!)).toBe(1);
    expect(await readFile(keys.keyring, 'utf8')).toBe(await readFile(keys.caCert, 'utf8'));
    const r = await execa('openssl', ['verify', '-CAfile', keys.keyring, '-untrusted', keys.chain!, '-purpose', 'smimesign', keys.signingCert], { reject: false });
    expect(r.stdout + r.stderr).toMatch(/: OK$/m);
    expect(r.exitCode).toBe(0);
    // Without the intermediate the signing certificate does not chain to the CA.
    const alone = await execa('openssl', ['verify', '-CAfile', keys.keyring, keys.signingCert], { reject: false });
    expect(alone.exitCode).not.toBe(0);
    for (const k of [keys.caKey, keys.intermediateKey!, keys.signingKey]) expect((await stat(k)).mode & 0o777, k).toBe(0o600);
  });

  it('never overwrites: a second run into the same directory fails and leaves the keys as they were', async () => {
    const before = await sha256File(keys.signingKey);
    const line = expectCliError(await tiu(['keygen', '-o', keys.dir, '--intermediate']), 'INPUT_INVALID');
    expect(line).toContain('already exists');
    expect(await sha256File(keys.signingKey)).toBe(before);
  });

  it('rejects --days 0 as a usage error', async () => {
    expectCliError(await tiu(['keygen', '-o', w('days0'), '--days', '0']), 'USAGE');
  });
});

describe('create with --chain, then verify and info', () => {
  let archive: string;
  let createdRoot: string;

  beforeAll(async () => {
    const r = await runCreate({ tree, out: w('chain.tiu'), keys });
    expectOk(r);
    createdRoot = /verity root hash ([0-9a-f]{64})/.exec(r.stdout)?.[1] ?? '';
    archive = w('chain.tiu');
  }, 120_000);

  it('tiu verify accepts it and names the signer', async () => {
    const r = await tiu(['verify', archive, '--keyring', keys.keyring, '--compatible', 'test-x86_64']);
    expectOk(r);
    expect(r.stdout).toMatch(/: OK \(test-x86_64 1\.0, signed by release signing, \d+ data blocks verified\)/);
  });

  it('tiu info --json is JSON with the manifest, the verified chain and the verity result', async () => {
    const r = await tiu(['info', archive, '--keyring', keys.keyring, '--json']);
    expectOk(r);
    const j = JSON.parse(r.stdout);
    expect(j.manifest.verity.rootHash).toMatch(/^[0-9a-f]{64}$/);
    expect(j.manifest.verity.rootHash).toBe(createdRoot);
    expect(j.manifest.verity.rootHash).toBe((await archiveParts(archive)).manifest.verity.rootHash);
    expect(j.signature.ok).toBe(true);
    expect(j.signature.chain).toEqual(['CN=release signing', 'CN=release signing intermediate CA', 'CN=release signing CA']);
    expect(j.verity.ok).toBe(true);
    expect(j.size).toBe((await stat(archive)).size);
  });

  it('tiu info (text) shows the version, the root hash and the verified data', async () => {
    const r = await tiu(['info', archive, '--keyring', keys.keyring]);
    expectOk(r);
    expect(r.stdout).toMatch(/^Version +1\.0$/m);
    expect(r.stdout).toContain(createdRoot);
    expect(r.stdout).toMatch(/^Signature +verified$/m);
    expect(r.stdout).toMatch(/^Data blocks +verified against the verity tree$/m);
  });

  it('openssl finds the intermediate in the CMS (only the CA given)', async () => {
    await writeFile(w('chain.der'), (await archiveParts(archive)).der);
    const r = await execa('openssl', ['cms', '-verify', '-CAfile', keys.keyring, '-inform', 'DER', '-binary', '-in', w('chain.der'), '-out', w('chain.manifest')], { reject: false });
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it('signed without --chain, the same signer does not chain to the keyring: ARCHIVE_UNTRUSTED', async () => {
    const noChain = await createArchive({ tree, out: w('nochain.tiu'), keys: { ...keys, chain: undefined } });
    const line = expectCliError(await tiu(['verify', noChain, '--keyring', keys.keyring]), 'ARCHIVE_UNTRUSTED');
    expect(line).toContain('release signing intermediate CA');
    expectCliError(await tiu(['info', noChain, '--keyring', keys.keyring]), 'ARCHIVE_UNTRUSTED');
  });
});
