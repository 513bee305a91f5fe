/**
 * The device side on real loop-mounted btrfs: install, extract/update, identical images, the
 * reproducible-build trap, failures half-way, bad input, concurrency, snapper. Runs as root.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { copyFile, mkdir, open, readFile, readdir, readlink, symlink, utimes, writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createArchive } from '../src/tiu/archive/create.ts';
import { prefetchUpdateSource } from '../src/tiu/device/source.ts';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { testSystem } from './helpers/env.ts';
import { createSystem } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { makeArchives, installedDevice, cli, expectSnapshotEquals, type ArchiveSet } from './helpers/device.ts';
import { addSnapperConfig, makeLoopBtrfs } from './helpers/btrfs.ts';
import { scanTreeToArray } from '../src/core/fileindex/scan.ts';
import { loadIndex } from '../src/core/fileindex/io.ts';
import { DEFAULT_EXCLUDES } from '../src/tiu/config.ts';
import { INDEX_PATH } from '../src/tiu/device/paths.ts';
import { pathsToProbe } from '../src/tiu/device/trusted.ts';
import { exclusiveBytes, getDefaultSubvolume } from '../src/snapshot/btrfs.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-device-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const keyringArgs = () => ['--keyring', A.keys.keyring];

/** Every entry of the snapshot vs the image's index it records, /etc and tiu's own state aside. */
async function expectSnapshotEqualsImage(snapDir: string): Promise<number> {
  return expectSnapshotEquals(sys, snapDir, await loadIndex(join(snapDir, INDEX_PATH)));
}

/** `tiu extract --json` under `strace -f -e trace=%file`: its result and the file-system calls made. */
async function tracedExtract(root: string, archive: string): Promise<{ res: any; calls: string[] }> {
  const log = join(work, `strace-${process.pid}-${Date.now()}`);
  const r = await sys.run('strace', ['-f', '-qq', '-e', 'trace=%file', '-o', log, process.execPath, join(import.meta.dirname, '../bin/tiu.js'), 'extract', archive, '--root', root, ...keyringArgs(), '--json'], { allowFailure: true });
  expect(r.exitCode, r.stderr).toBe(0);
  // strace quotes names C-style (a newline as \n, a 0xff byte as \377): decoded here into tiu's
  // byte-string form (latin1), so they compare with index paths.
  const calls = (await readFile(log, 'latin1')).split('\n').map(unescapeStrace);
  await rm(log, { force: true });
  return { res: JSON.parse(r.stdout), calls };
}

