/** SnapshotStore on real loop-mounted btrfs, with both backends (plain btrfs and snapper). */
import { describe, it, expect } from 'vitest';
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSnapshotStore, type SnapperMode } from '../src/snapshot/store.ts';
import { createSubvolume, isReadonly, listSubvolumes, setReadonly, subvolumeInfo } from '../src/snapshot/btrfs.ts';
import { parseInfoXml, renderInfoXml } from '../src/snapshot/infoxml.ts';
import { HIGH_WATER_FILE } from '../src/snapshot/numbering.ts';
import { parseSnapperHelp } from '../src/snapshot/snapper.ts';
import { TiuError } from '../src/core/errors.ts';
import type { System } from '../src/core/system.ts';
import { makeDevice, makeLoopBtrfs } from './helpers/btrfs.ts';
import { tempDir, testSystem } from './helpers/env.ts';

async function errorOf(p: Promise<unknown>): Promise<TiuError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TiuError) return e;
    throw e;
  }
  throw new Error('expected a TiuError, got success');
}

/** `sys` with every command it runs noted in `calls` (as one line each). */
function recording(base: System): { sys: System; calls: string[] } {
  const calls: string[] = [];
  const sys = Object.create(base) as System;
  sys.run = (cmd, args, o) => {
    calls.push([cmd, ...args].join(' '));
    return base.run(cmd, args, o);
  };
  return { sys, calls };
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

/** What snapper itself lists for R, straight from its JSON (not through tiu's parser). */
async function snapperList(root: string): Promise<Record<string, unknown>[]> {
  const r = await testSystem().run('snapper', ['--no-dbus', '--root', root, '--utc', '--jsonout', '-c', 'root', 'list', '--disable-used-space']);
  return (JSON.parse(r.stdout) as { root: Record<string, unknown>[] }).root.filter((s) => s.number !== 0);
}

const BACKENDS: [SnapperMode, 'btrfs' | 'snapper'][] = [['no', 'btrfs'], ['yes', 'snapper']];

describe.each(BACKENDS)('snapshot store (snapper: %s)', (mode, backendName) => {
  const open = async () => {
    const dev = await makeDevice({ snapper: mode === 'yes' });
    const store = await openSnapshotStore(dev.sys, dev.root, { snapper: mode });
    return { dev, store };
  };

  it('creates, lists and deletes snapshots', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    expect(store.backend).toBe(backendName);
    const initial = await store.list();
    expect(initial.map((s) => [s.num, s.isDefault, s.isMounted, s.description])).toEqual([[1, true, true, 'first root filesystem']]);

    await writeFile(join(dev.root, 'marker'), 'from snapshot 1');
    const before = Date.now();
    const n = await store.create({ from: 1, description: 'update to "2.0" <beta> & more', userdata: { version: '2.0', 'tiu-in-progress': 'yes', empty: '' }, cleanup: 'number', readWrite: true });
    expect(n).toBe(2);
    const s = await store.get(n);
    expect(s).toMatchObject({
      num: 2, type: 'single', description: 'update to "2.0" <beta> & more', cleanup: 'number',
      userdata: { version: '2.0', 'tiu-in-progress': 'yes' }, readonly: false, isDefault: false, isMounted: false,
      path: join(dev.root, '.snapshots/2/snapshot'),
    });
    expect(s.missingInfo).toBeUndefined();
    expect(s.date.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(s.date.getTime()).toBeLessThanOrEqual(Date.now());
    // It is a snapshot of 1: same content, parent UUID is 1's UUID, writable.
    expect(await readFile(join(s.path, 'marker'), 'utf8')).toBe('from snapshot 1');
    const [info1, info2] = await Promise.all([subvolumeInfo(dev.sys, store.snapshotPath(1)), subvolumeInfo(dev.sys, s.path)]);
    expect(info2.parentUuid).toBe(info1.uuid);
    expect(info2.path).toBe('@/.snapshots/2/snapshot');
    await writeFile(join(s.path, 'written'), 'x');
    // The info.xml on disk says the same.
    const onDisk = parseInfoXml(await readFile(join(dev.snapshotsDir, '2/info.xml'), 'utf8'));
    expect(onDisk).toMatchObject({ num: 2, description: s.description, userdata: s.userdata, cleanup: 'number' });

    const ro = await store.create({ from: 2, readWrite: false });
    expect(ro).toBe(3);
    expect(await isReadonly(dev.sys, store.snapshotPath(3))).toBe(true);
    expect((await store.get(3)).readonly).toBe(true);

    await store.delete(2);
    await store.delete(3, { commitAfter: true });
    expect((await store.list()).map((x) => x.num)).toEqual([1]);
    expect(await exists(join(dev.snapshotsDir, '2'))).toBe(false);
    const paths = (await listSubvolumes(dev.sys, dev.root)).map((x) => x.path);
    expect(paths).not.toContain('@/.snapshots/2/snapshot');
    expect(paths).not.toContain('@/.snapshots/3/snapshot');
  });

  it('never reuses a number, even after deleting the newest', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const a = await store.create({ from: 1 });
    const b = await store.create({ from: 1 });
    expect([a, b]).toEqual([2, 3]);
    await store.delete(3);
    expect(await store.create({ from: 1 })).toBe(4);
    await store.delete(4);
    await store.delete(2);
    expect(await store.create({ from: 1 })).toBe(5);
    expect((await readFile(join(dev.snapshotsDir, HIGH_WATER_FILE), 'utf8')).trim()).toBe('5');
    // A numeric directory nobody knows about (another tool, a crash) also counts.
    await mkdir(join(dev.snapshotsDir, '9'));
    expect(await store.leftovers()).toEqual([9]);
    expect(await store.create({ from: 1 })).toBe(10);
    // No placeholder directories are left behind.
    const names = (await readdir(dev.snapshotsDir)).filter((x) => /^\d+$/.test(x)).map(Number).sort((x, y) => x - y);
    expect(names).toEqual([1, 5, 9, 10]);
    await store.delete(9);
    expect(await store.leftovers()).toEqual([]);
    expect(await exists(join(dev.snapshotsDir, '9'))).toBe(false);
  });

  it('modifies userdata and description', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const n = await store.create({ from: 1, description: 'first', userdata: { a: '1', b: '2' } });
    await store.setUserdata(n, { b: null, c: '3', a: '' });
    await store.setUserdata(n, {});
    expect((await store.get(n)).userdata).toEqual({ c: '3' });
    await store.setDescription(n, 'second, with ü');
    const s = await store.get(n);
    expect(s.description).toBe('second, with ü');
    expect(s.cleanup).toBe('');
    const onDisk = parseInfoXml(await readFile(join(dev.snapshotsDir, String(n), 'info.xml'), 'utf8'));
    expect(onDisk.userdata).toEqual({ c: '3' });
    expect(onDisk.description).toBe('second, with ü');
    expect(onDisk.date).toEqual(s.date);
    // Invalid userdata is refused before anything is written.
    const bads: Record<string, string>[] = [{ 'a,b': 'x' }, { k: 'x=y' }, { '': 'x' }];
    for (const bad of bads) {
      expect((await errorOf(store.setUserdata(n, bad))).code).toBe('INPUT_INVALID');
    }
    expect((await errorOf(store.setUserdata(99, { a: '1' }))).code).toBe('SNAPSHOT_NOT_FOUND');
    expect((await store.get(n)).userdata).toEqual({ c: '3' });
  });

  it('sets the read-only flag', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const n = await store.create({ from: 1 });
    await store.setReadonly(n, true);
    expect(await isReadonly(dev.sys, store.snapshotPath(n))).toBe(true);
    expect((await store.get(n)).readonly).toBe(true);
    await expect(writeFile(join(store.snapshotPath(n), 'f'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await store.setReadonly(n, false);
    expect(await isReadonly(dev.sys, store.snapshotPath(n))).toBe(false);
    await writeFile(join(store.snapshotPath(n), 'f'), 'x');
  });

  it('seals a snapshot: flushed, read-only, and the generation btrfs subvolume show reports', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const n = await store.create({ from: 1 });
    await writeFile(join(store.snapshotPath(n), 'f'), 'x'.repeat(100_000));
    const generation = await store.seal(n);
    expect(await isReadonly(dev.sys, store.snapshotPath(n))).toBe(true);
    expect(generation).toBe((await subvolumeInfo(dev.sys, store.snapshotPath(n))).generation);
    // Flushed before it was made read-only: the generation stays what seal() returned.
    await dev.sys.run('btrfs', ['filesystem', 'sync', dev.top]);
    expect((await subvolumeInfo(dev.sys, store.snapshotPath(n))).generation).toBe(generation);
    expect((await errorOf(store.seal(n + 10))).code).toBe('SNAPSHOT_NOT_FOUND');
  });

  it('switches the default subvolume and refuses to delete the default or the mounted snapshot', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const n = await store.create({ from: 1 });
    expect(await store.getDefault()).toBe(1);
    expect(await store.getMounted()).toBe(1);
    await store.setDefault(n);
    const raw = (await dev.sys.run('btrfs', ['subvolume', 'get-default', dev.top])).stdout;
    expect(raw).toMatch(new RegExp(`^ID ${(await subvolumeInfo(dev.sys, store.snapshotPath(n))).id} .* path @/\\.snapshots/${n}/snapshot\\n?$`));
    expect(await store.getDefault()).toBe(n);
    expect(await store.getMounted()).toBe(1);
    expect((await store.list()).map((s) => [s.num, s.isDefault, s.isMounted])).toEqual([[1, false, true], [n, true, false]]);

    const def = await errorOf(store.delete(n));
    expect(def.code).toBe('SNAPSHOT_REFUSED');
    expect(def.message).toMatch(/default/);
    const mounted = await errorOf(store.delete(1));
    expect(mounted.code).toBe('SNAPSHOT_REFUSED');
    expect(mounted.message).toMatch(/mounted/);
    expect((await store.list()).map((s) => s.num)).toEqual([1, n]);

    await store.setDefault(1);
    expect(await store.getDefault()).toBe(1);
    await store.delete(n);
    expect((await errorOf(store.setDefault(n))).code).toBe('SNAPSHOT_NOT_FOUND');
    expect((await errorOf(store.delete(n))).code).toBe('SNAPSHOT_NOT_FOUND');
  });

  it('deletes a read-only snapshot with nested subvolumes', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const n = await store.create({ from: 1 });
    await createSubvolume(dev.sys, join(store.snapshotPath(n), 'nested'));
    await createSubvolume(dev.sys, join(store.snapshotPath(n), 'nested/deeper'));
    await store.setReadonly(n, true);
    await store.delete(n);
    const paths = (await listSubvolumes(dev.sys, dev.root)).map((x) => x.path);
    expect(paths.filter((p) => p.startsWith(`@/.snapshots/${n}/`))).toEqual([]);
    expect(await exists(join(dev.snapshotsDir, String(n)))).toBe(false);
  });

  it('lists a snapshot whose info.xml is missing or damaged, and deletes it', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    const a = await store.create({ from: 1, description: 'a' });
    const b = await store.create({ from: 1, description: 'b' });
    await rm(join(dev.snapshotsDir, String(a), 'info.xml'));
    await writeFile(join(dev.snapshotsDir, String(b), 'info.xml'), '<snapshot><num>');
    const list = await store.list();
    expect(list.map((s) => [s.num, s.missingInfo ?? false, s.description])).toEqual([[1, false, 'first root filesystem'], [a, true, ''], [b, true, '']]);
    expect(list[1]!.infoError).toBeTruthy();
    expect((await errorOf(store.setUserdata(a, { k: 'v' }))).code).toBe('SNAPSHOT_FAILED');
    await store.delete(a);
    await store.delete(b);
    expect((await store.list()).map((s) => s.num)).toEqual([1]);
  });

  it('rejects bad requests', async () => {
    const { dev, store } = await open();
    await using _dev = dev;
    expect((await errorOf(store.get(99))).code).toBe('SNAPSHOT_NOT_FOUND');
    expect((await errorOf(store.create({ from: 99 }))).code).toBe('SNAPSHOT_NOT_FOUND');
    expect((await errorOf(store.create({ from: 1, userdata: { 'x=y': '1' } }))).code).toBe('INPUT_INVALID');
    expect((await errorOf(store.create({ from: 1, description: 'bell\u0007' }))).code).toBe('INPUT_INVALID');
    expect((await errorOf(store.get(0))).code).toBe('USAGE');
    expect((await errorOf(store.get(1.5))).code).toBe('USAGE');
    // Nothing was created by the refused requests.
    expect((await store.list()).map((s) => s.num)).toEqual([1]);
    expect((await readdir(dev.snapshotsDir)).filter((x) => /^\d+$/.test(x))).toEqual(['1']);
  });
});

