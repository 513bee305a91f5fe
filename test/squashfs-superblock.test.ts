/**
 * The superblock parser on real images (checked against `unsquashfs -s`, an independent reader),
 * on targeted corruptions, and on random bytes (fast-check): it may only ever throw TiuError.
 */
import { readFile, mkdir, writeFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSuperblock, SUPERBLOCK_FLAGS, SUPERBLOCK_SIZE, type SquashfsSuperblock } from '../src/squashfs/superblock.ts';
import { TiuError } from '../src/core/errors.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();

interface Real {
  name: string;
  head: Buffer;
  size: number;
  stat: string;
  mkfsTime: number;
}
const real: Real[] = [];
let dir: Awaited<ReturnType<typeof tempDir>>;

const builds: [string, string[]][] = [
  ['gzip default', ['-comp', 'gzip']],
  ['xz 1M no-xattrs', ['-comp', 'xz', '-b', '1M', '-no-xattrs']],
  ['zstd 4K no-exports', ['-comp', 'zstd', '-b', '4096', '-no-exports']],
  ['lz4 no-fragments', ['-comp', 'lz4', '-no-fragments']],
  ['lzo uncompressed inodes+data', ['-comp', 'lzo', '-noI', '-noD']],
  ['lzma', ['-comp', 'lzma']],
  ['gzip tailends', ['-comp', 'gzip', '-tailends', '-Xcompression-level', '1']],
];

beforeAll(async () => {
  dir = await tempDir();
  const src = join(dir.path, 'src');
  await mkdir(join(src, 'a/b'), { recursive: true });
  await writeFile(join(src, 'a/b/small'), 'small file');
  await writeFile(join(src, 'big'), Buffer.alloc(300_000, 'x'));
  await symlink('a/b/small', join(src, 'link'));
  await sys.run('setfattr', ['-n', 'user.k', '-v', 'v', join(src, 'big')]);
  let t = 1_000_000_000;
  for (const [name, opts] of builds) {
    const img = join(dir.path, `${real.length}.sqfs`);
    t += 12_345;
    await sys.run('mksquashfs', [src, img, '-noappend', '-quiet', '-no-progress', '-mkfs-time', String(t), ...opts], { env: { SOURCE_DATE_EPOCH: undefined } });
    const data = await readFile(img);
    const stat = (await sys.run('unsquashfs', ['-s', img])).stdout;
    real.push({ name, head: data.subarray(0, SUPERBLOCK_SIZE), size: data.length, stat, mkfsTime: t });
  }
});

afterAll(async () => {
  await dir[Symbol.asyncDispose]();
});

function statField(stat: string, re: RegExp): string {
  const m = re.exec(stat);
  if (!m) throw new Error(`unsquashfs -s lacks ${re}: ${stat}`);
  return m[1]!;
}

function expectTiuError(fn: () => unknown, code: string, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TiuError);
  expect((err as TiuError).code).toBe(code);
  if (message) expect((err as TiuError).message).toMatch(message);
}

function mutate(head: Buffer, f: (b: Buffer) => void): Buffer {
  const b = Buffer.from(head);
  f(b);
  return b;
}

describe('readSuperblock on real images', () => {
  it('agrees with unsquashfs -s for every compressor and option set', () => {
    expect(real.length).toBe(builds.length);
    for (const r of real) {
      const sb = readSuperblock(r.head, { fileSize: r.size });
      const ctx = r.name;
      expect(sb.compression, ctx).toBe(statField(r.stat, /^Compression (\w+)$/m));
      expect(sb.blockSize, ctx).toBe(Number(statField(r.stat, /^Block size (\d+)$/m)));
      expect(sb.bytesUsed, ctx).toBe(Number(statField(r.stat, /^Filesystem size ([\d]+) bytes/m)));
      expect(sb.inodes, ctx).toBe(Number(statField(r.stat, /^Number of inodes (\d+)$/m)));
      expect(sb.fragments, ctx).toBe(Number(statField(r.stat, /^Number of fragments (\d+)$/m)));
      expect(sb.ids, ctx).toBe(Number(statField(r.stat, /^Number of ids (\d+)$/m)));
      expect(sb.mkfsTime, ctx).toBe(r.mkfsTime);
      expect([sb.versionMajor, sb.versionMinor]).toEqual([4, 0]);
      expect(2 ** sb.blockLog).toBe(sb.blockSize);
      expect(sb.flagNames.includes('exportable'), ctx).toBe(/is exportable via NFS/.test(r.stat));
      expect(sb.flagNames.includes('uncompressedInodes'), ctx).toBe(/Inodes are uncompressed/.test(r.stat));
      expect(sb.flagNames.includes('uncompressedData'), ctx).toBe(/Data is uncompressed/.test(r.stat));
      expect(sb.exportTableStart === undefined, ctx).toBe(!sb.flagNames.includes('exportable'));
      expect(r.size % 4096).toBe(0);
      expect(sb.bytesUsed).toBeLessThanOrEqual(r.size);
    }
    const byName = (n: string) => readSuperblock(real.find((r) => r.name === n)!.head);
    expect(byName('xz 1M no-xattrs').xattrIdTableStart).toBeUndefined();
    expect(byName('gzip default').xattrIdTableStart).toBeGreaterThan(0);
    expect(byName('lz4 no-fragments').flagNames).toContain('noFragments');
    expect(byName('zstd 4K no-exports').blockSize).toBe(4096);
  });
});

