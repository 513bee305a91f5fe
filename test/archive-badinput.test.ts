/**
 * Bad input to `tiu create` / `tiu info` / `tiu verify`, as a user meets it: the CLI exits with
 * the specific code, prints one error line naming the problem, and leaves no file behind (not
 * even its `.tmp-*` temp). Missing tools, an unreadable file (a write-only sysfs attribute
 * bind-mounted into the tree: EACCES even for root), a tree holding tiu's own state, missing
 * paths, a full disk (a small tmpfs), Ctrl-C, bad keys and keyrings, bad token values.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { glob, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import {
  debianTree, archiveParts, buildTypesTree, createArchive, expectCliError, expectOk, makeKeys, pathWith, runCreate, tiu, NODE, TIU_BIN,
  type ArchiveParts, type Keys,
} from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';

let work: { path: string } & AsyncDisposable;
let keys: Keys;
let otherKeys: Keys;
let tree: string;
let good: string;
let goodParts: ArchiveParts;
let debian: string;
const w = (name: string) => join(work.path, name);

beforeAll(async () => {
  work = await tempDir('tiu-badinput-');
  [keys, otherKeys] = await Promise.all([makeKeys(w('keys')), makeKeys(w('other'))]);
  tree = await buildTypesTree(w('tree'));
  good = await createArchive({ tree, out: w('good.tiu'), keys });
  goodParts = await archiveParts(good);
  debian = debianTree();
}, 600_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

/** A fresh empty output directory. */
async function outDir(name: string): Promise<string> {
  const d = w(`out-${name}`);
  await mkdir(d);
  return d;
}

/** Everything in `dir`, dot files included (a leftover temp is `.name.tmp-<pid>`). */
const contents = (dir: string) => readdir(dir);

