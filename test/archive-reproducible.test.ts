/**
 * Reproducibility: `tiu create` twice on the same tree with the same SOURCE_DATE_EPOCH gives
 * byte-identical archives (also from a copy of the tree elsewhere, and on the Debian tree, built
 * concurrently); another epoch, or none (random salt), gives a different archive.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { debianTree, archiveParts, buildTypesTree, createArchive, makeKeys, sha256File, EPOCH, type Keys } from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';

let work: { path: string } & AsyncDisposable;
let keys: Keys;
let tree: string;
let debian: string;
const w = (name: string) => join(work.path, name);

beforeAll(async () => {
  work = await tempDir('tiu-repro-');
  keys = await makeKeys(w('keys'));
  tree = await buildTypesTree(w('tree'));
  debian = debianTree();
  for (const d of ['a', 'b', 'c', 'd', 'e', 'f']) await mkdir(w(d));
}, 600_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

describe('reproducible archives', () => {
  it('same tree, same SOURCE_DATE_EPOCH: byte-identical, also from a copy of the tree elsewhere', async () => {
    const a = await createArchive({ tree, out: w('a/os.tiu'), keys });
    const b = await createArchive({ tree, out: w('b/other-name.tiu'), keys });
    await execa('cp', ['-a', tree, w('tree-copy')]);
    const c = await createArchive({ tree: w('tree-copy'), out: w('c/os.tiu'), keys });
    const sha = await sha256File(a);
    expect(await sha256File(b)).toBe(sha);
    expect(await sha256File(c)).toBe(sha);
    const m = (await archiveParts(a)).manifest;
    expect(m.created).toBe(new Date(EPOCH * 1000).toISOString().replace('.000Z', 'Z'));
  });

  it('a tarball of the tree (owners, xattrs, ACLs kept) gives the same archive as the directory', async () => {
    // tar cannot carry sockets: compare with a copy of the tree without its socket. (--sparse:
    // the index records sparseness, and tar would otherwise store the holes as zeros.)
    const dir = w('tree-nosocket');
    await execa('cp', ['-a', tree, dir]);
    await execa('rm', [join(dir, 'dev-nodes/socket')]);
    await execa('tar', ['--create', '--file', w('tree.tar.zst'), '--zstd', '--sparse', '--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner', '-C', dir, '.']);
    const fromDir = await createArchive({ tree: dir, out: w('g-dir.tiu'), keys });
    const fromTar = await createArchive({ tree: w('tree.tar.zst'), out: w('g-tar.tiu'), keys });
    expect((await archiveParts(fromTar)).manifest.index.sha256).toBe((await archiveParts(fromDir)).manifest.index.sha256);
    expect(await sha256File(fromTar)).toBe(await sha256File(fromDir));
  });

  it('another SOURCE_DATE_EPOCH gives another archive', async () => {
    const a = await createArchive({ tree, out: w('d/os.tiu'), keys });
    const b = await createArchive({ tree, out: w('d/later.tiu'), keys, epoch: EPOCH + 1 });
    expect(await sha256File(b)).not.toBe(await sha256File(a));
    const [ma, mb] = [(await archiveParts(a)).manifest, (await archiveParts(b)).manifest];
    expect(mb.created).not.toBe(ma.created);
    expect(mb.verity.rootHash).not.toBe(ma.verity.rootHash);
  });

  it('without SOURCE_DATE_EPOCH the salt is random: two builds differ', async () => {
    const a = await createArchive({ tree, out: w('e/1.tiu'), keys, epoch: null });
    const b = await createArchive({ tree, out: w('e/2.tiu'), keys, epoch: null });
    const [ma, mb] = [(await archiveParts(a)).manifest, (await archiveParts(b)).manifest];
    expect(mb.verity.salt).not.toBe(ma.verity.salt);
    expect(await sha256File(b)).not.toBe(await sha256File(a));
  });

  it('the Debian tree, two builds at once with the same epoch: byte-identical', async () => {
    const [a, b] = await Promise.all([
      createArchive({ tree: debian, out: w('f/1.tiu'), keys }),
      createArchive({ tree: debian, out: w('f/2.tiu'), keys }),
    ]);
    expect(await sha256File(b)).toBe(await sha256File(a));
    expect((await archiveParts(a)).manifest.index.entries).toBeGreaterThan(5000);
  });
});
