/**
 * The gzip-aware delta method on real archives and a real loop btrfs device: a changed `.gz`
 * made by `gzip -9n` (Debian's man pages and changelogs) or by `gzip -9` with the name and mtime
 * in its header travels as a patch of its uncompressed content and is rebuilt byte for byte on
 * the device; a `.gz` that GNU gzip does not reproduce (made by Node's zlib) falls back to
 * another method and is still rebuilt exactly.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { gzipSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, expectSnapshotEquals, type ArchiveSet } from './helpers/device.ts';
import { loadIndex } from '../src/core/fileindex/io.ts';
import type { IndexEntry } from '../src/core/fileindex/types.ts';
import { INDEX_PATH } from '../src/tiu/device/paths.ts';
import { openDelta } from '../src/tiu/delta/open.ts';
import { openArchive } from '../src/tiu/archive/open.ts';
import { mountImage } from '../src/tiu/archive/mount.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

/** A changelog-like text of `n` entries (deterministic, not trivially compressible). */
function changelog(n: number): string {
  let x = 12345;
  const word = () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return ['fix', 'crash', 'CVE-2024-', 'update', 'upstream', 'release', 'memory', 'leak', 'parser', 'buffer'][x % 10] + String(x % 997);
  };
  const out: string[] = [];
  for (let i = n; i > 0; i--) out.push(`pkg (1.${i}) stable; urgency=medium\n\n  * ${Array.from({ length: 12 }, word).join(' ')}\n\n -- Dev <dev@example.org>  ${i}\n`);
  return out.join('\n');
}

const GZ = {
  debian: 'usr/share/doc/pkg/changelog.Debian.gz',
  named: 'usr/share/man/man1/pkg.1.gz',
  node: 'usr/share/doc/pkg/node-made.gz',
};

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-delta-gzip-'));
  A = await makeArchives(sys, work, {
    prepare: async (tree, v) => {
      // v2 adds entries at the top, as a new package version does.
      const text = Buffer.from(changelog(v === 1 ? 400 : 403));
      await mkdir(join(tree, 'usr/share/doc/pkg'), { recursive: true });
      await mkdir(join(tree, 'usr/share/man/man1'), { recursive: true });
      await writeFile(join(tree, GZ.debian), execFileSync('gzip', ['-9n', '-c'], { input: text }));
      // gzip -9 of a named file: its name and mtime go into the header.
      const src = join(work, `pkg.1-v${v}`);
      await writeFile(src, text);
      await utimes(src, 1_600_000_000 + v, 1_600_000_000 + v);
      await writeFile(join(tree, GZ.named), execFileSync('gzip', ['-9', '-c', src]));
      await writeFile(join(tree, GZ.node), gzipSync(text, { level: 4 }));
    },
  });
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function indexOfArchive(archive: string): Promise<IndexEntry[]> {
  await using a = await openArchive(archive, { keyringPem: A.keyringPem });
  await a.verifyData();
  await using img = await mountImage(sys, a, { verifiedInUserspace: true });
  return await loadIndex(join(img.dir, INDEX_PATH), { sha256: a.manifest.index.sha256 });
}

describe('gzip-aware deltas', () => {
  it('carry gzip -9n and named gzip files as patches of their content, others otherwise; the device rebuilds every one byte for byte', async () => {
    const delta = join(work, 'v1-v2.tiud');
    const r = await cli(['delta', A.v1, A.v2, '-o', delta, '--key', A.keys.signingKey, '--cert', A.keys.signingCert, '--keyring', A.keys.keyring, '--json'], { timeoutMs: 600_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    const v2Index = await indexOfArchive(A.v2);
    const method = new Map<string, { method: string; length?: number; gzipHeader?: string }>();
    {
      await using d = await openDelta(delta, { keyringPem: A.keyringPem });
      expect(d.header.index.method).toBe('index-diff');
      for (const c of d.header.contents.items) method.set(v2Index[c.entry]!.path, c);
    }
    expect(method.get(GZ.debian)?.method).toBe('gzip-patch');
    expect(method.get(GZ.named)?.method).toBe('gzip-patch');
    // The named file's header (name, mtime) travels with it.
    expect(Buffer.from(method.get(GZ.named)!.gzipHeader!, 'base64').toString('latin1')).toContain('pkg.1-v2\0');
    // A few hundred bytes for three new changelog entries in a ~20 kB .gz.
    expect(method.get(GZ.debian)!.length!).toBeLessThan(1500);
    // Node's deflate is not GNU gzip's: gzip -9n cannot give its bytes back, so another method.
    expect(method.get(GZ.node)?.method).toBeDefined();
    expect(method.get(GZ.node)!.method).not.toBe('gzip-patch');

    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const x = await cli(['extract', delta, '--root', dev.root, '--keyring', A.keys.keyring, '--json']);
    expect(x.exitCode, x.stderr).toBe(0);
    const snap2 = join(dev.root, '.snapshots/2/snapshot');
    expect(await expectSnapshotEquals(sys, snap2, v2Index)).toBeGreaterThan(40);
    for (const p of Object.values(GZ)) expect((await readFile(join(snap2, p))).equals(await readFile(join(work, 'tree-v2', p))), p).toBe(true);
  }, 600_000);
});
