/**
 * mksquashfs failures for real: each must become a TiuError naming the path, and no partial
 * image may remain.
 */
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mksquashfs, unsquashfsList } from '../src/squashfs/index.ts';
import { TiuError } from '../src/core/errors.ts';
import type { System } from '../src/core/system.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();

async function failure(p: Promise<unknown>): Promise<TiuError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TiuError);
  return err as TiuError;
}

async function gone(path: string): Promise<void> {
  await expect(lstat(path)).rejects.toThrow(/ENOENT/);
}

async function smallTree(root: string): Promise<void> {
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(join(root, 'etc/hostname'), 'tiu\n');
}

describe('mksquashfs errors', () => {
  it('missing source directory → INPUT_NOT_FOUND naming it', async () => {
    await using d = await tempDir();
    const err = await failure(mksquashfs(sys, join(d.path, 'nope'), join(d.path, 'o.sqfs'), { compression: 'gzip' }));
    expect(err.code).toBe('INPUT_NOT_FOUND');
    expect(err.message).toContain(join(d.path, 'nope'));
    await gone(join(d.path, 'o.sqfs'));
  });

  it('source that is a file → INPUT_INVALID (mksquashfs itself would pack the file)', async () => {
    await using d = await tempDir();
    await writeFile(join(d.path, 'file'), 'x');
    const err = await failure(mksquashfs(sys, join(d.path, 'file'), join(d.path, 'o.sqfs'), { compression: 'gzip' }));
    expect(err.code).toBe('INPUT_INVALID');
    expect(err.message).toContain(join(d.path, 'file'));
  });

  it('output directory missing → INPUT_NOT_FOUND; output is a directory → INPUT_INVALID (left alone)', async () => {
    await using d = await tempDir();
    await smallTree(join(d.path, 'src'));
    const missing = await failure(mksquashfs(sys, join(d.path, 'src'), join(d.path, 'no/dir/o.sqfs'), { compression: 'gzip' }));
    expect(missing.code).toBe('INPUT_NOT_FOUND');
    expect(missing.message).toContain(join(d.path, 'no/dir'));
    await mkdir(join(d.path, 'outdir'));
    await writeFile(join(d.path, 'outdir/keep'), 'k');
    const isDir = await failure(mksquashfs(sys, join(d.path, 'src'), join(d.path, 'outdir'), { compression: 'gzip' }));
    expect(isDir.code).toBe('INPUT_INVALID');
    expect(await readdir(join(d.path, 'outdir'))).toEqual(['keep']);
  });

  it('full disk → NO_SPACE, and the partial image is removed', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    // 3 MiB of incompressible data into a 1 MiB tmpfs.
    for (let i = 0; i < 3; i++) {
      const chunks: Buffer[] = [];
      for (let j = 0; j < 1024 * 16; j++) chunks.push(createHash('sha512').update(`${i}/${j}`).digest());
      await writeFile(join(src, `r${i}`), Buffer.concat(chunks));
    }
    const tiny = join(d.path, 'tiny');
    await mkdir(tiny);
    await sys.run('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', tiny]);
    try {
      const out = join(tiny, 'o.sqfs');
      const err = await failure(mksquashfs(sys, src, out, { compression: 'gzip', processors: 2 }));
      expect(err.code).toBe('NO_SPACE');
      expect(err.message).toContain(out);
      expect(await readdir(tiny)).toEqual([]);
    } finally {
      await sys.run('umount', [tiny]);
    }
  });

  it('unreadable file → TREE_INVALID naming it (not an empty file in the image)', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await smallTree(src);
    await writeFile(join(src, 'etc/shadow'), 'secret');
    await chmod(join(src, 'etc/shadow'), 0o000);
    // Root reads everything; run the real mksquashfs without capabilities so DAC applies.
    const noCaps: System = {
      log: sys.log,
      which: sys.which,
      spawn: sys.spawn,
      run: (file, args, options) => (file === 'mksquashfs' ? sys.run('setpriv', ['--bounding-set=-all', '--', file, ...args], options) : sys.run(file, args, options)),
    };
    const out = join(d.path, 'o.sqfs');
    const err = await failure(mksquashfs(noCaps, src, out, { compression: 'gzip' }));
    expect(err.code).toBe('TREE_INVALID');
    expect(err.message).toContain('etc/shadow');
    await gone(out);
    // Control: with capabilities the same tree builds (so the failure above was the unreadable file).
    await mksquashfs(sys, src, out, { compression: 'gzip' });
    expect((await unsquashfsList(sys, out)).map((e) => e.path)).toContain('etc/shadow');
  });

  it('abort → INTERRUPTED and no partial image', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    for (let i = 0; i < 4; i++) {
      const chunks: Buffer[] = [];
      for (let j = 0; j < 1024 * 64; j++) chunks.push(createHash('sha512').update(`${i}-${j}`).digest());
      await writeFile(join(src, `r${i}`), Buffer.concat(chunks));
    }
    const out = join(d.path, 'o.sqfs');
    const ac = new AbortController();
    let aborted = false;
    const p = mksquashfs(sys, src, out, {
      compression: 'xz',
      processors: 1,
      signal: ac.signal,
      progress: () => {},
    });
    // Abort once the tool has started writing.
    const timer = setInterval(() => {
      lstat(out).then(
        () => {
          if (!aborted) {
            aborted = true;
            ac.abort();
          }
        },
        () => {},
      );
    }, 20);
    try {
      const err = await failure(p);
      expect(err.code).toBe('INTERRUPTED');
    } finally {
      clearInterval(timer);
    }
    expect(aborted).toBe(true);
    await gone(out);
  });

  it('rejects bad options before running anything', async () => {
    await using d = await tempDir();
    await smallTree(join(d.path, 'src'));
    const out = join(d.path, 'o.sqfs');
    const bad: [string, Parameters<typeof mksquashfs>[3], RegExp][] = [
      ['block size not a power of two', { compression: 'gzip', blockSize: 100_000 }, /block size 100000/],
      ['block size too big', { compression: 'gzip', blockSize: 2 * 1024 * 1024 }, /block size/],
      ['block size too small', { compression: 'gzip', blockSize: 2048 }, /block size/],
      ['xz has no level', { compression: 'xz', level: 5 }, /no level/],
      ['zstd level', { compression: 'zstd', level: 23 }, /1\.\.22/],
      ['negative mkfs time', { compression: 'gzip', mkfsTime: -1 }, /mkfs time/],
      ['absolute exclude', { compression: 'gzip', excludes: ['/var/*'] }, /relative/],
      ['unknown compressor', { compression: 'brotli' as 'gzip' }, /unknown compression/],
    ];
    for (const [what, opts, msg] of bad) {
      const err = await failure(mksquashfs(sys, join(d.path, 'src'), out, opts));
      expect(err.code, what).toBe('INPUT_INVALID');
      expect(err.message, what).toMatch(msg);
      await gone(out);
    }
  });

  it('reports the POSIX ACLs that mksquashfs silently drops', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await smallTree(src);
    await sys.run('setfacl', ['-m', 'u:1234:rwx', join(src, 'etc/hostname')]);
    const r = await mksquashfs(sys, src, join(d.path, 'o.sqfs'), { compression: 'gzip' });
    expect(r.droppedXattrs).toEqual(['system.posix_acl_access']);
  });
});
