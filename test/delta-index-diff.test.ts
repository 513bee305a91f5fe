/**
 * The new index sent as an edit script against the old signed index (src/tiu/delta/index-diff.ts)
 * and the gzip header parser of the gzip-aware method: byte-exact round trips, small scripts for
 * the usual update (mtimes and a few digests changed), and strict rejection of damaged scripts.
 */
import { describe, it, expect } from 'vitest';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { applyIndexDiff, diffIndex } from '../src/tiu/delta/index-diff.ts';
import { gzipHeaderLength } from '../src/tiu/delta/gzip.ts';
import { serializeIndex } from '../src/core/fileindex/io.ts';
import { TiuError } from '../src/core/errors.ts';
import type { IndexEntry } from '../src/core/fileindex/types.ts';

const d = (c: string) => c.repeat(64).slice(0, 64);
const file = (path: string, sha: string, mtime = 1, size = 100): IndexEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime, size, sha256: d(sha) });
const dir = (path: string, mtime = 1): IndexEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime });
const bytes = (entries: IndexEntry[]) => Buffer.from([...serializeIndex(entries)].join(''), 'utf8');

function corrupt(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TiuError);
    expect((e as TiuError).code).toBe('DELTA_CORRUPT');
    return (e as TiuError).message;
  }
  throw new Error('did not throw');
}

const old: IndexEntry[] = [
  dir('.'),
  dir('etc'),
  file('etc/a', '1'),
  file('etc/gone', '2'),
  { path: 'usr', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 5, xattrs: { 'user.x': 'YQ==' } },
  { path: 'usr/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1, target: 'old' },
  file('usr/m\xff', '3'),
  file('usr/same', '4'),
  file('usr/sparse', '5'),
];

describe('index diff', () => {
  it('rebuilds the new index byte for byte: added, removed, moved, and changed fields (xattrs, targets, non-UTF-8 names)', () => {
    const neu: IndexEntry[] = [
      dir('.', 2),
      dir('etc', 2),
      file('etc/a', '6', 9, 200),
      file('etc/new', '7'),
      { path: 'usr', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 5, xattrs: { 'user.x': 'Yg==', 'user.y': 'YQ==' } },
      { path: 'usr/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1, target: 'new\xe9' },
      file('usr/m\xff', '3', 3),
      file('usr/same', '4'),
      { ...file('usr/sparse', '5'), sparse: true, uid: 7 },
      file('usr/zz', '8'),
    ];
    const script = diffIndex(old, neu);
    expect(applyIndexDiff(old, script).equals(bytes(neu))).toBe(true);
    // Unchanged runs are counted, not listed; a field change lists only that field.
    expect(script.toString()).toContain('~{"mtime":2}\n');
    expect(script.toString()).toContain('-1\n');
    // Identical indexes: one line.
    expect(diffIndex(old, old).toString()).toBe(`=${old.length}\n`);
    expect(applyIndexDiff(old, diffIndex(old, old)).equals(bytes(old))).toBe(true);
    // From nothing (or into nothing).
    expect(applyIndexDiff([], diffIndex([], neu)).equals(bytes(neu))).toBe(true);
  });

  it('is far smaller than the index for a typical update (every mtime of a package changed, a few digests)', () => {
    const dirs = ['.', 'usr', 'usr/share'].map((p) => dir(p));
    const a: IndexEntry[] = [...dirs];
    const b: IndexEntry[] = [...dirs];
    for (let i = 0; i < 5000; i++) {
      if (i % 250 === 0) for (const l of [a, b]) l.push(dir(`usr/share/pkg${String(i / 250).padStart(2, "0")}`));
      const p = `usr/share/pkg${String(Math.floor(i / 250)).padStart(2, "0")}/f${String(i).padStart(5, '0')}`;
      a.push(file(p, (i % 16).toString(16), 1000 + (i % 20)));
      b.push(file(p, i % 50 === 0 ? 'f' : (i % 16).toString(16), 2000 + (i % 20)));
    }
    const script = zstdCompressSync(diffIndex(a, b));
    const full = zstdCompressSync(bytes(b));
    expect(applyIndexDiff(a, diffIndex(a, b)).equals(bytes(b))).toBe(true);
    expect(script.length * 5).toBeLessThan(full.length);
  });

  it('rejects damaged scripts with DELTA_CORRUPT', () => {
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('=99\n')))).toMatch(/goes past the old index/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('=0\n')))).toMatch(/bad count/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('=1')))).toMatch(/newline/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('*1\n')))).toMatch(/no known operation/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('~{"path":"x"}\n')))).toMatch(/unknown field/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('~[1]\n')))).toMatch(/not an object/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('~{nope\n')))).toMatch(/not JSON/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from('+{"path":"a","type":"dir","mode":493,"uid":0,"gid":0,"mtime":01}\n')))).toMatch(/line 1/);
    expect(corrupt(() => applyIndexDiff(old, Buffer.from([0x3d, 0xff, 0x0a])))).toMatch(/UTF-8/);
  });
});

describe('gzip headers', () => {
  const text = Buffer.from('hello gzip\n'.repeat(100));
  it('finds the end of plain, named and Node-made headers; refuses what is not gzip', () => {
    const plain = execFileSync('gzip', ['-9n', '-c'], { input: text });
    expect(gzipHeaderLength(plain)).toBe(10);
    expect(gzipHeaderLength(gzipSync(text))).toBe(10);
    const named = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 8, 1, 2, 3, 4, 2, 3]), Buffer.from('name.txt\0'), plain.subarray(10)]);
    expect(gzipHeaderLength(named)).toBe(19);
    expect(gzipHeaderLength(Buffer.from('not gzip at all, but long enough'))).toBeUndefined();
    const reserved = Buffer.from(plain);
    reserved[3] = 0x20;
    expect(gzipHeaderLength(reserved)).toBeUndefined();
    const unterminated = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 2, 3]), Buffer.alloc(20, 0x41)]);
    expect(gzipHeaderLength(unterminated)).toBeUndefined();
  });
});
