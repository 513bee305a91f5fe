/** The btrfs CLI wrappers, the MicroOS layout, mounting and fstab, and the test helpers themselves. */
import { describe, it, expect } from 'vitest';
import { mkdir, readFile, writeFile, access } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  assertBtrfs, createSubvolume, deleteSubvolume, exclusiveBytes, fsGeneration, getDefaultSubvolume, isReadonly,
  listSubvolumes, setDefaultSubvolume, setReadonly, snapshotSubvolume, subvolumeInfo, trySubvolumeInfo,
} from '../src/snapshot/btrfs.ts';
import { parseSubvolumeShow, parseGetDefault, parseDuExclusive, parseSubvolumeList } from '../src/snapshot/btrfs-parse.ts';
import { createLayout, createInitialSnapshot, mountSystem, renderFstab, SEPARATE_SUBVOLUMES } from '../src/snapshot/layout.ts';
import { mountAt, mountsBelow, parseMountinfo, snapshotNumberOf } from '../src/snapshot/mountinfo.ts';
import { parseInfoXml } from '../src/snapshot/infoxml.ts';
import { TiuError } from '../src/core/errors.ts';
import { makeDevice, makeLoopBtrfs } from './helpers/btrfs.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const LAYOUT = ['@', '@/.snapshots', ...SEPARATE_SUBVOLUMES.map((s) => `@/${s}`)];

async function mounts() {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

async function errorOf(p: Promise<unknown>): Promise<TiuError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TiuError) return e;
    throw e;
  }
  throw new Error('expected a TiuError');
}

