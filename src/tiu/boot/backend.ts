/**
 * Opening the bootloader backend of a root, and describing snapshots for it.
 */
import { join, relative } from 'node:path';
import type { System } from '../../core/system.ts';
import { TiuError } from '../../core/errors.ts';
import { filesystemUuid, trySubvolumeInfo } from '../../snapshot/btrfs.ts';
import { snapshotDir } from '../device/paths.ts';
import type { BootBackend, SnapshotBoot } from './types.ts';
import { detectBoot, GRUB_DIRS, type BootLocation, type BootloaderSetting } from './detect.ts';
import { findInitrd, findKernels, newestKernel, resolveInside, snapshotCmdline, snapshotOsName } from './kernels.ts';
import { systemdBootBackend } from './systemd-boot.ts';
import { grubBackend } from './grub2.ts';

/** The backend that does nothing (containers, tests, or no bootloader found). */
export const noneBackend: BootBackend = {
  kind: 'none',
  location: undefined,
  listEntries: async () => [],
  addEntry: async () => {},
  removeEntry: async () => {},
  getDefault: async () => undefined,
  setDefault: async () => {},
  setOneShot: async () => false,
  getTry: async () => undefined,
  endTry: async () => {},
};

/** Facts of the filesystem every snapshot shares. */
export interface RootFacts {
  root: string;
  uuid: string;
  /** e.g. `@/.snapshots` */
  snapshotsSubvol: string;
}

export async function rootFacts(sys: System, root: string): Promise<RootFacts> {
  const info = await trySubvolumeInfo(sys, join(root, '.snapshots'));
  if (!info) throw new TiuError('ROOT_LAYOUT', `${root}/.snapshots is not a btrfs subvolume`, { hint: 'mount the snapshots subvolume there' });
  return { root, uuid: await filesystemUuid(sys, root), snapshotsSubvol: info.path.replace(/^\/+/, '') };
}

export interface OpenedBackend {
  backend: BootBackend;
  location: BootLocation;
}

/**
 * Detects and opens the backend for `root`. Explicit locations (tests, the installer) override
 * detection: `{ kind: 'systemd-boot', esp }` or `{ kind: 'grub2', grubDir }`.
 */
export async function openBootBackend(sys: System, root: string, setting: BootloaderSetting | BootLocation, facts?: RootFacts): Promise<OpenedBackend> {
  const location = typeof setting === 'string' ? await detectBoot(root, setting) : setting;
  switch (location.kind) {
    case 'systemd-boot':
      return { location, backend: systemdBootBackend(sys, { esp: location.esp! }) };
    case 'grub2': {
      if (!location.grubDir) {
        sys.log.warn(`GRUB: no GRUB directory in ${root} (${GRUB_DIRS.join(', ')}); tiu only regenerates the snapshots' own grub.cfg. Install GRUB with --boot-directory pointing there (see docs/boot.md)`);
        return { location, backend: noneBackend };
      }
      const f = facts ?? (await rootFacts(sys, root));
      return { location, backend: grubBackend(sys, { grubDir: location.grubDir, uuid: f.uuid, snapshotsSubvol: f.snapshotsSubvol }) };
    }
    case 'none':
      return { location, backend: noneBackend };
  }
}

/**
 * What booting snapshot `num` takes (newest kernel, its initrd, title, options), read from its
 * tree; undefined when it has no kernel. Reads only.
 */
export async function describeSnapshot(f: RootFacts, num: number): Promise<SnapshotBoot | undefined> {
  const dir = snapshotDir(f.root, num);
  const k = newestKernel(await findKernels(dir));
  if (!k) return undefined;
  // Symlinks (boot/vmlinuz -> ../usr/lib/modules/…) resolved inside the snapshot, so neither the
  // copy to the ESP nor GRUB follows one out of it.
  const kernelPath = await resolveInside(dir, k.path);
  if (!kernelPath) return undefined;
  const initrd = await findInitrd(dir, k.kver);
  const initrdPath = initrd ? await resolveInside(dir, initrd) : undefined;
  const os = (await snapshotOsName(dir)) ?? 'Linux';
  return {
    num,
    title: `${os}, snapshot ${num}`,
    kver: k.kver,
    kernelPath,
    initrdPath,
    kernelRel: relative(dir, kernelPath),
    initrdRel: initrdPath ? relative(dir, initrdPath) : undefined,
    subvol: `${f.snapshotsSubvol}/${num}/snapshot`,
    uuid: f.uuid,
    cmdline: await snapshotCmdline(dir),
  };
}
