/**
 * The squashfs wrapper against the real mksquashfs/unsquashfs and a real loop mount:
 * a tree with every file type and odd names goes in, the listing, the mounted image and the
 * extracted tree must show the same thing.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, chown, link, lstat, mkdir, open, readFile, readdir, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mksquashfs, readImageInfo, squashfsToolsVersion, unsquashfsExtract, unsquashfsList, requireSquashfsTools, parseSquashfsVersion } from '../src/squashfs/index.ts';
import type { SquashfsListEntry } from '../src/squashfs/listing.ts';
import { parseProgressLine } from '../src/squashfs/progress.ts';
import { TiuError } from '../src/core/errors.ts';
import type { System } from '../src/core/system.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();
const b = (p: string) => Buffer.from(p, 'latin1');
const at = (root: string, rel: string) => Buffer.concat([b(root + '/'), b(rel)]);

const NL_NAME = 'new\nline';
const BAD_UTF8 = 'caf\xe9'; // latin1 byte string: the raw byte 0xE9, not valid UTF-8
const ARROW_NAME = 'sym -> link';
const ARROW_TARGET = 'tar get -> x\ny';
const OLD = 1_000_000_000; // 2001-09-09
const NEWER = 1_700_000_000;

/** Builds a tree with every entry type, odd names, owners, setuid, xattrs and a sparse file. */
async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'etc'));
  await mkdir(join(root, 'var/log'), { recursive: true });
  await mkdir(join(root, 'var/cache/x'), { recursive: true });
  await mkdir(join(root, 'dev'));
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await writeFile(join(root, 'var/log/messages'), 'log line\n');
  await writeFile(join(root, 'var/cache/x/blob'), Buffer.alloc(5000, 7));
  await writeFile(join(root, 'setuid'), '#!/bin/sh\n');
  await chmod(join(root, 'setuid'), 0o4755);
  await writeFile(join(root, 'sticky-dir-file'), '');
  await mkdir(join(root, 'tmp'));
  await chmod(join(root, 'tmp'), 0o1777);
  await writeFile(join(root, 'owned'), 'owned by 1234:5678');
  await chown(join(root, 'owned'), 1234, 5678);
  await chmod(join(root, 'owned'), 0o640);
  await writeFile(join(root, 'with space'), 'spaces');
  await writeFile(join(root, '-leading-dash'), 'dash');
  await writeFile(at(root, NL_NAME), 'newline in name');
  await writeFile(at(root, BAD_UTF8), 'latin1 name');
  await symlink('etc/passwd', join(root, 'link'));
  await symlink(b(ARROW_TARGET), at(root, ARROW_NAME));
  await link(join(root, 'etc/passwd'), join(root, 'hardlink'));
  await sys.run('mknod', ['-m', '0620', join(root, 'dev/null-ish'), 'c', '1', '3']);
  await sys.run('mknod', ['-m', '0660', join(root, 'dev/big'), 'b', '259', '300']);
  await sys.run('mkfifo', ['-m', '0600', join(root, 'fifo')]);
  const fh = await open(join(root, 'sparse'), 'w');
  await fh.write('end', 3 * 1024 * 1024);
  await fh.close();
  await sys.run('setfattr', ['-n', 'user.tiu', '-v', 'hello', join(root, 'etc/passwd')]);
  await sys.run('setfattr', ['-n', 'security.tiu', '-v', 'label', join(root, 'etc/passwd')]);
  // Distinct, non-minute-aligned mtimes so a lost or clamped time shows.
  await utimes(join(root, 'owned'), OLD + 17, OLD + 17);
  await utimes(join(root, 'etc/passwd'), NEWER + 41, NEWER + 41);
}

interface TreeEntry {
  type: SquashfsListEntry['type'];
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  target?: string;
  rdev?: { major: number; minor: number };
}