const STRACE_ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', v: '\v', f: '\f', '"': '"', '\\': '\\' };
/** One strace line with its C escapes (\n, \ooo, \xhh) turned back into the bytes they stand for. */
function unescapeStrace(line: string): string {
  return line.replace(/\\([0-7]{1,3}|x[0-9a-fA-F]{2}|[ntrvf"\\])/g, (_, e: string) =>
    /^[0-7]/.test(e) ? String.fromCharCode(parseInt(e, 8)) : e[0] === 'x' ? String.fromCharCode(parseInt(e.slice(1), 16)) : STRACE_ESCAPES[e]!);
}

async function snapshotsOf(root: string) {
  const r = await cli(['status', '--root', root, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout).snapshots as { number: number; default: boolean; booted: boolean; inProgress: boolean; version: string | null; health: string }[];
}

describe('tiu install + extract on loop btrfs', () => {
  it('installs v1, updates to v2: the new snapshot equals v2 exactly, the base is unchanged', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    const n1 = await expectSnapshotEqualsImage(snap1);
    expect(n1).toBeGreaterThan(40);
    const before = await scanTreeToArray(sys, snap1, { exclude: DEFAULT_EXCLUDES });

    const r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs(), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.number).toBe(2);
    expect(res.trustedBaseIndex).toBe(true);
    // Only what changed was written: the 300 kB unchanged file stays shared with snapshot 1 and
    // the 8 MiB sparse file is written sparse.
    await sys.run('btrfs', ['filesystem', 'sync', dev.root]);
    expect(await exclusiveBytes(sys, join(dev.root, '.snapshots/2/snapshot'))).toBeLessThan(200_000);
    expect(res.stats.metaOnly).toBeGreaterThanOrEqual(5);
    await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
    expect(await readFile(join(dev.root, '.snapshots/2/snapshot/usr/share/t/trap'), 'utf8')).toBe('BBBB');
    // The running snapshot is untouched, the default switched.
    const after = await scanTreeToArray(sys, snap1, { exclude: DEFAULT_EXCLUDES });
    expect(after.entries).toEqual(before.entries);
    const list = await snapshotsOf(dev.root);
    expect(list.map((s) => [s.number, s.default, s.booted, s.inProgress, s.version])).toEqual([
      [1, false, true, false, '1.0'],
      [2, true, false, false, '2.0'],
    ]);
    expect((await getDefaultSubvolume(sys, dev.root)).path).toBe('@/.snapshots/2/snapshot');
    // Finished snapshots are read-only; /etc stays writable (nested subvolume).
    await expect(writeFile(join(dev.root, '.snapshots/2/snapshot/usr/x'), 'x')).rejects.toThrow(/read-only/);
    await writeFile(join(dev.root, '.snapshots/2/snapshot/etc/writable'), 'ok');
  });

  it('an identical image costs at most 64 kB', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const r = await cli(['extract', A.v1, '--root', dev.root, ...keyringArgs(), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    await sys.run('btrfs', ['filesystem', 'sync', dev.root]);
    const excl = await exclusiveBytes(sys, join(dev.root, '.snapshots/2/snapshot'));
    expect(excl).toBeLessThanOrEqual(64 * 1024);
    expect(JSON.parse(r.stdout).stats.written).toBeLessThanOrEqual(1);
  });

  it('the image the trusted base holds: the base copied as it is, never mounted, every block still verified', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    // A local /etc edit (the running /etc), and one made after the update, before the reboot.
    await writeFile(join(dev.root, 'etc/hostname'), 'edited-before\n');
    const dry = await cli(['extract', A.v1, '--root', dev.root, ...keyringArgs(), '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^nothing to write: snapshot 1 holds this image \(signed index [0-9a-f]{16}…\)$/m);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1]);
    const r = await cli(['--debug', 'extract', A.v1, '--root', dev.root, ...keyringArgs(), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ number: 2, sameImage: true, verification: 'userspace', madeDefault: true, stats: { written: 0, created: 0, removed: 0, metaOnly: 0 } });
    expect(res.stats.unchanged).toBe((await loadIndex(join(snap1, INDEX_PATH))).length);
    // Nothing mounted; every block hashed before the switch.
    expect(r.stderr).not.toMatch(/run: mount /);
    expect(r.stderr).toMatch(/every block of the archive verified/);
    expect(r.stderr.indexOf('every block of the archive verified')).toBeLessThan(r.stderr.indexOf('set-default'));
    const snap2 = join(dev.root, '.snapshots/2/snapshot');
    await expectSnapshotEqualsImage(snap2);
    const tree = async (d: string) => (await scanTreeToArray(sys, d, { exclude: DEFAULT_EXCLUDES })).entries.filter((e) => !e.path.startsWith('usr/lib/tiu/image'));
    expect(await tree(snap2)).toEqual(await tree(snap1));
    expect(await readFile(join(snap2, 'etc/hostname'), 'utf8')).toBe('edited-before\n');
    const list = await snapshotsOf(dev.root);
    expect(list.map((s) => [s.number, s.default, s.inProgress, s.version])).toEqual([[1, false, false, '1.0'], [2, true, false, '1.0']]);
    // The syncpoint is the new /etc as carried over: a later edit is merged by tiu etc sync.
    await writeFile(join(dev.root, 'etc/hostname'), 'edited-after\n');
    const s = await cli(['etc', 'sync', '--root', dev.root]);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout).toMatch(/carried 1 changed path/);
    expect(await readFile(join(snap2, 'etc/hostname'), 'utf8')).toBe('edited-after\n');
  });

  it('the same image with a flipped byte (in data nothing reads): rejected, nothing changed', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const bad = join(work, 'tampered-v1.tiu');
    await copyFile(A.v1, bad);
    const info = JSON.parse((await cli(['info', A.v1, ...keyringArgs(), '--json'])).stdout);
    const fh = await open(bad, 'r+');
    const at = Math.floor(info.manifest.image.size / 2);
    const [b] = (await fh.read(Buffer.alloc(1), 0, 1, at)).buffer;
    await fh.write(Buffer.from([b! ^ 0x40]), 0, 1, at);
    await fh.close();
    // Not even the next snapshot number is taken.
    const state = async () => {
      const names = (await readdir(join(dev.root, '.snapshots'))).sort();
      return { names, last: await readFile(join(dev.root, '.snapshots/.tiu-last-number'), 'utf8').catch(() => undefined) };
    };
    const before = await state();
    const r = await cli(['extract', bad, '--root', dev.root, ...keyringArgs()]);
    expect(r.exitCode).toBe(18);
    expect(r.stderr).toMatch(/\[ARCHIVE_VERITY\]/);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1]);
    expect(await state()).toEqual(before);
    expect((await getDefaultSubvolume(sys, dev.root)).path).toBe('@/.snapshots/1/snapshot');
    // The dry run checks the blocks too.
    expect((await cli(['extract', bad, '--root', dev.root, ...keyringArgs(), '--dry-run'])).exitCode).toBe(18);
  });

  it('an update whose vendor /etc did not change carries the local /etc over as it is, unmerged', async () => {
    const dir = join(work, 'same-etc');
    // v2's /etc is v1's, entry for entry; the rest of v2 differs as usual.
    const B = await makeArchives(sys, dir, {
      prepare: async (tree, v) => {
        if (v === 2) {
          await rm(join(tree, 'etc'), { recursive: true });
          await sys.run('cp', ['-a', join(dir, 'tree-v1/etc'), join(tree, 'etc')]);
        }
        await sys.run('find', [join(tree, 'etc'), '-exec', 'touch', '-h', '-d', '@1600000000', '{}', '+']);
      },
    });
    await using dev = await installedDevice(sys, B.v1, B.keyringPem);
    // Local changes: an edit, an added file, a deleted vendor file.
    await writeFile(join(dev.root, 'etc/hostname'), 'local-name\n');
    await writeFile(join(dev.root, 'etc/added-here'), 'mine\n');
    await rm(join(dev.root, 'etc/ssh/sshd_config'));
    const etcOf = async (d: string) => (await scanTreeToArray(sys, d, { exclude: [] })).entries;
    const live = await etcOf(join(dev.root, 'etc'));
    const dry = await cli(['extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^\/etc merge:\ncarried over as it is: the image's vendor \/etc is snapshot 1's$/m);
    expect(dry.stdout).not.toMatch(/ \/etc\//);
    const r = await cli(['--debug', 'extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ number: 2, etcCarriedOver: true, trustedBaseIndex: true, etcPlan: ["carried over as it is: the image's vendor /etc is snapshot 1's"] });
    expect(res.sameImage).toBeUndefined();
    expect(res.stats.written).toBeGreaterThan(0);
    // No vendor /etc written into the snapshot and merged back; the syncpoint is the new /etc.
    expect(r.stderr).not.toMatch(/cp -a --reflink=auto/);
    expect(r.stderr).toMatch(/subvolume snapshot -r \S*\.snapshots\/2\/snapshot\/etc \S*\.snapshots\/2\/etc-syncpoint/);
    const snap2 = join(dev.root, '.snapshots/2/snapshot');
    await expectSnapshotEqualsImage(snap2);
    expect(await etcOf(join(snap2, 'etc'))).toEqual(live);
    expect(await etcOf(join(dev.root, '.snapshots/2/snapshot/usr/lib/tiu/vendor-etc'))).toEqual(await etcOf(join(dev.root, '.snapshots/1/snapshot/usr/lib/tiu/vendor-etc')));
    // An edit after the update still reaches the new snapshot.
    await writeFile(join(dev.root, 'etc/hostname'), 'renamed-later\n');
    const s = await cli(['etc', 'sync', '--root', dev.root]);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(await readFile(join(snap2, 'etc/hostname'), 'utf8')).toBe('renamed-later\n');
    // A delta between the same images carries /etc over too (and carries no /etc content).
    const delta = join(dir, 'v1-v2.tiud');
    const d = await cli(['delta', B.v1, B.v2, '-o', delta, '--key', B.keys.signingKey, '--cert', B.keys.signingCert, '--keyring', B.keys.keyring]);
    expect(d.exitCode, d.stderr).toBe(0);
    await using dev3 = await installedDevice(sys, B.v1, B.keyringPem);
    await writeFile(join(dev3.root, 'etc/hostname'), 'local-name\n');
    const live3 = await etcOf(join(dev3.root, 'etc'));
    const dr = JSON.parse((await cli(['extract', delta, '--root', dev3.root, '--keyring', B.keys.keyring, '--json'])).stdout);
    expect(dr).toMatchObject({ number: 2, etcCarriedOver: true, verification: 'signed-index' });
    await expectSnapshotEqualsImage(join(dev3.root, '.snapshots/2/snapshot'));
    expect(await etcOf(join(dev3.root, '.snapshots/2/snapshot/etc'))).toEqual(live3);
    // The usual update (v1 -> v2 of the other set changes sshd_config) still merges.
    await using dev2 = await installedDevice(sys, A.v1, A.keyringPem);
    const u = JSON.parse((await cli(['extract', A.v2, '--root', dev2.root, ...keyringArgs(), '--json'])).stdout);
    expect(u.etcCarriedOver).toBeUndefined();
    expect(u.etc.takenFromVendor).toContain('ssh/sshd_config');
  });

  it('the same image on a base changed after sealing: applied in full, the change undone', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'false']);
    await writeFile(join(snap1, 'usr/share/t/trap'), 'XXXX');
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'true']);
    const r = await cli(['--debug', 'extract', A.v1, '--root', dev.root, ...keyringArgs(), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.sameImage).toBeUndefined();
    expect(res.trustedBaseIndex).toBe(false);
    expect(r.stderr).toMatch(/run: mount -t squashfs/);
    expect(res.stats.written).toBeGreaterThanOrEqual(1);
    await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
  });

  it('a trusted base is planned from the indexes: unchanged files are neither opened nor stat-ed', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const oldIndex = await loadIndex(join(dev.root, '.snapshots/1/snapshot', INDEX_PATH));
    const { res, calls } = await tracedExtract(dev.root, A.v2);
    expect(res.trustedBaseIndex).toBe(true);
    expect(res.probe.mode).toBe('trusted-index');
    // Below /usr/share/t (no volatile place) only the paths whose entries differ are touched.
    const newIndex = await loadIndex(join(dev.root, '.snapshots/2/snapshot', INDEX_PATH));
    const probed = new Set(pathsToProbe(oldIndex, newIndex));
    const touched = new Set(calls.flatMap((l) => [...l.matchAll(/\.snapshots\/2\/snapshot\/(usr\/share\/t\/[^"]+)"/g)].map((m) => m[1]!)));
    expect(touched.size).toBeGreaterThan(3);
    expect([...touched].filter((p) => !probed.has(p) && ![...probed].some((q) => p.startsWith(q + '/')))).toEqual([]);
    expect(probed.has('usr/share/t/unchanged.bin')).toBe(false);
    // The new snapshot's unchanged file: not one file-system call names it (no lstat, no open).
    expect(calls.filter((l) => l.includes('.snapshots/2/snapshot/usr/share/t/unchanged.bin'))).toEqual([]);
    // Nor through a directory fd (paths resolved beneath a root: /proc/self/fd/N/<name>).
    expect(calls.filter((l) => /\/proc\/self\/fd\/\d+\/unchanged\.bin/.test(l))).toEqual([]);
    // The changed one was looked at.
    expect(calls.some((l) => l.includes('.snapshots/2/snapshot/usr/share/t/trap'))).toBe(true);
    await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
  });

  it('dry run prints the plan and changes nothing', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs(), '--dry-run']);
    expect(r.exitCode, r.stderr).toBe(0);
    // A file with new content is rewritten in place: one line.
    expect(r.stdout).toMatch(/^rewrite +\/usr\/share\/t\/trap$/m);
    expect(r.stdout).not.toMatch(/^remove +\/usr\/share\/t\/trap$/m);
    expect(r.stdout).toMatch(/^write +\/usr\/share\/t\/added$/m);
    expect(r.stdout).toMatch(/^meta +\/usr\/share\/t\/mode \(mode\)$/m);
    expect(r.stdout).toMatch(/^remove +\/usr\/share\/t\/removed$/m);
    // ...and the /etc merge it would do (the vendor's sshd_config change taken).
    expect(r.stdout).toMatch(/^\/etc merge:$/m);
    expect(r.stdout).toMatch(/^take-new +\/etc\/ssh\/sshd_config/m);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1]);
  });

  it('distrusts a modified base snapshot and still produces exactly v2', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    // Someone made the base writable and changed a file without changing size or mtime.
    await sys.run('btrfs', ['property', 'set', snap1, 'ro', 'false']);
    const fh = await open(join(snap1, 'usr/share/t/unchanged.bin'), 'r+');
    await fh.write(Buffer.from([9]), 0, 1, 1000);
    await fh.close();
    await sys.run('touch', ['-d', '@1600000000', join(snap1, 'usr/share/t/unchanged.bin')]);
    await sys.run('btrfs', ['property', 'set', snap1, 'ro', 'true']);
    const entries = (await loadIndex(join(snap1, INDEX_PATH))).length;
    const { res, calls } = await tracedExtract(dev.root, A.v2);
    expect(res.trustedBaseIndex).toBe(false);
    // The full comparison: every path scanned, and the same-size file hashed (opened).
    expect(res.probe.mode).toBe('full-scan');
    expect(res.probe.pathsRead).toBeGreaterThanOrEqual(entries - 5);
    // (Content is opened beneath its root, through /proc/self/fd/N/<name> (src/core/safepath.ts).)
    expect(calls.some((l) => /openat\(.*(\.snapshots\/2\/snapshot\/usr\/share\/t\/|\/proc\/self\/fd\/\d+\/)unchanged\.bin/.test(l))).toBe(true);
    await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
  });

  it('a failure half-way (ENOSPC) exits non-zero, removes the snapshot, keeps the default', async () => {
    const big = join(work, 'big');
    await rm(big, { recursive: true, force: true });
    await sys.run('cp', ['-a', join(work, 'tree-v2'), big]);
    await sys.run('sh', ['-c', `head -c 400000000 /dev/urandom > ${join(big, 'usr/share/t/huge')}`]);
    const bigArchive = join(work, 'big.tiu');
    const keysDir = join(work, 'keys');
    const c = await cli(['create', big, '-o', bigArchive, '--key', join(keysDir, 'signing.key.pem'), '--cert', join(keysDir, 'signing.cert.pem'), '--compatible', 'test-x86_64', '--version', '3.0', '--compression', 'lz4', '--no-progress']);
    expect(c.exitCode, c.stderr).toBe(0);
    await using dev = await installedDevice(sys, A.v1, A.keyringPem, { sizeMiB: 300 });
    const r = await cli(['extract', bigArchive, '--root', dev.root, ...keyringArgs()]);
    expect(r.exitCode).toBe(62);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/no space left on device.*\[NO_SPACE\]$/i);
    expect(r.stderr).not.toMatch(/at .*\.ts:\d+/);
    const list = await snapshotsOf(dev.root);
    expect(list.map((s) => [s.number, s.default])).toEqual([[1, true]]);
    await rm(big, { recursive: true, force: true });
  });

  it('bad input changes nothing: wrong compatible, tampered archive, unsigned keyring, not btrfs, no layout', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const other = await makeArchives(sys, join(work, 'other'), { compatible: 'other-device' });
    let r = await cli(['extract', other.v2, '--root', dev.root, '--keyring', other.keys.keyring]);
    expect(r.exitCode).toBe(20);
    expect(r.stderr).toMatch(/archive is for 'other-device', this device is 'test-x86_64'.*\[ARCHIVE_COMPATIBLE\]/);
    // A key the device does not trust.
    r = await cli(['extract', other.v2, '--root', dev.root, ...keyringArgs()]);
    expect(r.exitCode).toBe(13);
    // One flipped byte in the image.
    const bad = join(work, 'tampered.tiu');
    await copyFile(A.v2, bad);
    const fh = await open(bad, 'r+');
    const info = JSON.parse((await cli(['info', A.v2, ...keyringArgs(), '--json'])).stdout);
    // (flipped, not overwritten: the middle of the image is the tree's random data, where a
    // fixed byte was already there once in 256 runs and the archive stayed intact)
    const at = Math.floor(info.manifest.image.size / 2);
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, at);
    byte[0]! ^= 0xff;
    await fh.write(byte, 0, 1, at);
    await fh.close();
    r = await cli(['extract', bad, '--root', dev.root, ...keyringArgs()]);
    expect(r.exitCode).toBe(18);
    expect(r.stderr).toMatch(/\[ARCHIVE_VERITY\]/);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1]);
    // Not btrfs.
    const plain = await mkdtemp(join(tmpdir(), 'tiu-notbtrfs-'));
    await sys.run('mount', ['-t', 'tmpfs', 'tmpfs', plain]);
    try {
      r = await cli(['extract', A.v2, '--root', plain, ...keyringArgs()]);
      expect(r.exitCode).toBe(30);
      expect(r.stderr).toMatch(/\[ROOT_NOT_BTRFS\]/);
      // The archive is opened and checked while the device is (prefetchUpdateSource), but a bad
      // root is still what is reported first, for a damaged or a missing archive alike.
      for (const archive of [bad, join(work, 'no-such.tiu')]) {
        r = await cli(['extract', archive, '--root', plain, ...keyringArgs()]);
        expect([r.exitCode, r.stderr]).toEqual([30, expect.stringMatching(/\[ROOT_NOT_BTRFS\]/)]);
      }
    } finally {
      await sys.run('umount', [plain]);
      await rm(plain, { recursive: true });
    }
    // btrfs without the layout.
    await using fs = await makeLoopBtrfs({ sizeMiB: 200 });
    r = await cli(['extract', A.v2, '--root', fs.mount, ...keyringArgs()]);
    expect(r.exitCode).toBe(31);
    expect(r.stderr).toMatch(/\[ROOT_LAYOUT\]/);
  });

  it('an archive opened ahead of the device: its errors surface where it is taken; one never taken is stopped and closed', async () => {
    // 48 MiB that do not compress: the block check takes several chunks.
    const tree = join(work, 'big-tree');
    await mkdir(tree, { recursive: true });
    await writeFile(join(tree, 'noise.bin'), randomBytes(48 * 1024 * 1024));
    const big = join(work, 'big.tiu');
    await createArchive(sys, {
      source: tree, output: big, keyPem: await readFile(A.keys.signingKey, 'utf8'), certPem: await readFile(A.keys.signingCert, 'utf8'),
      compatible: 'test-x86_64', version: '9.0', compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES,
    });
    /** The processes (any) with `file` open. */
    const openersOf = async (file: string) => {
      const found: number[] = [];
      for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
        const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
        for (const fd of fds) if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === file) found.push(Number(pid));
      }
      return found;
    };
    const fdsOn = async (file: string) => {
      const fds = await readdir('/proc/self/fd');
      const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
      return targets.filter((t) => t === file).length;
    };
    // Disposed untaken (the device could not be opened): the check stops early, the file is closed.
    const fractions: number[] = [];
    const early = prefetchUpdateSource(big, { keyringPem: A.keyringPem }, (_phase, f) => fractions.push(f));
    while (!fractions.some((f) => f > 0)) await new Promise((r) => setImmediate(r));
    expect(await fdsOn(big)).toBe(1);
    await early[Symbol.asyncDispose]();
    expect(Math.max(...fractions)).toBeLessThan(1);
    expect(await fdsOn(big)).toBe(0);
    // The same with veritysetup checking the blocks (as tiu extract runs it): the child is
    // stopped, and nothing holds the file any more.
    const lines: string[] = [];
    const logged = createSystem(createLogger('debug', (l) => void lines.push(l)));
    const external = prefetchUpdateSource(big, { keyringPem: A.keyringPem }, undefined, logged);
    while (!lines.some((l) => /run: veritysetup verify/.test(l))) await new Promise((r) => setImmediate(r));
    await external[Symbol.asyncDispose]();
    expect(lines.filter((l) => /veritysetup verify/.test(l)).map((l) => l.split(':')[2])).toEqual([' run', ' exit SIGTERM']);
    expect(await openersOf(big)).toEqual([]);
    // Taken: the whole check runs; a bad archive's error comes from take(), not before.
    const taken = prefetchUpdateSource(big, { keyringPem: A.keyringPem });
    const opened = await taken.take();
    expect(opened?.archive.manifest.version).toBe('9.0');
    await opened!.verified;
    await opened!.archive.close();
    await expect(taken.take()).rejects.toMatchObject({ code: 'INTERNAL' });
    await taken[Symbol.asyncDispose]();
    const missing = prefetchUpdateSource(join(work, 'no-such.tiu'), { keyringPem: A.keyringPem });
    await expect(missing.take()).rejects.toMatchObject({ code: 'INPUT_NOT_FOUND' });
    const untrusted = prefetchUpdateSource(A.v2, { keyringPem: (await makeArchives(sys, join(work, 'stranger'))).keyringPem });
    await expect(untrusted.take()).rejects.toMatchObject({ code: 'ARCHIVE_UNTRUSTED' });
  }, 120_000);

  it('a missing tool is named with the package to install, and nothing changes', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    // A PATH with everything tiu uses except btrfs-progs.
    const bin = await mkdtemp(join(tmpdir(), 'tiu-path-'));
    try {
      for (const t of ['stat', 'mount', 'umount', 'losetup', 'flock', 'cat', 'getfattr', 'setfattr', 'xargs', 'cp', 'sync', 'mknod', 'snapper', 'sh']) {
        const where = (await sys.run('sh', ['-c', `command -v ${t}`], { allowFailure: true })).stdout.trim();
        if (where) await sys.run('ln', ['-s', where, join(bin, t)]);
      }
      const r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs()], { env: { PATH: bin } });
      expect(r.exitCode).toBe(60);
      expect(r.stderr).toMatch(/required tool 'btrfs' is not installed; install it \(Debian\/Ubuntu: apt-get install btrfs-progs.*\[TOOL_MISSING\]/);
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1]);
  });

  it('two concurrent updates: one runs, the other fails fast with BUSY', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const timed = async () => {
      const t0 = Date.now();
      const r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs()]);
      return { ...r, ms: Date.now() - t0 };
    };
    const results = await Promise.all([timed(), timed()]);
    const ok = results.filter((r) => r.exitCode === 0);
    const busy = results.filter((r) => r.exitCode === 32);
    expect(ok.length, results.map((r) => r.stderr).join('\n')).toBe(1);
    expect(busy.length).toBe(1);
    expect(busy[0]!.stderr).toMatch(/another tiu transaction is running.*\[BUSY\]/);
    expect(busy[0]!.ms).toBeLessThan(ok[0]!.ms);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1, 2]);
  });

  it('status, pin, rollback and cleanup', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    // v1 after v2 is a downgrade: allowed explicitly.
    for (const a of [A.v2, A.v1, A.v2]) expect((await cli(['extract', a, '--root', dev.root, ...keyringArgs(), ...(a === A.v1 ? ['--allow-downgrade'] : [])])).exitCode).toBe(0);
    let list = await snapshotsOf(dev.root);
    expect(list.map((s) => s.number)).toEqual([1, 2, 3, 4]);
    expect(list.find((s) => s.default)!.number).toBe(4);
    // rollback without argument: the booted snapshot (1) undoes the pending update
    let r = await cli(['rollback', '--root', dev.root]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await snapshotsOf(dev.root)).find((s) => s.default)!.number).toBe(1);
    r = await cli(['rollback', '3', '--root', dev.root]);
    expect(r.exitCode, r.stderr).toBe(0);
    r = await cli(['rollback', '99', '--root', dev.root]);
    expect(r.exitCode).toBe(33);
    r = await cli(['pin', '2', '--root', dev.root]);
    expect(r.exitCode, r.stderr).toBe(0);
    r = await cli(['cleanup', '--keep', '0', '--root', dev.root]);
    expect(r.exitCode, r.stderr).toBe(0);
    list = await snapshotsOf(dev.root);
    // 1 booted, 2 pinned, 3 default; 4 deleted
    expect(list.map((s) => s.number)).toEqual([1, 2, 3]);
    expect(list.find((s) => s.number === 2)!).toMatchObject({ pinned: true });
  });

  it('uses snapper when a config exists: snapper --no-dbus list shows the tiu snapshots', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    await addSnapperConfig(dev.root);
    const r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs(), '--debug']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/run: snapper --no-dbus/);
    const list = await sys.run('snapper', ['--no-dbus', '--root', dev.root, '-c', 'root', 'list']);
    expect(list.stdout).toMatch(/tiu: test-x86_64 2\.0/);
    expect(list.stdout).toMatch(/tiu-version=2\.0/);
  });
});


