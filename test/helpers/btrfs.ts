/**
 * Real btrfs filesystems for tests: a sparse image file, `mkfs.btrfs`, `mount -o loop`.
 *
 * - {@link makeLoopBtrfs}: an empty btrfs, its top level (subvolid 5) mounted.
 * - {@link makeDevice}: a MicroOS-style device: the subvolume layout, an empty snapshot 1
 *   (only mount point directories) as the default, mounted like a running system at `root`.
 *
 * Both are AsyncDisposable (`await using dev = await makeDevice()`): everything mounted below the
 * test's directory is unmounted (deepest first, lazily if busy), the loop device detached and the
 * directory removed. Each call uses its own directory, so tests may run in parallel.
 */
import { mkdtemp, open, readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { System } from '../../src/core/system.ts';
import { filesystemUuid } from '../../src/snapshot/btrfs.ts';
import { createInitialSnapshot, createLayout, mountSystem } from '../../src/snapshot/layout.ts';
import { mountAt, mountsBelow, parseMountinfo } from '../../src/snapshot/mountinfo.ts';
import { testSystem } from './env.ts';

export interface LoopBtrfs extends AsyncDisposable {
  /** The test's private directory (holds the image and the mount points). */
  dir: string;
  /** The sparse image file. */
  image: string;
  /** The loop device mount chose (/dev/loopN). */
  loopDev: string;
  /** Where the top level (subvolid 5) is mounted. */
  mount: string;
  /** Filesystem UUID. */
  uuid: string;
}

export interface TestDevice extends LoopBtrfs {
  /** R: the default snapshot (1) mounted like `/` of a running system, with R/.snapshots, R/var, ... mounted. */
  root: string;
  /** Same as `mount`: the top level. */
  top: string;
  /** R/.snapshots */
  snapshotsDir: string;
  /** The system seam the helper used (warn-level logger unless TIU_TEST_DEBUG). */
  sys: System;
}

async function mountinfo() {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** Unmounts everything at or below `dir` (deepest first; lazily when busy). */
export async function unmountBelow(sys: System, dir: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const points = mountsBelow(await mountinfo(), dir);
    if (points.length === 0) return;
    for (const p of points) {
      const r = await sys.run('umount', [p], { allowFailure: true });
      if (r.exitCode !== 0) await sys.run('umount', ['-l', p], { allowFailure: true });
    }
  }
}

async function cleanup(sys: System, dir: string, loopDev: string | undefined): Promise<void> {
  await unmountBelow(sys, dir);
  if (loopDev) await sys.run('losetup', ['-d', loopDev], { allowFailure: true });
  if (mountsBelow(await mountinfo(), dir).length > 0) {
    // Never rm -r through a mount that is still there.
    await rm(join(dir, 'image'), { force: true });
    return;
  }
  await rm(dir, { recursive: true, force: true });
}

/** An empty btrfs of `sizeMiB` (sparse, so cheap) with its top level mounted. */
export async function makeLoopBtrfs(options: { sizeMiB?: number; sys?: System } = {}): Promise<LoopBtrfs> {
  const sys = options.sys ?? testSystem();
  const dir = await mkdtemp(join(process.env.TIU_TEST_TMP ?? tmpdir(), 'tiu-btrfs-'));
  const image = join(dir, 'image');
  const mount = join(dir, 'top');
  let loopDev: string | undefined;
  try {
    const fh = await open(image, 'wx');
    await fh.truncate((options.sizeMiB ?? 512) * 1024 * 1024);
    await fh.close();
    await sys.run('mkfs.btrfs', ['-q', image]);
    await mkdir(mount);
    // Parallel tests race for free loop devices; mount -o loop retries internally, we retry on top.
    for (let attempt = 1; ; attempt++) {
      const r = await sys.run('mount', ['-o', 'loop', image, mount], { allowFailure: true });
      if (r.exitCode === 0) break;
      if (attempt >= 5) throw new Error(`mount -o loop ${image} failed: ${r.stderr.trim()}`);
      await sleep(100 * attempt + Math.floor(Math.random() * 100));
    }
    const entry = mountAt(await mountinfo(), mount);
    if (!entry?.source.startsWith('/dev/loop')) throw new Error(`no loop device behind ${mount}`);
    loopDev = entry.source;
    const uuid = await filesystemUuid(sys, mount);
    const dev = loopDev;
    return { dir, image, loopDev: dev, mount, uuid, [Symbol.asyncDispose]: () => cleanup(sys, dir, dev) };
  } catch (e) {
    await cleanup(sys, dir, loopDev);
    throw e;
  }
}

/**
 * A MicroOS-style device mounted like a running system. With `snapper: true`, R also gets a
 * snapper config (R/etc/snapper/configs/root, and
 * SNAPPER_CONFIGS="root" in R/etc/default/snapper and R/etc/sysconfig/snapper; snapper needs only the
 * config file when `-c root` is given).
 */
export async function makeDevice(options: { sizeMiB?: number; snapper?: boolean; sys?: System } = {}): Promise<TestDevice> {
  const sys = options.sys ?? testSystem();
  const fs = await makeLoopBtrfs({ sizeMiB: options.sizeMiB, sys });
  try {
    await createLayout(sys, fs.mount);
    await createInitialSnapshot(sys, fs.mount);
    const root = join(fs.dir, 'root');
    await mkdir(root);
    await mountSystem(sys, fs.loopDev, root);
    if (options.snapper) await addSnapperConfig(root);
    return { ...fs, root, top: fs.mount, snapshotsDir: join(root, '.snapshots'), sys, [Symbol.asyncDispose]: fs[Symbol.asyncDispose] };
  } catch (e) {
    await fs[Symbol.asyncDispose]();
    throw e;
  }
}

/** A minimal snapper config for the root subvolume; no timeline, no automatic cleanup (tests stay deterministic). */
const SNAPPER_CONFIG_TEXT = `SUBVOLUME="/"
FSTYPE="btrfs"
QGROUP=""
SPACE_LIMIT="0.5"
FREE_LIMIT="0.2"
ALLOW_USERS=""
ALLOW_GROUPS=""
SYNC_ACL="no"
BACKGROUND_COMPARISON="no"
NUMBER_CLEANUP="no"
NUMBER_MIN_AGE="1800"
NUMBER_LIMIT="50"
NUMBER_LIMIT_IMPORTANT="10"
TIMELINE_CREATE="no"
TIMELINE_CLEANUP="no"
EMPTY_PRE_POST_CLEANUP="no"
`;

/** Gives root R a snapper config named 'root' (what `snapper --no-dbus --root R -c root` reads). */
export async function addSnapperConfig(root: string): Promise<void> {
  await mkdir(join(root, 'etc/snapper/configs'), { recursive: true });
  await writeFile(join(root, 'etc/snapper/configs/root'), SNAPPER_CONFIG_TEXT);
  for (const f of ['etc/default/snapper', 'etc/sysconfig/snapper']) {
    await mkdir(join(root, f, '..'), { recursive: true });
    await writeFile(join(root, f), 'SNAPPER_CONFIGS="root"\n');
  }
}