/** Walks a tree with lstat (Buffer names) into path -> attributes, root as '.'. */
async function walk(root: string): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>();
  const visit = async (rel: string) => {
    const full = rel === '.' ? b(root) : at(root, rel);
    const st = await lstat(full);
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : st.isFIFO() ? 'fifo' : 'socket';
    const e: TreeEntry = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
    if (type === 'symlink') e.target = (await readlink(full, { encoding: 'buffer' })).toString('latin1');
    if (type === 'chr' || type === 'blk') e.rdev = { major: (st.rdev >> 8) & 0xfff, minor: (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00) };
    out.set(rel, e);
    if (type === 'dir') {
      for (const name of await readdir(full, { encoding: 'buffer' })) await visit(rel === '.' ? name.toString('latin1') : `${rel}/${name.toString('latin1')}`);
    }
  };
  await visit('.');
  return out;
}

/** Asserts that a listing shows exactly the tree (dir sizes differ by nature and are skipped). */
function expectListingMatches(listing: SquashfsListEntry[], tree: Map<string, TreeEntry>, skip: (p: string) => boolean = () => false): void {
  const listed = new Map(listing.map((e) => [e.path, e]));
  expect([...listed.keys()].sort()).toEqual([...tree.keys()].filter((p) => !skip(p)).sort());
  for (const [path, want] of tree) {
    if (skip(path)) continue;
    const got = listed.get(path)!;
    const ctx = `entry ${JSON.stringify(path)}`;
    expect({ path, type: got.type, mode: got.mode.toString(8), uid: got.uid, gid: got.gid }, ctx).toEqual({ path, type: want.type, mode: want.mode.toString(8), uid: want.uid, gid: want.gid });
    expect(got.mtime, ctx).toBe(Math.floor(want.mtime / got.mtimePrecision) * got.mtimePrecision);
    if (want.type === 'file') expect(got.size, ctx).toBe(want.size);
    if (want.type === 'symlink') expect({ target: got.target, size: got.size }, ctx).toEqual({ target: want.target, size: Buffer.byteLength(want.target!, 'latin1') });
    if (want.rdev) expect(got.rdev, ctx).toEqual(want.rdev);
  }
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function getfattr(path: string, name: string): Promise<string> {
  return (await sys.run('getfattr', ['--only-values', '-n', name, path])).stdout;
}

describe('squashfs-tools version', () => {
  it('reports the installed version and enforces a minimum', async () => {
    const raw = (await sys.run('mksquashfs', ['-version'])).stdout;
    const v = await squashfsToolsVersion(sys);
    expect(v).toEqual(parseSquashfsVersion(raw));
    expect(v.major).toBe(4);
    await expect(requireSquashfsTools(sys, '4.4')).resolves.toEqual(v);
    const err = await requireSquashfsTools(sys, '99.1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TiuError);
    expect((err as TiuError).code).toBe('TOOL_MISSING');
    expect((err as TiuError).message).toBe(`squashfs-tools too old (${v.major}.${v.minor}${v.patch ? '.' + v.patch : ''}), need ≥ 99.1`);
  });

  it('reports TOOL_MISSING when the binaries are not installed', async () => {
    await using d = await tempDir();
    // A real System whose PATH has no squashfs-tools (the tool lookup itself is what is tested).
    const saved = process.env.PATH;
    process.env.PATH = d.path;
    try {
      const bare = testSystem();
      const err = await squashfsToolsVersion(bare).catch((e: unknown) => e);
      expect((err as TiuError).code).toBe('TOOL_MISSING');
      expect((err as TiuError).message).toMatch(/mksquashfs|unsquashfs/);
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe('mksquashfs + unsquashfsList on a tree with every file type', () => {
  it('lists exactly what the tree holds, and the superblock agrees', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await makeTree(src);
    const img = join(d.path, 'img.sqfs');
    const r = await mksquashfs(sys, src, img, { compression: 'zstd', level: 3, blockSize: 65536, processors: 2, mkfsTime: 1_234_567_890 });
    const tree = await walk(src);
    const info = await readImageInfo(img);
    expect(r).toEqual({
      bytes: (await lstat(img)).size,
      bytesUsed: info.sb.bytesUsed,
      compression: 'zstd',
      blockSize: 65536,
      inodes: info.sb.inodes,
      mkfsTime: 1_234_567_890,
      droppedXattrs: [],
    });
    expect(r.bytes % 4096).toBe(0);
    // One inode per path, but the two hard-linked paths share one.
    expect(r.inodes).toBe(tree.size - 1);

    const listing = await unsquashfsList(sys, img);
    expect(listing[0]!.path).toBe('.');
    expectListingMatches(listing, tree);
    const names = listing.map((e) => e.path);
    expect(names).toContain(NL_NAME);
    expect(names).toContain(BAD_UTF8);
    expect(listing.find((e) => e.path === ARROW_NAME)?.target).toBe(ARROW_TARGET);
    expect(listing.find((e) => e.path === 'dev/big')?.rdev).toEqual({ major: 259, minor: 300 });
    expect(listing.find((e) => e.path === 'setuid')?.mode).toBe(0o4755);
    expect(listing.find((e) => e.path === 'tmp')?.mode).toBe(0o1777);
  });

  it('excludes var/* but keeps var itself', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await makeTree(src);
    const img = join(d.path, 'img.sqfs');
    await mksquashfs(sys, src, img, { compression: 'gzip', excludes: ['var/*', '... *.nothing'], mkfsTime: 1 });
    const listing = await unsquashfsList(sys, img);
    expectListingMatches(listing, await walk(src), (p) => p.startsWith('var/'));
    expect(listing.find((e) => e.path === 'var')?.type).toBe('dir');
  });

  it('loop-mounts read-only with content, owners and xattrs intact, and extracts the same tree', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await makeTree(src);
    const img = join(d.path, 'img.sqfs');
    await mksquashfs(sys, src, img, { compression: 'xz', mkfsTime: 5 });
    const mnt = join(d.path, 'mnt');
    await mkdir(mnt);
    await sys.run('mount', ['-t', 'squashfs', '-o', 'ro,loop', img, mnt]);
    try {
      expect(await readFile(join(mnt, 'etc/passwd'), 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
      expect(await readFile(at(mnt, NL_NAME), 'utf8')).toBe('newline in name');
      expect(await getfattr(join(mnt, 'etc/passwd'), 'user.tiu')).toBe('hello');
      expect(await getfattr(join(mnt, 'etc/passwd'), 'security.tiu')).toBe('label');
      const st = await lstat(join(mnt, 'owned'));
      expect([st.uid, st.gid, st.mode & 0o7777, st.mtimeMs / 1000]).toEqual([1234, 5678, 0o640, OLD + 17]);
      expect((await lstat(join(mnt, 'etc/passwd'))).ino).toBe((await lstat(join(mnt, 'hardlink'))).ino);
      // The mounted image has exact (second) mtimes: compare the whole tree at full precision.
      const a = await walk(src);
      const m = await walk(mnt);
      for (const [p, e] of a) if (e.type !== 'dir' && e.type !== 'symlink') expect(m.get(p), p).toEqual(e);
    } finally {
      await sys.run('umount', [mnt]);
    }

    const dest = join(d.path, 'out');
    await unsquashfsExtract(sys, img, dest, { processors: 2 });
    const got = await walk(dest);
    for (const [p, e] of await walk(src)) {
      if (p === '.') continue;
      const g = got.get(p);
      expect(g && { ...g, size: e.type === 'dir' ? e.size : g.size }, p).toEqual(e);
    }
    expect(await getfattr(join(dest, 'etc/passwd'), 'user.tiu')).toBe('hello');
    expect(await getfattr(join(dest, 'etc/passwd'), 'security.tiu')).toBe('label');
  });

  it('extracts only the requested paths (non-UTF-8 and dash names) and rejects a missing one', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await makeTree(src);
    const img = join(d.path, 'img.sqfs');
    await mksquashfs(sys, src, img, { compression: 'lz4', mkfsTime: 5, xattrs: false });
    const dest = join(d.path, 'part');
    await unsquashfsExtract(sys, img, dest, { paths: [BAD_UTF8, '-leading-dash', 'etc/passwd'], xattrs: false });
    const got = [...(await walk(dest)).keys()].sort();
    expect(got).toEqual(['-leading-dash', '.', BAD_UTF8, 'etc', 'etc/passwd'].sort());
    // -no-xattrs at build time: nothing to restore.
    await expect(getfattr(join(dest, 'etc/passwd'), 'user.tiu')).rejects.toThrow(/No such attribute/);

    const dest2 = join(d.path, 'missing');
    const err = await unsquashfsExtract(sys, img, dest2, { paths: ['etc/passwd', 'no/such/file'] }).catch((e: unknown) => e);
    expect((err as TiuError).code).toBe('INPUT_NOT_FOUND');
    expect((err as TiuError).message).toContain('no/such/file');
    await expect(lstat(dest2)).rejects.toThrow(/ENOENT/);
  });

  it('reads a filesystem at an offset inside a larger file', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'a'), 'A');
    const img = join(d.path, 'img.sqfs');
    await mksquashfs(sys, src, img, { compression: 'gzip', mkfsTime: 9 });
    const big = join(d.path, 'container');
    await writeFile(big, Buffer.concat([Buffer.alloc(8192, 0xaa), await readFile(img)]));
    const plain = await unsquashfsList(sys, img);
    expect(await unsquashfsList(sys, big, { offset: 8192 })).toEqual(plain);
    const err = await unsquashfsList(sys, big).catch((e: unknown) => e);
    expect((err as TiuError).code).toBe('ARCHIVE_FORMAT');
    const dest = join(d.path, 'x');
    await unsquashfsExtract(sys, big, dest, { offset: 8192 });
    expect(await readFile(join(dest, 'a'), 'utf8')).toBe('A');
  });
});

describe('reproducibility and SOURCE_DATE_EPOCH', () => {
  it('gives byte-identical images for the same tree and mkfsTime with 2 processors', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await makeTree(src);
    // Enough incompressible data that two compressor threads really interleave.
    for (let i = 0; i < 8; i++) await writeFile(join(src, `rand${i}`), createHash('sha512').update(String(i)).digest().toString('hex').repeat(4000));
    const one = join(d.path, 'one.sqfs');
    const two = join(d.path, 'two.sqfs');
    await mksquashfs(sys, src, one, { compression: 'gzip', processors: 2, mkfsTime: 1_600_000_000, blockSize: 4096 });
    await mksquashfs(sys, src, two, { compression: 'gzip', processors: 2, mkfsTime: 1_600_000_000, blockSize: 4096 });
    expect(await sha256(one)).toBe(await sha256(two));
    // And the mkfs time is in the bytes: a different one changes the image.
    const three = join(d.path, 'three.sqfs');
    await mksquashfs(sys, src, three, { compression: 'gzip', processors: 2, mkfsTime: 1_600_000_001, blockSize: 4096 });
    expect(await sha256(three)).not.toBe(await sha256(one));
  });

  it('keeps file mtimes although SOURCE_DATE_EPOCH is set (4.5.1 would clamp them)', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'new'), 'n');
    await utimes(join(src, 'new'), NEWER + 30, NEWER + 30);
    await utimes(src, NEWER, NEWER);
    const saved = process.env.SOURCE_DATE_EPOCH;
    process.env.SOURCE_DATE_EPOCH = String(OLD);
    try {
      // What the tool itself does with it: mkfs time := SDE and later mtimes clamped to SDE.
      const raw = join(d.path, 'raw.sqfs');
      await sys.run('mksquashfs', [src, raw, '-noappend', '-quiet', '-no-progress']);
      expect((await readImageInfo(raw)).sb.mkfsTime).toBe(OLD);
      const rawNew = (await unsquashfsList(sys, raw)).find((e) => e.path === 'new')!;
      expect(rawNew.mtime).toBe(Math.floor(OLD / 60) * 60);
      // ... and that it refuses -mkfs-time next to it.
      const refused = await sys.run('mksquashfs', [src, raw, '-noappend', '-quiet', '-no-progress', '-mkfs-time', '5'], { allowFailure: true });
      expect(refused.exitCode).not.toBe(0);
      expect(refused.stderr).toMatch(/SOURCE_DATE_EPOCH/);

      const img = join(d.path, 'img.sqfs');
      const r = await mksquashfs(sys, src, img, { compression: 'gzip', mkfsTime: 1_500_000_000 });
      expect(r.mkfsTime).toBe(1_500_000_000);
      const e = (await unsquashfsList(sys, img)).find((x) => x.path === 'new')!;
      expect(e.mtime).toBe(Math.floor((NEWER + 30) / 60) * 60);
    } finally {
      if (saved === undefined) delete process.env.SOURCE_DATE_EPOCH;
      else process.env.SOURCE_DATE_EPOCH = saved;
    }
  });
});