describe('btrfs CLI wrappers', () => {
  it('subvolume info, list, snapshot, read-only, default, delete', async () => {
    await using fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const sys = testSystem();
    await assertBtrfs(sys, fs.mount);
    const top = await subvolumeInfo(sys, fs.mount);
    expect(top).toMatchObject({ id: 5, path: '', name: '', parentId: 0, parentUuid: undefined, readonly: false });

    await createSubvolume(sys, join(fs.mount, 'a'));
    await mkdir(join(fs.mount, 'a/dir'));
    await createSubvolume(sys, join(fs.mount, 'a/dir/b c'));
    await writeFile(join(fs.mount, 'a/file'), 'hello');
    await snapshotSubvolume(sys, join(fs.mount, 'a'), join(fs.mount, 'snap'), { readonly: true });
    const a = await subvolumeInfo(sys, join(fs.mount, 'a'));
    const b = await subvolumeInfo(sys, join(fs.mount, 'a/dir/b c'));
    const snap = await subvolumeInfo(sys, join(fs.mount, 'snap'));
    expect(a).toMatchObject({ path: 'a', name: 'a', parentId: 5, readonly: false, parentUuid: undefined });
    expect(b).toMatchObject({ path: 'a/dir/b c', name: 'b c', parentId: a.id });
    expect(snap).toMatchObject({ path: 'snap', readonly: true, parentUuid: a.uuid });
    expect(new Set([a.uuid, b.uuid, snap.uuid]).size).toBe(3);
    expect(await readFile(join(fs.mount, 'snap/file'), 'utf8')).toBe('hello');
    expect(await trySubvolumeInfo(sys, join(fs.mount, 'a/dir'))).toBeUndefined();

    const list = await listSubvolumes(sys, fs.mount);
    expect(list.map((s) => [s.path, s.id, s.topLevel, s.readonly, s.uuid, s.parentUuid])).toEqual([
      ['a', a.id, 5, false, a.uuid, undefined],
      ['a/dir/b c', b.id, a.id, false, b.uuid, undefined],
      ['snap', snap.id, 5, true, snap.uuid, a.uuid],
    ]);

    expect(await isReadonly(sys, join(fs.mount, 'snap'))).toBe(true);
    await setReadonly(sys, join(fs.mount, 'snap'), false);
    expect(await isReadonly(sys, join(fs.mount, 'snap'))).toBe(false);
    await setReadonly(sys, join(fs.mount, 'snap'), true);

    expect(await getDefaultSubvolume(sys, fs.mount)).toEqual({ id: 5, path: '' });
    await setDefaultSubvolume(sys, fs.mount, snap.id);
    expect(await getDefaultSubvolume(sys, fs.mount)).toEqual({ id: snap.id, path: 'snap' });
    await setDefaultSubvolume(sys, fs.mount, 5);

    // A read-only subvolume is deleted like any other.
    await deleteSubvolume(sys, join(fs.mount, 'snap'), { commitAfter: true });
    expect((await listSubvolumes(sys, fs.mount)).map((s) => s.path)).toEqual(['a', 'a/dir/b c']);
    // A subvolume with a nested one cannot be deleted.
    expect((await errorOf(deleteSubvolume(sys, join(fs.mount, 'a')))).code).toBe('TOOL_FAILED');
  });

  it('exclusive bytes (without quotas) and generations', async () => {
    await using fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const sys = testSystem();
    const a = join(fs.mount, 'a');
    await createSubvolume(sys, a);
    await writeFile(join(a, 'data'), randomBytes(3 * 1024 * 1024));
    await sys.run('sync', ['-f', a]);
    const excl = await exclusiveBytes(sys, a);
    expect(excl).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(excl).toBeLessThan(4 * 1024 * 1024);
    // A snapshot shares everything: nothing exclusive on either side...
    await snapshotSubvolume(sys, a, join(fs.mount, 's'));
    await sys.run('sync', ['-f', a]);
    expect(await exclusiveBytes(sys, a)).toBe(0);
    expect(await exclusiveBytes(sys, join(fs.mount, 's'))).toBe(0);
    // ...until one side changes.
    await writeFile(join(fs.mount, 's/new'), randomBytes(1024 * 1024));
    await sys.run('sync', ['-f', a]);
    expect(await exclusiveBytes(sys, join(fs.mount, 's'))).toBeGreaterThanOrEqual(1024 * 1024);

    // fsGeneration: changes before it are <= g, changes after it are > g.
    const g1 = await fsGeneration(sys, fs.mount);
    expect((await subvolumeInfo(sys, a)).generation).toBeLessThanOrEqual(g1);
    expect(await fsGeneration(sys, fs.mount)).toBe(g1);
    const untouched = (await subvolumeInfo(sys, join(fs.mount, 's'))).generation;
    await writeFile(join(a, 'more'), 'x');
    const g2 = await fsGeneration(sys, fs.mount);
    expect(g2).toBeGreaterThan(g1);
    const changed = (await subvolumeInfo(sys, a)).generation;
    expect(changed).toBeGreaterThan(g1);
    expect(changed).toBeLessThanOrEqual(g2);
    expect((await subvolumeInfo(sys, join(fs.mount, 's'))).generation).toBe(untouched);
  });

  it('assertBtrfs says what is wrong in one line with a hint', async (ctx) => {
    const sys = testSystem();
    await using d = await tempDir();
    const type = (await sys.run('findmnt', ['-n', '-o', 'FSTYPE', '-T', d.path])).stdout.trim();
    // (The "not on btrfs" case needs a temp directory elsewhere: reported as a skip, not a pass.)
    if (type === 'btrfs') ctx.skip(`the temp directory ${d.path} is on btrfs`);
    const e = await errorOf(assertBtrfs(sys, d.path));
    expect(e.code).toBe('ROOT_NOT_BTRFS');
    expect(e.message).toBe(`${d.path} is not on btrfs (it is ${type})`);
    expect(e.oneLine()).not.toContain('\n');
    expect(e.hint).toMatch(/--root/);
    expect((await errorOf(assertBtrfs(sys, join(d.path, 'nope')))).code).toBe('INPUT_NOT_FOUND');
  });

  it('names ext4 as ext4 (statfs says only "ext2/ext3")', async () => {
    const sys = testSystem();
    await using d = await tempDir();
    const img = join(d.path, 'ext4.img');
    const mnt = join(d.path, 'mnt');
    await mkdir(mnt);
    await sys.run('truncate', ['-s', '16M', img]);
    await sys.run('mkfs.ext4', ['-q', img]);
    await sys.run('mount', ['-o', 'loop', img, mnt]);
    try {
      expect((await sys.run('stat', ['-f', '-c', '%T', mnt])).stdout.trim()).toBe('ext2/ext3');
      const e = await errorOf(assertBtrfs(sys, mnt));
      expect(e.code).toBe('ROOT_NOT_BTRFS');
      expect(e.message).toBe(`${mnt} is not on btrfs (it is ext4)`);
    } finally {
      await sys.run('umount', [mnt]);
    }
  });

  it('parsers reject output they do not understand', () => {
    expect(() => parseSubvolumeShow('')).toThrow(/empty output/);
    expect(() => parseSubvolumeShow('@\n\tName: \t\t@\n\tUUID: \t\tnot-a-uuid\n\tSubvolume ID: \t\t256\n')).toThrow(/not a UUID/);
    expect(() => parseSubvolumeShow('@\n\tName: \t\t@\n')).toThrow(/no 'Subvolume ID'/);
    expect(() => parseGetDefault('something else')).toThrow(/cannot parse/);
    expect(() => parseDuExclusive('     Total   Exclusive  Set shared  Filename\n')).toThrow(/one row/);
    expect(() => parseSubvolumeList('ID x gen 1 top level 5 path a')).toThrow(/cannot parse/);
    let caught: unknown;
    try {
      parseGetDefault('x');
    } catch (e) {
      caught = e;
    }
    expect((caught as TiuError).code).toBe('TOOL_FAILED');
  });
});