describe('a changed file is rewritten in place', () => {
  it('only its changed blocks take new space; the base keeps its own content; a distrusted base gets the same', async () => {
    const big = randomBytes(4 * 1024 * 1024);
    const changed = Buffer.from(big);
    changed.fill(0x5a, 1024 * 1024, 1024 * 1024 + 4096);
    const dir = await mkdtemp(join(tmpdir(), 'tiu-inplace-'));
    try {
      const B = await makeArchives(sys, dir, {
        prepare: async (tree, v) => {
          // v2: one 4 KiB block changed and 100 bytes appended.
          await writeFile(join(tree, 'usr/share/big.bin'), v === 1 ? big : Buffer.concat([changed, Buffer.alloc(100, 1)]));
        },
      });
      for (const distrust of [false, true]) {
        await using dev = await installedDevice(sys, B.v1, B.keyringPem);
        // A writable base is not trusted: the full comparison path must rewrite in place too.
        if (distrust) await sys.run('btrfs', ['property', 'set', '-ts', join(dev.root, '.snapshots/1/snapshot'), 'ro', 'false']);
        const r = await cli(['extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--json']);
        expect(r.exitCode, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout).trustedBaseIndex).toBe(!distrust);
        const file = (n: number) => join(dev.root, `.snapshots/${n}/snapshot/usr/share/big.bin`);
        expect((await readFile(file(2))).equals(Buffer.concat([changed, Buffer.alloc(100, 1)]))).toBe(true);
        expect((await readFile(file(1))).equals(big)).toBe(true);
        await sys.run('btrfs', ['filesystem', 'sync', dev.root]);
        // Written fresh, the file would own 4 MiB; in place, the changed block and the new tail.
        expect(await exclusiveBytes(sys, file(2))).toBeLessThanOrEqual(64 * 1024);
        await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('an update that re-dates many files', () => {
  it('re-dates them in a child (trusted base: not looked up in the plan; distrusted: scanned): the snapshot equals v2, the base unchanged', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tiu-redate-'));
    /** 200 files and symlinks (odd names among them) whose only change is their mtime. */
    const names = [...Array.from({ length: 190 }, (_, i) => `usr/share/redate/pkg${i % 7}/file-${i}`), "usr/share/redate/it's", 'usr/share/redate/new\nline', 'usr/share/redate/-dash', 'usr/share/redate/$(touch pwned)'];
    const odd = Buffer.from('usr/share/redate/\xff', 'latin1');
    try {
      const B = await makeArchives(sys, dir, {
        prepare: async (tree, v) => {
          for (let i = 0; i < 7; i++) await mkdir(join(tree, `usr/share/redate/pkg${i}`), { recursive: true });
          // v1: all of one date; v2: two other dates (a package rebuilt in two runs).
          const when = (i: number) => (v === 1 ? 1_600_000_000 : 1_700_000_000 + (i % 2) * 86_400);
          for (const [i, n] of names.entries()) {
            await writeFile(join(tree, n), `same content ${i}`);
            await utimes(join(tree, n), when(i), when(i));
          }
          await writeFile(Buffer.concat([Buffer.from(tree + '/'), odd]), 'odd');
          await utimes(Buffer.concat([Buffer.from(tree + '/'), odd]), when(1), when(1));
          for (let i = 0; i < 6; i++) {
            await symlink(`pkg0/file-${i}`, join(tree, `usr/share/redate/link-${i}`));
            await sys.run('touch', ['-h', '-d', `@${when(i)}`, join(tree, `usr/share/redate/link-${i}`)]);
          }
        },
      });
      for (const distrust of [false, true]) {
        await using dev = await installedDevice(sys, B.v1, B.keyringPem);
        const snap1 = join(dev.root, '.snapshots/1/snapshot');
        if (distrust) await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'false']);
        const before = await scanTreeToArray(sys, snap1, { exclude: DEFAULT_EXCLUDES });
        const r = await cli(['--debug', 'extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--json']);
        expect(r.exitCode, r.stderr).toBe(0);
        const res = JSON.parse(r.stdout);
        expect(res.trustedBaseIndex).toBe(!distrust);
        // All of them (and the test tree's own mtime-only file) went to the child.
        const handed = Number(/apply: (\d+) re-dated entries handed to a child/.exec(r.stderr)?.[1]);
        expect(handed).toBeGreaterThanOrEqual(names.length + 7);
        if (!distrust) {
          // Not one lstat each in the plan: only the others were looked up.
          const m = /trusted base: .* (\d+) differing paths lstat'ed .*, (\d+) only re-dated taken as recorded/.exec(r.stderr);
          expect(Number(m?.[2])).toBeGreaterThanOrEqual(names.length + 7);
        }
        await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
        await expect(readFile(join(dev.root, '.snapshots/2/snapshot/pwned'))).rejects.toThrow(/ENOENT/);
        // The base kept its own dates.
        const after = await scanTreeToArray(sys, snap1, { exclude: DEFAULT_EXCLUDES });
        expect(after.entries).toEqual(before.entries);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('files rewritten in place', () => {
  it("keep, get or lose xattrs as the image says (a write clears a file capability); only those with xattrs on either side are checked", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tiu-inplace-'));
    const cap = '0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=';
    /** More files without xattrs, rewritten in place too. */
    const PLAIN = Array.from({ length: 40 }, (_, i) => `plain-${i}`);
    try {
      const B = await makeArchives(sys, dir, {
        prepare: async (tree, v) => {
          await mkdir(join(tree, 'usr/share/inplace'), { recursive: true });
          const f = (n: string) => join(tree, 'usr/share/inplace', n);
          // New content in v2 for all of them (the same size: rewritten in place).
          for (const n of ['plain', 'cap', 'user', 'gains', 'loses', ...PLAIN]) await writeFile(f(n), `${n} content v${v}\n`);
          await sys.run('setfattr', ['-n', 'security.capability', '-v', cap, f('cap')]);
          await sys.run('setfattr', ['-n', 'user.tiu', '-v', v === 1 ? 'one' : 'two', f('user')]);
          if (v === 2) await sys.run('setfattr', ['-n', 'user.new', '-v', 'yes', f('gains')]);
          if (v === 1) await sys.run('setfattr', ['-n', 'user.old', '-v', 'yes', f('loses')]);
        },
      });
      await using dev = await installedDevice(sys, B.v1, B.keyringPem);
      const r = await cli(['--debug', 'extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--dry-run']);
      expect(r.exitCode, r.stderr).toBe(0);
      for (const n of ['plain', 'cap', 'user', 'gains', 'loses']) expect(r.stdout).toContain(`rewrite /usr/share/inplace/${n}`);
      const u = await cli(['--debug', 'extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring]);
      expect(u.exitCode, u.stderr).toBe(0);
      await expectSnapshotEqualsImage(join(dev.root, '.snapshots/2/snapshot'));
      const snap = join(dev.root, '.snapshots/2/snapshot/usr/share/inplace');
      const dump = async (n: string) => (await sys.run('getfattr', ['-d', '-m', '-', '--absolute-names', '-e', 'base64', join(snap, n)])).stdout;
      expect(await dump('cap')).toContain(`security.capability=${cap.slice(0, 10)}`);
      expect(await dump('user')).toMatch(/user\.tiu=0sdHdv/);
      expect(await dump('gains')).toContain('user.new');
      expect(await dump('loses')).toBe('');
      expect(await dump('plain')).toBe('');
      // The four with xattrs on a side were checked; the 41 without on either side were not
      // (the count also holds the test tree's other changes: created files, owner changes).
      const checked = Number(/xattrs of (\d+) entries checked/.exec(u.stderr)?.[1]);
      expect(checked).toBeGreaterThanOrEqual(4);
      expect(checked).toBeLessThan(PLAIN.length);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

describe('the vendor /etc copy', () => {
  it('is a read-only nested snapshot of the image /etc in every snapshot: installed, updated, the same image, the vendor /etc kept; snapshots holding one delete', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const vendorOf = (n: number) => join(dev.root, `.snapshots/${n}/snapshot/usr/lib/tiu/vendor-etc`);
    const etcEntries = async (d: string) => (await scanTreeToArray(sys, d, { exclude: [] })).entries.filter((e) => e.path !== '.');
    const indexEtc = async (n: number) => {
      const idx = await loadIndex(join(dev.root, `.snapshots/${n}/snapshot`, INDEX_PATH));
      return idx.filter((e) => e.path.startsWith('etc/')).map((e) => e.path.slice(4)).sort();
    };
    const expectCopy = async (n: number) => {
      const v = vendorOf(n);
      // A subvolume of its own (inode 256), read-only, holding the image's /etc entries.
      expect((await sys.run('stat', ['-c', '%i', v])).stdout.trim()).toBe('256');
      expect((await sys.run('btrfs', ['property', 'get', '-ts', v, 'ro'])).stdout.trim()).toBe('ro=true');
      expect((await etcEntries(v)).map((e) => e.path).sort()).toEqual(await indexEtc(n));
    };
    await expectCopy(1);
    // A local edit: never in a vendor copy.
    await writeFile(join(dev.root, 'etc/hostname'), 'local\n');
    // 2: an update whose vendor /etc changed (v2's sshd_config, accounts).
    let r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs()]);
    expect(r.exitCode, r.stderr).toBe(0);
    await expectCopy(2);
    expect(await readFile(join(vendorOf(2), 'ssh/sshd_config'), 'utf8')).toMatch(/AllowAgentForwarding no/);
    expect(await readFile(join(vendorOf(2), 'hostname'), 'utf8')).toBe('tiu-test\n');
    expect(await readFile(join(vendorOf(1), 'ssh/sshd_config'), 'utf8')).not.toMatch(/AllowAgentForwarding/);
    // 3: the same image onto 2 (its copy carried, not an empty directory).
    r = await cli(['extract', A.v2, '--root', dev.root, ...keyringArgs(), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).sameImage).toBe(true);
    await expectCopy(3);
    expect(await etcEntries(vendorOf(3))).toEqual(await etcEntries(vendorOf(2)));
    // The merge base of the next update is that copy: v1 over 3 (a downgrade) merges against v2's /etc.
    r = await cli(['extract', A.v1, '--root', dev.root, ...keyringArgs(), '--allow-downgrade']);
    expect(r.exitCode, r.stderr).toBe(0);
    await expectCopy(4);
    expect(await readFile(join(dev.root, '.snapshots/4/snapshot/etc/hostname'), 'utf8')).toBe('local\n');
    // Snapshots holding a nested read-only copy delete (cleanup: all but the booted and the default).
    const d = await cli(['cleanup', '--keep', '0', '--root', dev.root]);
    expect(d.exitCode, d.stderr).toBe(0);
    expect((await snapshotsOf(dev.root)).map((s) => s.number)).toEqual([1, 4]);
    const subvols = (await sys.run('btrfs', ['subvolume', 'list', dev.root])).stdout;
    expect(subvols).not.toMatch(/\.snapshots\/[23]\//);
  });
});