describe('progress', () => {
  it('parses the bar mksquashfs really prints and reports 0 … 1 monotonically', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    for (let i = 0; i < 4; i++) await writeFile(join(src, `f${i}`), createHash('sha512').update(`p${i}`).digest().toString('base64').repeat(20000));
    // The raw output first: the parser must understand the tool's last bar line.
    const raw = await sys.run('mksquashfs', [src, join(d.path, 'raw.sqfs'), '-noappend', '-quiet', '-progress', '-processors', '2']);
    const fractions = raw.stdout.split(/[\r\n]/).map(parseProgressLine).filter((f) => f !== undefined);
    expect(fractions.length).toBeGreaterThan(0);
    expect(fractions.at(-1)).toBe(1);

    const seen: number[] = [];
    await mksquashfs(sys, src, join(d.path, 'img.sqfs'), { compression: 'gzip', mkfsTime: 1, progress: (f) => seen.push(f) });
    expect(seen[0]).toBe(0);
    expect(seen.at(-1)).toBe(1);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
  });
});

describe('pseudo definitions', () => {
  it('adds dirs, devices, fifos, sockets, symlinks, host files and modifies existing paths', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(join(src, 'etc'), { recursive: true });
    await mkdir(join(src, 'opt/sub'), { recursive: true });
    await writeFile(join(src, 'etc/shadow'), 'secret');
    await utimes(join(src, 'etc/shadow'), OLD, OLD);
    const host = join(d.path, 'host file "quoted" \\ x');
    await writeFile(host, 'from the host');
    await chmod(host, 0o604);
    await utimes(host, NEWER, NEWER);
    const img = join(d.path, 'img.sqfs');
    await mksquashfs(sys, src, img, {
      compression: 'gzip',
      mkfsTime: 1_111_111_111,
      pseudo: [
        { type: 'dir', path: 'dev', mode: 0o755, uid: 0, gid: 0 },
        { type: 'chr', path: 'dev/null', mode: 0o666, uid: 0, gid: 5, major: 1, minor: 3 },
        { type: 'blk', path: 'dev/nvme0n1p300', mode: 0o660, uid: 0, gid: 6, major: 259, minor: 300, mtime: 42 },
        { type: 'fifo', path: 'dev/initctl', mode: 0o600, uid: 0, gid: 0 },
        { type: 'socket', path: 'dev/log', mode: 0o666, uid: 0, gid: 0 },
        { type: 'symlink', path: `dev/with space ${BAD_UTF8}`, target: '../odd "target" \\ x', uid: 7, gid: 8 },
        { type: 'file', path: 'etc/"quoted name"', source: host },
        { type: 'modify', path: 'etc/shadow', mode: 0o640, uid: 0, gid: 42 },
        { type: 'modify', path: 'etc', mode: 0o700, uid: 1, gid: 2 },
        { type: 'modify', path: 'opt', mode: 0o750, uid: 3, gid: 4, mtime: 77 },
      ],
    });
    const l = new Map((await unsquashfsList(sys, img)).map((e) => [e.path, e]));
    const pick = (p: string) => {
      const e = l.get(p);
      return e && { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, ...(e.rdev ? { rdev: e.rdev } : {}), ...(e.target ? { target: e.target } : {}) };
    };
    const t = Math.floor(1_111_111_111 / 60) * 60;
    expect(pick('dev')).toEqual({ type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t });
    expect(pick('dev/null')).toEqual({ type: 'chr', mode: 0o666, uid: 0, gid: 5, mtime: t, rdev: { major: 1, minor: 3 } });
    expect(pick('dev/nvme0n1p300')).toEqual({ type: 'blk', mode: 0o660, uid: 0, gid: 6, mtime: 0, rdev: { major: 259, minor: 300 } });
    expect(pick('dev/initctl')).toEqual({ type: 'fifo', mode: 0o600, uid: 0, gid: 0, mtime: t });
    expect(pick('dev/log')).toEqual({ type: 'socket', mode: 0o666, uid: 0, gid: 0, mtime: t });
    expect(pick(`dev/with space ${BAD_UTF8}`)).toEqual({ type: 'symlink', mode: 0o777, uid: 7, gid: 8, mtime: t, target: '../odd "target" \\ x' });
    expect(pick('etc/"quoted name"')).toEqual({ type: 'file', mode: 0o604, uid: 0, gid: 0, mtime: Math.floor(NEWER / 60) * 60 });
    expect(pick('etc/shadow')).toEqual({ type: 'file', mode: 0o640, uid: 0, gid: 42, mtime: Math.floor(OLD / 60) * 60 });
    const etcMtime = Math.floor((await lstat(join(src, 'etc'))).mtimeMs / 60_000) * 60;
    expect(pick('etc')).toEqual({ type: 'dir', mode: 0o700, uid: 1, gid: 2, mtime: etcMtime });
    expect(pick('opt')).toEqual({ type: 'dir', mode: 0o750, uid: 3, gid: 4, mtime: 60 });
    expect(pick('opt/sub')?.type).toBe('dir');
    const dest = join(d.path, 'x');
    await unsquashfsExtract(sys, img, dest, { paths: ['etc/"quoted name"'] });
    expect(await readFile(join(dest, 'etc/"quoted name"'), 'utf8')).toBe('from the host');
  });

  it('takes a stdin file\'s content while it runs: the files before it are built meanwhile, and a late writer is waited for', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(join(src, 'a'), { recursive: true });
    await mkdir(join(src, 'z'));
    // Incompressible bytes before the stdin file (a/ sorts before late/), plain ones after it.
    const big = Buffer.alloc(8 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((Math.imul(i, 2654435761) ^ (i >>> 7)) >>> 0, i);
    await writeFile(join(src, 'a/big'), big);
    await writeFile(join(src, 'z/after'), 'after');
    const img = join(d.path, 'img.sqfs');
    const { PassThrough } = await import('node:stream');
    const stdin = new PassThrough();
    const content = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`).join(''));
    let startedAt = 0;
    let writtenAt = 0;
    const built = mksquashfs(sys, src, img, {
      compression: 'gzip',
      mkfsTime: 1_111_111_111,
      pseudo: [
        { type: 'dir', path: 'late', mode: 0o755, uid: 0, gid: 0 },
        { type: 'stdin', path: 'late/index', mode: 0o640, uid: 3, gid: 4, mtime: 120 },
      ],
      stdin,
      onStart: () => {
        startedAt = Date.now();
        // Written only after a pause and in pieces, as a scan that is still running would.
        setTimeout(() => {
          writtenAt = Date.now();
          stdin.write(content.subarray(0, 1000));
          setTimeout(() => stdin.end(content.subarray(1000)), 50);
        }, 400);
      },
    });
    await built;
    expect(startedAt).toBeGreaterThan(0);
    expect(writtenAt - startedAt).toBeGreaterThanOrEqual(400);
    const l = new Map((await unsquashfsList(sys, img)).map((e) => [e.path, e]));
    expect(l.get('late/index')).toMatchObject({ type: 'file', mode: 0o640, uid: 3, gid: 4, mtime: 120, size: content.length });
    const dest = join(d.path, 'x');
    await unsquashfsExtract(sys, img, dest);
    expect((await readFile(join(dest, 'late/index'))).equals(content)).toBe(true);
    expect((await readFile(join(dest, 'a/big'))).equals(big)).toBe(true);
    expect(await readFile(join(dest, 'z/after'), 'utf8')).toBe('after');
  });

  it('refuses a stdin file without stdin, and stdin without a file to read it, before starting', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    const img = join(d.path, 'img.sqfs');
    const { PassThrough } = await import('node:stream');
    let started = false;
    const onStart = () => (started = true);
    await expect(mksquashfs(sys, src, img, { compression: 'gzip', pseudo: [{ type: 'stdin', path: 'f', mode: 0o644, uid: 0, gid: 0 }], onStart })).rejects.toThrow(/a pseudo file reads stdin but no stdin was given/);
    await expect(mksquashfs(sys, src, img, { compression: 'gzip', stdin: new PassThrough(), onStart })).rejects.toThrow(/stdin was given but no pseudo file reads it/);
    expect(started).toBe(false);
    await expect(lstat(img)).rejects.toThrow(/ENOENT/);
  });

  it('refuses definitions mksquashfs would silently drop, leaving no image behind', async () => {
    await using d = await tempDir();
    const src = join(d.path, 'src');
    await mkdir(src);
    await writeFile(join(src, 'exists'), 'x');
    const img = join(d.path, 'img.sqfs');
    const cases: [string, Parameters<typeof mksquashfs>[3]['pseudo'], string, RegExp][] = [
      ['parent missing', [{ type: 'dir', path: 'no/parent', mode: 0o755, uid: 0, gid: 0 }], 'TREE_INVALID', /parent directory 'no'/],
      ['modify missing', [{ type: 'modify', path: 'nope', mode: 0o755, uid: 0, gid: 0 }], 'TREE_INVALID', /nope/],
      ['host file missing', [{ type: 'file', path: 'f', source: join(d.path, 'absent') }], 'INPUT_NOT_FOUND', /absent/],
      // Only mksquashfs knows this one (it warns and exits 0): the wrapper must still fail and clean up.
      ['exists in source', [{ type: 'dir', path: 'exists', mode: 0o755, uid: 0, gid: 0 }], 'TREE_INVALID', /pseudo definitions.*exists/],
      ['modify with mtime above another definition', [{ type: 'dir', path: 'd', mode: 0o755, uid: 0, gid: 0 }, { type: 'modify', path: 'd', mode: 0o700, uid: 0, gid: 0, mtime: 5 }], 'INPUT_INVALID', /twice/],
      ['dir with a child under a timed modify', [{ type: 'modify', path: 'exists', mode: 0o700, uid: 0, gid: 0, mtime: 5 }, { type: 'fifo', path: 'exists/x', mode: 0o600, uid: 0, gid: 0 }], 'INPUT_INVALID', /below it/],
      ['defined twice', [{ type: 'dir', path: 'a', mode: 0o755, uid: 0, gid: 0 }, { type: 'fifo', path: '/a', mode: 0o600, uid: 0, gid: 0 }], 'INPUT_INVALID', /defined twice/],
      ['newline in name', [{ type: 'dir', path: 'a\nb', mode: 0o755, uid: 0, gid: 0 }], 'INPUT_INVALID', /newline/],
    ];
    for (const [what, pseudo, code, message] of cases) {
      const err = await mksquashfs(sys, src, img, { compression: 'gzip', mkfsTime: 1, pseudo }).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(TiuError);
      expect((err as TiuError).code, what).toBe(code);
      expect((err as TiuError).message, what).toMatch(message);
      await expect(lstat(img), what).rejects.toThrow(/ENOENT/);
    }
  });
});

export type { System };