describe('MicroOS layout', () => {
  it('creates the subvolumes on an empty top level and refuses anything else', async () => {
    await using fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const sys = testSystem();
    await createLayout(sys, fs.mount);
    const subs = await listSubvolumes(sys, fs.mount);
    expect(subs.map((s) => s.path).sort()).toEqual([...LAYOUT].sort());
    const byPath = new Map(subs.map((s) => [s.path, s]));
    const at = byPath.get('@')!;
    // All live directly below @, nothing read-only.
    for (const s of subs) {
      if (s.path !== '@') expect(s.topLevel, s.path).toBe(at.id);
      expect(s.readonly).toBe(false);
    }
    const again = await errorOf(createLayout(sys, fs.mount));
    expect(again.code).toBe('ROOT_LAYOUT');
    expect(again.message).toMatch(/not empty/);
    // A subvolume mount is not the top level.
    await mkdir(join(fs.dir, 'sub'));
    await sys.run('mount', ['-o', 'subvol=@/srv', fs.loopDev, join(fs.dir, 'sub')]);
    const notTop = await errorOf(createLayout(sys, join(fs.dir, 'sub')));
    expect(notTop.code).toBe('ROOT_LAYOUT');
    expect(notTop.message).toMatch(/not the top level/);
  });

  it('initial snapshot, mountSystem like a running system, and unmounting', async () => {
    await using fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const sys = testSystem();
    await createLayout(sys, fs.mount);
    const first = await createInitialSnapshot(sys, fs.mount, { description: 'factory', userdata: { important: 'yes' } });
    expect((await getDefaultSubvolume(sys, fs.mount)).id).toBe(first.id);
    const info = parseInfoXml(await readFile(join(fs.mount, '@/.snapshots/1/info.xml'), 'utf8'));
    expect(info).toMatchObject({ num: 1, description: 'factory', userdata: { important: 'yes' } });
    expect((await readFile(join(fs.mount, '@/.snapshots/.tiu-last-number'), 'utf8')).trim()).toBe('1');

    const target = join(fs.dir, 'sysroot');
    await mkdir(target);
    {
      await using sysMount = await mountSystem(sys, fs.loopDev, target);
      const all = await mounts();
      expect(mountAt(all, target)?.root).toBe('/@/.snapshots/1/snapshot');
      expect(mountAt(all, join(target, '.snapshots'))?.root).toBe('/@/.snapshots');
      for (const sub of SEPARATE_SUBVOLUMES) expect(mountAt(all, join(target, sub))?.root, sub).toBe(`/@/${sub}`);
      expect(sysMount.mounts).toEqual([target, join(target, '.snapshots'), ...SEPARATE_SUBVOLUMES.map((s) => join(target, s))]);
      // The mounted system sees itself in its own .snapshots.
      await access(join(target, '.snapshots/1/snapshot/.snapshots'));
      expect(snapshotNumberOf(mountAt(all, target)!.root, '@/.snapshots')).toBe(1);
    }
    expect(mountsBelow(await mounts(), target)).toEqual([]);

    // A specific snapshot, read-only root; a mount point missing in the snapshot is skipped.
    const s2 = join(fs.mount, '@/.snapshots/2');
    await mkdir(s2);
    await snapshotSubvolume(sys, first.path, join(s2, 'snapshot'));
    await sys.run('rmdir', [join(s2, 'snapshot/srv')]);
    {
      await using sysMount = await mountSystem(sys, fs.loopDev, target, 2, { readonlyRoot: true });
      const all = await mounts();
      expect(mountAt(all, target)?.root).toBe('/@/.snapshots/2/snapshot');
      expect(sysMount.mounts).not.toContain(join(target, 'srv'));
      expect(sysMount.mounts).toContain(join(target, 'var'));
      await expect(writeFile(join(target, 'x'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
      await writeFile(join(target, 'var/x'), 'x');
    }
    expect(mountsBelow(await mounts(), target)).toEqual([]);
  });

  it('renders fstab as MicroOS does, and every line mounts what it says', async () => {
    await using dev = await makeDevice({ sizeMiB: 256 });
    const sys = testSystem();
    const fstab = renderFstab(dev.uuid);
    const lines = fstab.trimEnd().split('\n');
    expect(lines[0]).toBe(`UUID=${dev.uuid} / btrfs defaults 0 0`);
    expect(lines[1]).toBe(`UUID=${dev.uuid} /.snapshots btrfs subvol=/@/.snapshots 0 0`);
    expect(lines).toContain(`UUID=${dev.uuid} /var btrfs subvol=/@/var,x-initrd.mount 0 0`);
    expect(lines).toContain(`UUID=${dev.uuid} /usr/local btrfs subvol=/@/usr/local 0 0`);
    expect(lines).toHaveLength(2 + SEPARATE_SUBVOLUMES.length);
    expect(() => renderFstab('not-a-uuid')).toThrow(TiuError);
    // Mount every entry (by the device, with the line's options) and check the subvolume it gets.
    for (const line of lines) {
      const [spec, where, type, opts] = line.split(' ');
      expect(spec).toBe(`UUID=${dev.uuid}`);
      expect(type).toBe('btrfs');
      const at = join(dev.dir, `check${where!.replace(/\//g, '_')}`);
      await mkdir(at);
      // x-* options are for userspace (systemd); mount(8) ignores them too.
      await sys.run('mount', ['-t', 'btrfs', '-o', opts!, dev.loopDev, at]);
      const root = mountAt(await mounts(), at)?.root;
      expect(root, line).toBe(where === '/' ? '/@/.snapshots/1/snapshot' : `/@${where}`);
      await sys.run('umount', [at]);
    }
    // The filesystem UUID is what blkid reports for the device.
    expect((await sys.run('blkid', ['-s', 'UUID', '-o', 'value', dev.loopDev])).stdout.trim()).toBe(dev.uuid);
  });
});

describe('test helpers', () => {
  it('makeDevice: parallel devices, mounted like a running system, cleaned up completely', async () => {
    const devs = await Promise.all([makeDevice(), makeDevice(), makeDevice(), makeDevice()]);
    const dirs = devs.map((d) => d.dir);
    try {
      expect(new Set(devs.map((d) => d.loopDev)).size).toBe(4);
      const all = await mounts();
      for (const d of devs) {
        expect(mountAt(all, d.root)?.root).toBe('/@/.snapshots/1/snapshot');
        expect(mountAt(all, d.snapshotsDir)?.root).toBe('/@/.snapshots');
        expect(mountAt(all, join(d.root, 'var'))?.root).toBe('/@/var');
        expect(mountAt(all, d.top)?.root).toBe('/');
        expect((await getDefaultSubvolume(d.sys, d.top)).path).toBe('@/.snapshots/1/snapshot');
      }
    } finally {
      await Promise.all(devs.map((d) => d[Symbol.asyncDispose]()));
    }
    const all = await mounts();
    for (const dir of dirs) {
      expect(mountsBelow(all, dir)).toEqual([]);
      await expect(access(dir)).rejects.toThrow();
    }
    const loops = (await testSystem().run('losetup', ['-a'])).stdout;
    for (const dir of dirs) expect(loops).not.toContain(dir);
  });

  it('cleans up even when something below is busy', async () => {
    const dev = await makeDevice({ sizeMiB: 256 });
    const { open } = await import('node:fs/promises');
    const busy = await open(join(dev.root, 'var/busy'), 'w');
    try {
      await dev[Symbol.asyncDispose]();
    } finally {
      await busy.close();
    }
    expect(mountsBelow(await mounts(), dev.dir)).toEqual([]);
  });
});