describe('readSuperblock rejects corrupt superblocks', () => {
  const good = () => real[0]!.head;
  const cases: [string, (b: Buffer) => void, RegExp][] = [
    ['wrong magic', (b) => b.write('sqsh', 0, 'latin1'), /bad magic/],
    ['big-endian magic', (b) => b.writeUInt32BE(0x73717368, 0), /bad magic/],
    ['version 3.0', (b) => b.writeUInt16LE(3, 28), /version 3\.0/],
    ['version 4.1', (b) => b.writeUInt16LE(1, 30), /version 4\.1/],
    ['block size not matching block_log', (b) => b.writeUInt32LE(65536, 12), /does not match block_log/],
    ['block_log too small', (b) => { b.writeUInt16LE(11, 22); b.writeUInt32LE(2048, 12); }, /block_log 11/],
    ['block_log too large', (b) => { b.writeUInt16LE(21, 22); b.writeUInt32LE(2 ** 21, 12); }, /block_log 21/],
    ['compression id 0', (b) => b.writeUInt16LE(0, 20), /compression id 0/],
    ['compression id 7', (b) => b.writeUInt16LE(7, 20), /compression id 7/],
    ['unknown flag bit', (b) => b.writeUInt16LE(b.readUInt16LE(24) | 0x1000, 24), /unknown flags/],
    ['obsolete CHECK flag', (b) => b.writeUInt16LE(b.readUInt16LE(24) | 0x0004, 24), /unknown flags/],
    ['zero inodes', (b) => b.writeUInt32LE(0, 4), /inode count/],
    ['zero ids', (b) => b.writeUInt16LE(0, 26), /id count/],
    ['bytes_used below 96', (b) => b.writeBigUInt64LE(95n, 40), /bytes_used 95/],
    ['bytes_used huge', (b) => b.writeBigUInt64LE(2n ** 60n, 40), /out of range/],
    ['id table missing', (b) => b.writeBigUInt64LE(0xffffffffffffffffn, 48), /id table is missing/],
    ['id table past the end', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(40) + 1n, 48), /id table .* beyond bytes_used/],
    ['inode table inside superblock', (b) => b.writeBigUInt64LE(10n, 64), /overlaps the superblock/],
    ['directory table before inode table', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(64), 72), /not after inode table/],
    ['root inode offset beyond a metadata block', (b) => b.writeBigUInt64LE((b.readBigUInt64LE(32) & ~0xffffn) | 9000n, 32), /root inode offset/],
    ['root inode outside the inode table', (b) => b.writeBigUInt64LE(0xffffn << 16n, 32), /root inode block/],
    ['fragments with no-fragments flag', (b) => b.writeUInt16LE(b.readUInt16LE(24) | SUPERBLOCK_FLAGS.noFragments, 24), /no-fragments/],
  ];
  for (const [what, f, msg] of cases) {
    it(what, () => {
      // The unmodified block parses, so the mutation is what is rejected.
      expect(() => readSuperblock(good())).not.toThrow();
      expectTiuError(() => readSuperblock(mutate(good(), f)), 'ARCHIVE_FORMAT', msg);
    });
  }

  it('a short buffer or a file smaller than bytes_used is ARCHIVE_TRUNCATED', () => {
    expectTiuError(() => readSuperblock(good().subarray(0, 95)), 'ARCHIVE_TRUNCATED', /need 96 bytes, have 95/);
    expectTiuError(() => readSuperblock(Buffer.alloc(0)), 'ARCHIVE_TRUNCATED');
    const sb = readSuperblock(good());
    expectTiuError(() => readSuperblock(good(), { fileSize: sb.bytesUsed - 1 }), 'ARCHIVE_TRUNCATED', /truncated/);
    expect(readSuperblock(good(), { fileSize: sb.bytesUsed }).bytesUsed).toBe(sb.bytesUsed);
  });
});

function invariants(sb: SquashfsSuperblock): void {
  expect(sb.versionMajor).toBe(4);
  expect(sb.blockSize).toBe(2 ** sb.blockLog);
  expect(sb.bytesUsed).toBeGreaterThanOrEqual(SUPERBLOCK_SIZE);
  for (const t of [sb.idTableStart, sb.xattrIdTableStart, sb.fragmentTableStart, sb.exportTableStart, sb.directoryTableStart]) {
    if (t !== undefined) expect(t).toBeLessThan(sb.bytesUsed);
  }
}

describe('readSuperblock property tests', () => {
  const onlyTiuErrors = (buf: Buffer) => {
    try {
      invariants(readSuperblock(buf));
    } catch (e) {
      if (!(e instanceof TiuError)) throw e;
      expect(['ARCHIVE_FORMAT', 'ARCHIVE_TRUNCATED']).toContain(e.code);
    }
  };

  it('random bytes never throw anything but TiuError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => onlyTiuErrors(Buffer.from(bytes))),
      { numRuns: 3000 },
    );
  });

  it('random bytes behind a valid magic and version (deeper paths) never throw anything but TiuError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 96, maxLength: 96 }), (bytes) => {
        const b = Buffer.from(bytes);
        b.writeUInt32LE(0x73717368, 0);
        b.writeUInt16LE(4, 28);
        b.writeUInt16LE(0, 30);
        onlyTiuErrors(b);
      }),
      { numRuns: 3000 },
    );
  });

  it('real superblocks with random byte changes parse with invariants intact or throw TiuError', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: real.length - 1 }),
        fc.array(fc.tuple(fc.nat({ max: 95 }), fc.nat({ max: 255 })), { minLength: 1, maxLength: 4 }),
        (which, edits) => {
          const b = Buffer.from(real[which]!.head);
          for (const [at, v] of edits) b[at] = v;
          onlyTiuErrors(b);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