describe('snapshot store: safety', () => {
  it('never removes directory content recursively when a snapshot directory holds something unexpected', async () => {
    await using dev = await makeDevice();
    const store = await openSnapshotStore(dev.sys, dev.root, { snapper: 'no' });
    // Looks like snapshot 5, but "snapshot" is a plain directory, not a subvolume.
    await mkdir(join(dev.snapshotsDir, '5/snapshot/etc'), { recursive: true });
    await writeFile(join(dev.snapshotsDir, '5/snapshot/etc/precious'), 'keep me');
    expect(await store.leftovers()).toEqual([5]);
    const e = await errorOf(store.delete(5));
    expect(e.code).toBe('SNAPSHOT_FAILED');
    expect(e.message).toContain('still there');
    expect(await readFile(join(dev.snapshotsDir, '5/snapshot/etc/precious'), 'utf8')).toBe('keep me');
  });

  it('reuses the default subvolume it read only while no subvolume changed', async () => {
    await using dev = await makeDevice();
    const { sys, calls } = recording(dev.sys);
    const store = await openSnapshotStore(sys, dev.root, { snapper: 'no' });
    const n = await store.create({ from: 1, readWrite: true });
    expect((await store.get(n)).readonly).toBe(false);
    calls.length = 0;
    expect((await store.list()).map((s) => [s.num, s.readonly, s.isDefault])).toEqual([[1, false, true], [n, false, false]]);
    expect(await store.getDefault()).toBe(1);
    expect(calls.filter((c) => c.startsWith('btrfs subvolume list') || c.startsWith('btrfs subvolume get-default'))).toEqual([]);
    // A change made through the btrfs module (here with another System: the counter is per
    // process) makes the next answer fresh.
    await setReadonly(dev.sys, store.snapshotPath(n), true);
    expect((await store.get(n)).readonly).toBe(true);
    expect(calls.filter((c) => c.startsWith('btrfs subvolume get-default'))).toHaveLength(1);
    // The flag is read afresh in-process (access(2) on this read-write mount): no listing.
    expect(calls.filter((c) => c.startsWith('btrfs subvolume list'))).toEqual([]);
    // Setting the default checks the result with a fresh read.
    calls.length = 0;
    await store.setDefault(n);
    expect(calls.filter((c) => c.startsWith('btrfs subvolume get-default'))).toHaveLength(1);
    expect((await store.list()).find((s) => s.num === n)?.isDefault).toBe(true);
  });

  it('opens and lists with one child process where the mount table says enough, and falls back where it does not', async () => {
    await using dev = await makeDevice();
    const { sys, calls } = recording(dev.sys);
    const setup = await openSnapshotStore(dev.sys, dev.root, { snapper: 'no' });
    const rw = await setup.create({ from: 1, readWrite: true });
    const ro = await setup.create({ from: 1, readWrite: false });
    // A nested subvolume inside a read-only snapshot is listed too (deleting needs it).
    await setReadonly(dev.sys, setup.snapshotPath(ro), false);
    await createSubvolume(dev.sys, join(setup.snapshotPath(ro), 'nested'));
    await setReadonly(dev.sys, setup.snapshotPath(ro), true);
    const truth = new Map((await listSubvolumes(dev.sys, dev.snapshotsDir)).map((s) => [s.id, s.readonly]));

    const store = await openSnapshotStore(sys, dev.root, { snapper: 'no' });
    const listed = await store.list();
    expect(listed.map((s) => [s.num, s.readonly])).toEqual([[1, false], [rw, false], [ro, true]]);
    for (const s of listed) expect(s.readonly, `snapshot ${s.num}`).toBe(truth.get((await subvolumeInfo(dev.sys, s.path)).id));
    // .snapshots is a mount: no `btrfs subvolume show` for it, and no listing (each N/snapshot
    // is checked in-process): the default is the only question for btrfs.
    expect(calls.filter((c) => c.startsWith('btrfs subvolume'))).toEqual([`btrfs subvolume get-default ${dev.root}`]);
    await store.delete(ro);
    expect((await store.list()).map((s) => s.num)).toEqual([1, rw]);

    // A read-only mount of .snapshots: access(2) says EROFS for every snapshot, so the flags are
    // listed (-r) instead; the answers stay right.
    await dev.sys.run('mount', ['-o', 'remount,bind,ro', dev.snapshotsDir]);
    try {
      calls.length = 0;
      const roStore = await openSnapshotStore(sys, dev.root, { snapper: 'no' });
      expect((await roStore.list()).map((s) => [s.num, s.readonly])).toEqual([[1, false], [rw, false]]);
      expect(calls.filter((c) => c.startsWith('btrfs subvolume list'))).toEqual([`btrfs subvolume list -u -q ${dev.snapshotsDir}`, `btrfs subvolume list -r ${dev.snapshotsDir}`]);
    } finally {
      await dev.sys.run('mount', ['-o', 'remount,bind,rw', dev.snapshotsDir]);
    }
  });

  it('refuses to hand out numbers when the high-water mark is damaged', async () => {
    await using dev = await makeDevice();
    const store = await openSnapshotStore(dev.sys, dev.root, { snapper: 'no' });
    await writeFile(join(dev.snapshotsDir, HIGH_WATER_FILE), 'garbage\n');
    const e = await errorOf(store.create({ from: 1 }));
    expect(e.code).toBe('ROOT_LAYOUT');
    expect(e.message).toContain(HIGH_WATER_FILE);
    expect((await store.list()).map((s) => s.num)).toEqual([1]);
    await writeFile(join(dev.snapshotsDir, HIGH_WATER_FILE), '41\n');
    expect(await store.create({ from: 1 })).toBe(42);
  });
});

