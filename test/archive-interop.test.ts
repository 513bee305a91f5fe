/**
 * Interop: every part of a tiu archive is checked by the standard tool for it, not by tiu.
 * veritysetup verifies the hash tree in place and recomputes it bit for bit; openssl verifies
 * the CMS and returns the manifest; a manifest signed by `openssl cms -sign` and spliced into
 * the archive is accepted by tiu; unsquashfs lists the image; the kernel mounts it.
 * Runs on a small tree with every file type and on a real Debian tree.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  debianTree, archiveParts, buildTypesTree, copyFlipped, copyPrefix, createArchive, expectOk, makeKeys, mountSquashfs, readAt,
  sha256File, spliceSignature, tiu, ODD, type ArchiveParts, type Keys,
} from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';

let work: { path: string } & AsyncDisposable;
let keys: Keys;
const w = (name: string) => join(work.path, name);

/** Trees under test: name -> { tree, archive, parts }. */
const subjects: Record<string, { tree: string; archive: string; parts: ArchiveParts }> = {};

beforeAll(async () => {
  work = await tempDir('tiu-interop-');
  keys = await makeKeys(w('keys'));
  const small = await buildTypesTree(w('small'));
  const debian = debianTree();
  for (const [name, tree] of [['small', small], ['debian', debian]] as const) {
    const archive = await createArchive({ tree, out: w(`${name}.tiu`), keys });
    subjects[name] = { tree, archive, parts: await archiveParts(archive) };
  }
}, 600_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

async function run(file: string, args: string[]) {
  return execa(file, args, { reject: false, encoding: 'buffer' });
}
const text = (b: unknown) => Buffer.from(b as Uint8Array).toString('latin1');

describe.each(['small', 'debian'])('%s tree', (name) => {
  const s = () => subjects[name]!;

  it('veritysetup verify accepts the hash tree in place, and rejects a flipped data byte', async () => {
    const { archive, parts } = s();
    const v = parts.manifest.verity;
    // Two hash levels at least (more than 128 data blocks), so the tree's layout is exercised.
    expect(v.dataSize / 4096).toBeGreaterThan(128);
    const args = (file: string) => ['verify', '--no-superblock', `--hash-offset=${v.hashOffset}`, `--salt=${v.salt}`, `--data-blocks=${v.dataSize / 4096}`, file, file, v.rootHash];
    const ok = await run('veritysetup', args(archive));
    expect(ok.exitCode, text(ok.stderr)).toBe(0);
    await copyFlipped(archive, w(`${name}-flipped.tiu`), Math.floor(parts.manifest.image.size / 2));
    const bad = await run('veritysetup', args(w(`${name}-flipped.tiu`)));
    expect(bad.exitCode).not.toBe(0);
  });

  it('veritysetup format on the data part computes the same root hash and the same tree bytes', async () => {
    const { archive, parts } = s();
    const v = parts.manifest.verity;
    await copyPrefix(archive, w(`${name}-data.img`), v.dataSize);
    await writeFile(w(`${name}-hash.img`), '');
    const r = await run('veritysetup', ['format', '--no-superblock', `--salt=${v.salt}`, `--data-blocks=${v.dataSize / 4096}`, w(`${name}-data.img`), w(`${name}-hash.img`)]);
    expect(r.exitCode, text(r.stderr)).toBe(0);
    const root = /^Root hash:\s+([0-9a-f]{64})$/m.exec(text(r.stdout));
    expect(root, text(r.stdout)).not.toBeNull();
    expect(v.rootHash).toBe(root![1]);
    const theirs = await readFile(w(`${name}-hash.img`));
    expect(theirs.length).toBe(v.hashSize);
    const ours = await readAt(archive, v.hashOffset, v.hashSize);
    expect(ours.equals(theirs)).toBe(true);
    // The data part is the image followed by zero padding.
    const pad = await readAt(archive, parts.manifest.image.size, v.dataSize - parts.manifest.image.size);
    expect(pad.every((x) => x === 0)).toBe(true);
  });

  it('openssl cms -verify accepts the signature and outputs exactly the manifest', async () => {
    const { archive, parts } = s();
    await writeFile(w(`${name}-sig.der`), parts.der);
    const r = await run('openssl', ['cms', '-verify', '-CAfile', keys.keyring, '-inform', 'DER', '-binary', '-in', w(`${name}-sig.der`), '-out', w(`${name}-manifest.out`)]);
    expect(r.exitCode, text(r.stderr)).toBe(0);
    const content = await readFile(w(`${name}-manifest.out`));
    // What tiu itself reports as the manifest of this archive...
    const info = await tiu(['info', archive, '--keyring', keys.keyring, '--json', '--no-verify-data']);
    expectOk(info);
    const manifest = JSON.parse(info.stdout).manifest;
    expect(JSON.parse(content.toString('utf8'))).toEqual(manifest);
    // ...and byte for byte the canonical form docs/archive-format.md describes.
    expect(content.toString('utf8')).toBe(`${JSON.stringify(manifest, null, 2)}\n`);
    expect(manifest.verity.rootHash).toBe(parts.manifest.verity.rootHash);
  });

  it('a manifest signed by openssl cms -sign and spliced into the archive is accepted by tiu', async () => {
    const { archive, parts } = s();
    await writeFile(w(`${name}-m.json`), parts.manifestBytes);
    const r = await run('openssl', ['cms', '-sign', '-binary', '-nodetach', '-outform', 'DER', '-md', 'sha256', '-signer', keys.signingCert, '-inkey', keys.signingKey, '-in', w(`${name}-m.json`), '-out', w(`${name}-openssl.der`)]);
    expect(r.exitCode, text(r.stderr)).toBe(0);
    const der = await readFile(w(`${name}-openssl.der`));
    expect(der.equals(parts.der)).toBe(false);
    expect(der.includes(parts.manifestBytes)).toBe(true);
    const spliced = w(`${name}-openssl.tiu`);
    await spliceSignature(archive, der, spliced);
    const info = await tiu(['info', spliced, '--keyring', keys.keyring, '--json']);
    expectOk(info);
    const j = JSON.parse(info.stdout);
    expect(j.size).toBe(parts.sigOffset + der.length + 8);
    expect(j.signature.ok).toBe(true);
    expect(j.verity.ok).toBe(true);
    expect(j.manifest).toEqual(parts.manifest);
    expectOk(await tiu(['verify', spliced, '--keyring', keys.keyring]));
  });

  it('unsquashfs -lls lists the image part', async () => {
    const { archive, parts } = s();
    const r = await run('unsquashfs', ['-lls', archive]);
    expect(r.exitCode, text(r.stderr)).toBe(0);
    const lines = text(r.stdout).split('\n').filter((l) => / squashfs-root/.test(l));
    const has = (re: RegExp) => expect(lines.some((l) => re.test(l)), re.source).toBe(true);
    has(/^-rw-r--r-- root\/root +\d+ .* squashfs-root\/usr\/lib\/tiu\/image\/index\.jsonl$/);
    // Excluded directories are kept (mount points), empty: not even dot files (/root/.ssh!).
    for (const e of parts.manifest.excluded) {
      const dir = e.replace(/^\/+/, '');
      expect(lines.filter((l) => l.includes(` squashfs-root/${dir}/`)), e).toEqual([]);
    }
    has(/^d.* squashfs-root\/var$/);
    if (name === 'small') {
      has(/^-rwsr-xr-x root\/root +\d+ .* squashfs-root\/usr\/bin\/suid-tool$/);
      has(/^crw-r--r-- root\/root +1, +3 .* squashfs-root\/dev-nodes\/null$/);
      has(/^brw-r--r-- root\/root +7, +9 .* squashfs-root\/dev-nodes\/loop9$/);
      has(/^p.* squashfs-root\/dev-nodes\/fifo$/);
      has(/^s.* squashfs-root\/dev-nodes\/socket$/);
      has(/^lrwxrwxrwx .* squashfs-root\/links\/relative -> \.\.\/usr\/lib\/libhard\.so\.1$/);
      has(/^-rw-r--r-- 1234\/5678 .* squashfs-root\/etc\/owned$/);
      has(/^-rw-r--r-- root\/root +1048576 .* squashfs-root\/usr\/share\/data\/random\.bin$/);
      has(/^-rw-r--r-- .* squashfs-root\/odd\/bad\xffname$/);
    } else {
      // One line per index entry plus the index itself (no file name in Debian has a newline).
      expect(lines.length).toBe(parts.manifest.index.entries + 1);
    }
  });

  it('the kernel mounts the image read-only through a loop device and serves the same bytes', async () => {
    const { archive, tree, parts } = s();
    await using m = await mountSquashfs(archive);
    const files = name === 'small' ? ['usr/share/data/random.bin', 'usr/share/data/sparse.img', 'etc/hostname', ODD.nonUtf8, ODD.newline] : ['etc/os-release', 'usr/bin/bash', 'usr/lib/x86_64-linux-gnu/libc.so.6'];
    for (const f of files) {
      const img = Buffer.from(`${m.dir}/${f}`, 'latin1');
      const src = Buffer.from(`${tree}/${f}`, 'latin1');
      expect(await sha256File(img), f).toBe(await sha256File(src));
    }
    // The index is in the image, and its digest is the one the signed manifest names.
    expect(await sha256File(join(m.dir, parts.manifest.index.path))).toBe(parts.manifest.index.sha256);
    // Read-only.
    await expect(writeFile(join(m.dir, 'etc/new-file'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
  });
});
