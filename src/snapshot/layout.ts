/**
 * The MicroOS subvolume layout and how a system made of it is mounted.
 *
 * On the top level: `@`; `@/.snapshots` holds the root snapshots (`@/.snapshots/N/snapshot`);
 * the data that must not roll back with the root lives in separate subvolumes below `@`
 * ({@link SEPARATE_SUBVOLUMES}). The btrfs default subvolume is the snapshot that boots.
 */
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import { assertBtrfs, createSubvolume, listSubvolumes, setDefaultSubvolume, subvolumeInfo } from './btrfs.ts';
import { writeInfoXmlAtomic } from './infoxml.ts';
import { raiseHighWater } from './numbering.ts';

/** The top-level subvolume everything else lives in. */
export const ROOT_SUBVOLUME = '@';
/** Mount point (relative to the root) of the snapshots subvolume `@/.snapshots`. */
export const SNAPSHOTS_MOUNTPOINT = '.snapshots';
/** Subvolumes below `@` that are not part of a root snapshot, by mount point (relative). */
export const SEPARATE_SUBVOLUMES = ['var', 'home', 'root', 'opt', 'srv', 'usr/local', 'boot/grub2/x86_64-efi', 'boot/grub2/i386-pc'] as const;

/** Fstab options of each separate subvolume beyond `subvol=`: /var is needed in the initrd. */
const EXTRA_OPTIONS: Partial<Record<string, string>> = { var: 'x-initrd.mount' };

/**
 * Creates the layout on an empty btrfs mounted at its top level (subvolid 5): `@`,
 * `@/.snapshots` and the separate subvolumes (with their parent directories). Refuses a
 * mount that is not the top level or a filesystem that is not empty (ROOT_LAYOUT).
 */
export async function createLayout(sys: System, topLevelMount: string): Promise<void> {
  await assertBtrfs(sys, topLevelMount);
  const top = await subvolumeInfo(sys, topLevelMount).catch(() => undefined);
  if (top?.id !== 5) {
    throw new TiuError('ROOT_LAYOUT', `${topLevelMount} is not the top level of a btrfs filesystem`, { hint: 'mount it with -o subvolid=5' });
  }
  const present = await readdir(topLevelMount);
  if (present.length > 0) {
    throw new TiuError('ROOT_LAYOUT', `${topLevelMount} is not empty (found ${present.slice(0, 3).join(', ')})`, { hint: 'use a freshly made filesystem (mkfs.btrfs)' });
  }
  const base = join(topLevelMount, ROOT_SUBVOLUME);
  await createSubvolume(sys, base);
  await createSubvolume(sys, join(base, SNAPSHOTS_MOUNTPOINT));
  for (const sub of SEPARATE_SUBVOLUMES) {
    const path = join(base, sub);
    await mkdir(join(path, '..'), { recursive: true, mode: 0o755 });
    await createSubvolume(sys, path);
  }
}

/** Creates the mount point directories a root snapshot needs (.snapshots, var, home, ...). */
export async function createMountpoints(snapshotDir: string): Promise<void> {
  for (const dir of [SNAPSHOTS_MOUNTPOINT, ...SEPARATE_SUBVOLUMES]) await mkdir(join(snapshotDir, dir), { recursive: true, mode: 0o755 });
}

/**
 * Creates snapshot 1 (an empty subvolume with the mount point directories, and its info.xml)
 * on a fresh layout and makes it the default. Returns its path below the top-level mount.
 */
export async function createInitialSnapshot(sys: System, topLevelMount: string, options: { description?: string; userdata?: Record<string, string> } = {}): Promise<{ num: 1; path: string; id: number }> {
  const snapshots = join(topLevelMount, ROOT_SUBVOLUME, SNAPSHOTS_MOUNTPOINT);
  const dir = join(snapshots, '1');
  await mkdir(dir, { mode: 0o755 });
  const path = join(dir, 'snapshot');
  await createSubvolume(sys, path);
  await createMountpoints(path);
  await writeInfoXmlAtomic(dir, {
    num: 1,
    type: 'single',
    date: new Date(Math.floor(Date.now() / 1000) * 1000),
    description: options.description ?? 'first root filesystem',
    cleanup: '',
    userdata: options.userdata ?? {},
  });
  await raiseHighWater(snapshots, 1);
  const { id } = await subvolumeInfo(sys, path);
  await setDefaultSubvolume(sys, topLevelMount, id);
  return { num: 1, path, id };
}

export interface MountedSystem extends AsyncDisposable {
  target: string;
  /** Mount points in the order they were mounted. */
  mounts: string[];
}

async function isDir(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

/**
 * Mounts a MicroOS system from `device` at `target` like a running one: the default subvolume
 * (or snapshot `snapshotNum`) at target, then `@/.snapshots` and each separate subvolume that
 * exists, at its mount point if the directory exists in the snapshot. Dispose unmounts in
 * reverse order (lazily if busy). On failure, what was mounted is unmounted again.
 */
export async function mountSystem(sys: System, device: string, target: string, snapshotNum?: number, options: { readonlyRoot?: boolean } = {}): Promise<MountedSystem> {
  const mounts: string[] = [];
  const unmountAll = async () => {
    for (const m of [...mounts].reverse()) {
      const r = await sys.run('umount', [m], { allowFailure: true });
      if (r.exitCode !== 0) await sys.run('umount', ['-l', m], { allowFailure: true });
    }
    mounts.length = 0;
  };
  try {
    const rootOpts = [options.readonlyRoot ? 'ro' : 'rw'];
    if (snapshotNum !== undefined) rootOpts.push(`subvol=/${ROOT_SUBVOLUME}/${SNAPSHOTS_MOUNTPOINT}/${snapshotNum}/snapshot`);
    await sys.run('mount', ['-t', 'btrfs', '-o', rootOpts.join(','), device, target]);
    mounts.push(target);
    const existing = new Set((await listSubvolumes(sys, target)).map((s) => s.path));
    for (const sub of [SNAPSHOTS_MOUNTPOINT, ...SEPARATE_SUBVOLUMES]) {
      const subvol = `${ROOT_SUBVOLUME}/${sub}`;
      const at = join(target, sub);
      if (!existing.has(subvol) || !(await isDir(at))) continue;
      await sys.run('mount', ['-t', 'btrfs', '-o', `subvol=/${subvol}`, device, at]);
      mounts.push(at);
    }
  } catch (e) {
    await unmountAll();
    throw e;
  }
  return { target, mounts: [...mounts], [Symbol.asyncDispose]: unmountAll };
}

/**
 * The fstab lines of the layout, as MicroOS writes them: the root (the snapshot comes from the
 * default subvolume, so no `subvol=`), then each subvolume by path. Pure.
 */
export function renderFstab(uuid: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(uuid)) throw new TiuError('INTERNAL', `'${uuid}' is not a filesystem UUID`);
  // Not `ro`: the snapshot itself is read-only (btrfs property), while /etc inside it is a
  // nested writable subvolume that a read-only mount would freeze too.
  const lines = [`UUID=${uuid} / btrfs defaults 0 0`];
  for (const sub of [SNAPSHOTS_MOUNTPOINT, ...SEPARATE_SUBVOLUMES]) {
    const opts = [`subvol=/${ROOT_SUBVOLUME}/${sub}`, EXTRA_OPTIONS[sub]].filter(Boolean).join(',');
    lines.push(`UUID=${uuid} /${sub} btrfs ${opts} 0 0`);
  }
  return `${lines.join('\n')}\n`;
}