describe('snapshot store: snapper and plain btrfs agree', () => {
  it('snapper --no-dbus --root R list shows snapshots the plain backend made, with description and userdata', async () => {
    await using dev = await makeDevice({ snapper: true });
    const plain = await openSnapshotStore(dev.sys, dev.root, { snapper: 'no' });
    expect(plain.backend).toBe('btrfs');
    const n = await plain.create({ from: 1, description: 'made by tiu: "x" <y> & ü', userdata: { version: '2.0', 'tiu-in-progress': 'yes' }, cleanup: 'number' });
    const rows = await snapperList(dev.root);
    const row = rows.find((r) => r.number === n);
    expect(row).toMatchObject({ type: 'single', description: 'made by tiu: "x" <y> & ü', cleanup: 'number', userdata: { version: '2.0', 'tiu-in-progress': 'yes' }, default: false, active: false });
    expect(rows.find((r) => r.number === 1)).toMatchObject({ default: true, active: true, description: 'first root filesystem' });
    // And snapper's default marker follows tiu's set-default.
    await plain.setDefault(n);
    expect((await snapperList(dev.root)).find((r) => r.number === n)).toMatchObject({ default: true, active: false });
  });

  it('info.xml written by snapper renders back byte for byte, and both backends list the same', async () => {
    await using dev = await makeDevice({ snapper: true });
    const viaSnapper = await openSnapshotStore(dev.sys, dev.root, { snapper: 'yes' });
    const descriptions = ['plain', 'a "quoted" <desc> & more, ü', 'tab\there', 'new\nline', 'cr\rx', 'emoji 😀', `apos' gt> ]]>`, '  spaces  '];
    for (const d of descriptions) await viaSnapper.create({ from: 1, description: d, userdata: { k: 'v', z: 'é', a: '1' }, cleanup: 'number' });
    for (let n = 2; n < 2 + descriptions.length; n++) {
      const text = await readFile(join(dev.snapshotsDir, String(n), 'info.xml'), 'utf8');
      const info = parseInfoXml(text);
      expect(info.description).toBe(descriptions[n - 2]);
      expect(renderInfoXml(info)).toBe(text);
    }
    const viaBtrfs = await openSnapshotStore(dev.sys, dev.root, { snapper: 'no' });
    expect(await viaBtrfs.list()).toEqual(await viaSnapper.list());
  });

  it("'auto' picks snapper only with a config in R; 'yes' without one is an error", async () => {
    await using dev = await makeDevice({ snapper: false });
    const sys = dev.sys;
    expect((await openSnapshotStore(sys, dev.root)).backend).toBe('btrfs');
    const e = await errorOf(openSnapshotStore(sys, dev.root, { snapper: 'yes' }));
    expect(e.code).toBe('ROOT_LAYOUT');
    expect(e.message).toContain('etc/snapper/configs/root');
    const { addSnapperConfig } = await import('./helpers/btrfs.ts');
    await addSnapperConfig(dev.root);
    expect((await openSnapshotStore(sys, dev.root)).backend).toBe('snapper');
    expect((await openSnapshotStore(sys, dev.root, { snapper: 'no' })).backend).toBe('btrfs');
  });

  it('refuses roots that are not btrfs or have no snapshots subvolume', async () => {
    const sys = testSystem();
    await using d = await tempDir();
    const notBtrfs = await errorOf(openSnapshotStore(sys, d.path));
    let fsType = (await sys.run('stat', ['-f', '-c', '%T', d.path])).stdout.trim();
    // statfs has one magic number for ext2/3/4; tiu names the one the mount table says.
    if (fsType === 'ext2/ext3') fsType = (await sys.run('findmnt', ['-n', '-o', 'FSTYPE', '-T', d.path])).stdout.trim();
    if (fsType !== 'btrfs') {
      expect(notBtrfs.code).toBe('ROOT_NOT_BTRFS');
      expect(notBtrfs.message).toContain(`(it is ${fsType})`);
      expect(notBtrfs.hint).toBeTruthy();
    }
    expect((await errorOf(openSnapshotStore(sys, join(d.path, 'missing')))).code).toBe('INPUT_NOT_FOUND');
    await using fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const noLayout = await errorOf(openSnapshotStore(sys, fs.mount));
    expect(noLayout.code).toBe('ROOT_LAYOUT');
    expect(noLayout.message).toMatch(/\.snapshots is not a btrfs subvolume/);
  });

  it('detects what the installed snapper supports', async () => {
    const sys = testSystem();
    const help = await sys.run('snapper', ['--help'], { allowFailure: true });
    const version = (await sys.run('snapper', ['--version'])).stdout;
    const caps = parseSnapperHelp(help.stdout, version);
    expect(caps.version).toMatch(/^\d+\.\d+/);
    // The modify section of the real help text decides; bookworm's 0.10.4 has no --default.
    const modify = help.stdout.slice(help.stdout.indexOf("Options for 'modify'"), help.stdout.indexOf('Delete snapshot'));
    expect(modify).toContain('--userdata');
    expect(caps.modifyDefault).toBe(modify.includes('--default'));
    if (caps.version === '0.10.4') expect(caps.modifyDefault).toBe(false);
    // A newer snapper's help (options added in the modify section only).
    const newer = help.stdout.replace('\t--userdata, -u <userdata>\tUserdata for snapshot.\n\n  Delete', '\t--userdata, -u <userdata>\tUserdata for snapshot.\n\t--read-only\t\t\tSet snapshot read-only.\n\t--default\t\t\tSet snapshot as default snapshot.\n\n  Delete');
    expect(newer).not.toBe(help.stdout);
    expect(parseSnapperHelp(newer, 'snapper 0.11.0')).toEqual({ version: '0.11.0', modifyDefault: true, modifyReadOnly: true });
  });
});