describe('tiu create', () => {
  it('without squashfs-tools: TOOL_MISSING naming mksquashfs and its package', async () => {
    const bin = await pathWith(w('bin-node-only'));
    const out = await outDir('no-tools');
    const r = await runCreate({ tree, out: join(out, 'x.tiu'), keys, env: { PATH: bin } });
    const line = expectCliError(r, 'TOOL_MISSING');
    expect(line).toMatch(/'mksquashfs'/);
    expect(line).toMatch(/squashfs-tools/);
    expect(await contents(out)).toEqual([]);
  });

  it('without getfattr: TOOL_MISSING naming getfattr and its package', async () => {
    const bin = await pathWith(w('bin-no-attr'), ['mksquashfs', 'unsquashfs', 'xargs']);
    const out = await outDir('no-attr');
    const r = await runCreate({ tree, out: join(out, 'x.tiu'), keys, env: { PATH: bin } });
    const line = expectCliError(r, 'TOOL_MISSING');
    expect(line).toMatch(/'getfattr'/);
    expect(line).toMatch(/apt-get install attr/);
    expect(await contents(out)).toEqual([]);
  });

  it('a file even root cannot read (write-only sysfs attribute bind-mounted in): TREE_INVALID naming it', async () => {
    const src = w('unreadable-tree');
    await mkdir(join(src, 'etc'), { recursive: true });
    await writeFile(join(src, 'etc/readable'), 'fine\n');
    await writeFile(join(src, 'etc/unreadable'), '');
    // Every bus has a write-only drivers_probe; reading it fails with EACCES, root or not.
    let writeOnly: string | undefined;
    for await (const p of glob('/sys/bus/*/drivers_probe')) {
      writeOnly = p;
      break;
    }
    expect(writeOnly, 'a /sys/bus/*/drivers_probe attribute').toBeDefined();
    await execa('mount', ['--bind', writeOnly!, join(src, 'etc/unreadable')]);
    try {
      const out = await outDir('unreadable');
      const r = await runCreate({ tree: src, out: join(out, 'x.tiu'), keys });
      const line = expectCliError(r, 'TREE_INVALID');
      expect(line).toContain('etc/unreadable');
      expect(line).toMatch(/EACCES|permission/i);
      expect(await contents(out)).toEqual([]);
    } finally {
      await execa('umount', [join(src, 'etc/unreadable')]);
    }
  });

  it('a tree that holds usr/lib/tiu/image (tiu writes it on the device): TREE_INVALID', async () => {
    const src = w('state-tree');
    await mkdir(join(src, 'usr/lib/tiu/image'), { recursive: true });
    const out = await outDir('state');
    const line = expectCliError(await runCreate({ tree: src, out: join(out, 'x.tiu'), keys }), 'TREE_INVALID');
    expect(line).toContain('/usr/lib/tiu/image');
    expect(await contents(out)).toEqual([]);
  });

  it('a source that does not exist: INPUT_NOT_FOUND (exit 3)', async () => {
    const out = await outDir('nosrc');
    const line = expectCliError(await runCreate({ tree: w('no-such-tree'), out: join(out, 'x.tiu'), keys }), 'INPUT_NOT_FOUND');
    expect(line).toContain('no-such-tree');
    expect(await contents(out)).toEqual([]);
  });

  it('an output directory that does not exist: INPUT_NOT_FOUND (exit 3)', async () => {
    const line = expectCliError(await runCreate({ tree, out: w('no-such-dir/x.tiu'), keys }), 'INPUT_NOT_FOUND');
    expect(line).toContain('no-such-dir');
  });

  it('an output that is a directory: INPUT_INVALID before any work', async () => {
    const out = await outDir('is-dir');
    const line = expectCliError(await runCreate({ tree, out, keys }), 'INPUT_INVALID');
    expect(line).toContain('is a directory');
    expect(await contents(out)).toEqual([]);
  });

  describe('a full output disk (tmpfs): NO_SPACE and nothing left behind', () => {
    const pages = () => ({
      data: goodParts.manifest.verity.dataSize / 4096,
      hash: goodParts.manifest.verity.hashSize / 4096,
    });
    // Where it runs out: while mksquashfs writes the image, while the hash tree is written, while
    // the signature is written (the image and the tree fit, one more page does not).
    const cases: [string, () => string, 'big' | 'small'][] = [
      ['during mksquashfs (2 MiB disk, 4 MiB tree)', () => '2M', 'big'],
      ['during the hash tree', () => `${(pages().data + pages().hash - 1) * 4}k`, 'small'],
      ['during the signature', () => `${(pages().data + pages().hash) * 4}k`, 'small'],
    ];
    it.each(cases)('%s', async (name, size, which) => {
      let src = tree;
      if (which === 'big') {
        src = w('big-tree');
        await mkdir(join(src, 'etc'), { recursive: true });
        const { randomBytes } = await import('node:crypto');
        await writeFile(join(src, 'etc/blob'), randomBytes(4 << 20));
      }
      const dir = w(`tmpfs-${name.replace(/\W+/g, '-')}`);
      await mkdir(dir);
      await execa('mount', ['-t', 'tmpfs', '-o', `size=${size()}`, 'tmpfs', dir]);
      try {
        const r = await runCreate({ tree: src, out: join(dir, 'x.tiu'), keys });
        expectCliError(r, 'NO_SPACE');
        expect(await contents(dir)).toEqual([]);
      } finally {
        await execa('umount', [dir]);
      }
    });

    it('(control) the same tree fits with one page more', async () => {
      const dir = w('tmpfs-fits');
      await mkdir(dir);
      await execa('mount', ['-t', 'tmpfs', '-o', `size=${(pages().data + pages().hash + 1) * 4}k`, 'tmpfs', dir]);
      try {
        expectOk(await runCreate({ tree, out: join(dir, 'x.tiu'), keys }));
        expect(await contents(dir)).toEqual(['x.tiu']);
      } finally {
        await execa('umount', [dir]);
      }
    });
  });

  it('a TMPDIR too small for the index, which is written while mksquashfs runs: NO_SPACE, mksquashfs stopped, nothing left behind', async () => {
    // mksquashfs starts before the scan and waits on its stdin for the index when it reaches it:
    // were it not stopped when the index cannot be written, it would wait forever.
    const out = await outDir('index-no-space');
    const tmp = await outDir('index-no-space-tmp');
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', tmp]);
    try {
      const started = Date.now();
      const r = await runCreate({ tree: debian, out: join(out, 'x.tiu'), keys, env: { TMPDIR: tmp } });
      const line = expectCliError(r, 'NO_SPACE');
      expect(line).toContain(tmp);
      // The Debian tree takes mksquashfs ~8 s here; the index runs out of room within a second.
      expect(Date.now() - started).toBeLessThan(6000);
      expect(await contents(out)).toEqual([]);
      expect(await contents(tmp)).toEqual([]);
      const ps = await execa('ps', ['-eo', 'args']);
      expect(ps.stdout).not.toContain(join(out, '.x.tiu.tmp-'));
    } finally {
      await execa('umount', [tmp]);
    }
  }, 60_000);

  describe('Ctrl-C while mksquashfs runs: INTERRUPTED (exit 51), nothing left behind', () => {
    it.each(['directory', 'tarball'])('from a %s', async (kind) => {
      let src = debian;
      if (kind === 'tarball') {
        src = w('debian.tar');
        await execa('tar', ['--create', '--file', src, '--xattrs', '--acls', '--numeric-owner', '-C', debian, '.']);
      }
      const out = await outDir(`interrupt-${kind}`);
      const tmp = await outDir(`interrupt-tmp-${kind}`);
      // zstd level 22 on the Debian tree runs for minutes: long enough to be interrupted.
      const child = execa(NODE, [TIU_BIN, 'create', src, '-o', join(out, 'x.tiu'), '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'c', '--version', '1', '--no-progress', '--level', '22'], {
        env: { TMPDIR: tmp, SOURCE_DATE_EPOCH: undefined }, reject: false,
      });
      try {
        // Wait until mksquashfs writes the temp output next to the output.
        const deadline = Date.now() + 60_000;
        while (!(await contents(out)).some((n) => n.startsWith('.x.tiu.tmp-'))) {
          expect(Date.now(), 'the temp output appears').toBeLessThan(deadline);
          expect(child.exitCode, 'tiu create still runs').toBeNull();
          await new Promise((r) => setTimeout(r, 100));
        }
        expect((await contents(tmp)).length).toBeGreaterThan(0);
      } finally {
        child.kill('SIGINT');
      }
      const r = await child;
      const result = { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
      expect(expectCliError(result, 'INTERRUPTED', [/^unpacking /])).toContain('SIGINT');
      expect(await contents(out)).toEqual([]);
      expect(await contents(tmp)).toEqual([]);
    });
  });

  describe('bad keys: KEY_INVALID (exit 22) before any work', () => {
    it.each([
      ['a key file that is not PEM', () => ({ ...keys, signingKey: w('garbage.pem') }), /no private key/],
      ['a key that does not match the certificate', () => ({ ...keys, signingKey: otherKeys.signingKey }), /does not belong to the certificate/],
      ['a certificate file that holds a key', () => ({ ...keys, signingCert: keys.signingKey }), /no PEM certificate/],
      ['a CA certificate as signing certificate', () => ({ ...keys, signingKey: keys.caKey, signingCert: keys.caCert }), /may not sign/],
    ] as const)('%s', async (_name, k, message) => {
      await writeFile(w('garbage.pem'), 'this is not a key\n');
      const out = await outDir(`key-${_name.replace(/\W+/g, '-')}`);
      const line = expectCliError(await runCreate({ tree, out: join(out, 'x.tiu'), keys: k() }), 'KEY_INVALID');
      expect(line).toMatch(message);
      expect(await contents(out)).toEqual([]);
    });

    it('a key file that does not exist: INPUT_NOT_FOUND', async () => {
      const line = expectCliError(await runCreate({ tree, out: w('nokey.tiu'), keys: { ...keys, signingKey: w('no-such-key.pem') } }), 'INPUT_NOT_FOUND');
      expect(line).toContain('no-such-key.pem');
    });
  });

  it.each([
    ['--compatible', ['--compatible', 'has space']],
    ['--version', ['--version', '1/2']],
    ['--build-id', ['--build-id', 'a b']],
  ])('an invalid %s value: USAGE (exit 2) before any work, not a crash', async (option, args) => {
    const out = await outDir(`token-${option.slice(2)}`);
    const r = await tiu(['create', tree, '-o', join(out, 'x.tiu'), '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'ok', '--version', '1', ...args]);
    const line = expectCliError(r, 'USAGE');
    expect(line).toContain(JSON.stringify(args[1]));
    expect(await contents(out)).toEqual([]);
  });
});

describe('tiu info / tiu verify', () => {
  it.each([
    ['a keyring that does not exist', () => w('no-such-keyring.pem'), /no such file/],
    ['a keyring that is not PEM', () => w('garbage-keyring.pem'), /no certificates/],
    ['a keyring holding a private key', () => keys.caKey, /private key/i],
  ] as const)('%s: KEYRING_INVALID (exit 21)', async (_name, keyring, message) => {
    await writeFile(w('garbage-keyring.pem'), 'not a certificate\n');
    for (const cmd of ['info', 'verify']) {
      const line = expectCliError(await tiu([cmd, good, '--keyring', keyring()]), 'KEYRING_INVALID');
      expect(line).toMatch(message);
    }
  });

  it('an archive that does not exist: INPUT_NOT_FOUND; a directory: INPUT_INVALID', async () => {
    for (const cmd of ['info', 'verify']) {
      expectCliError(await tiu([cmd, w('no-such.tiu'), '--keyring', keys.keyring]), 'INPUT_NOT_FOUND');
      expectCliError(await tiu([cmd, work.path, '--keyring', keys.keyring]), 'INPUT_INVALID');
    }
  });
});
