/**
 * The update pipeline's two boot steps (the work is in src/tiu/boot/):
 *
 * - {@link prepareBoot}, before the new snapshot is sealed (it is still writable): initrds
 *   (dracut in the snapshot, unless the image ships them) and, for GRUB, the snapshot's own
 *   grub.cfg from the distribution's grub-mkconfig.
 * - {@link activateBoot}, after the btrfs default was switched to it: the bootloader follows
 *   (entries, default, boot trial with fallback to the booted snapshot). See docs/boot.md.
 */
import type { Device } from './open.ts';
import { TiuError } from '../../core/errors.ts';
import type { Manifest } from '../archive/manifest.ts';
import { regenerateInitrds } from '../boot/initrd.ts';
import { generateSnapshotGrubCfg } from '../boot/grub2.ts';
import { syncBoot, type SyncResult } from '../boot/sync.ts';
import { trySubvolumeInfo } from '../../snapshot/btrfs.ts';
import { SafeRoot } from '../../core/safepath.ts';

export interface PrepareBootOptions {
  snapshotDir: string;
  num: number;
  manifest: Manifest;
}

/**
 * Prepares the still writable snapshot to boot: initrds, then (GRUB) its grub.cfg. Throws
 * BOOT_FAILED if dracut or grub-mkconfig fails, so a snapshot that could not boot is discarded.
 */
export async function prepareBoot(dev: Pick<Device, 'sys' | 'bootLocation'>, o: PrepareBootOptions): Promise<void> {
  const { sys } = dev;
  // Initrds, grub.cfg and kernels are written and read below these from outside the chroot: a
  // symlink there (an image's /boot -> host path) must not redirect them.
  {
    await using root = await SafeRoot.open(o.snapshotDir, { what: 'the new snapshot' });
    await root.assertDirs(['boot', 'boot/grub2', 'boot/grub', 'boot/efi', 'boot/loader', 'usr/lib/modules']);
  }
  await regenerateInitrds(sys, { snapshotDir: o.snapshotDir, initrd: o.manifest.initrd });
  const loc = await dev.bootLocation();
  if (loc.kind !== 'grub2') return;
  const info = await trySubvolumeInfo(sys, o.snapshotDir);
  if (!info) throw new TiuError('INTERNAL', `${o.snapshotDir} is not a subvolume`);
  try {
    await generateSnapshotGrubCfg(sys, { snapshotDir: o.snapshotDir, subvol: info.path.replace(/^\/+/, '') });
  } catch (e) {
    if (e instanceof TiuError && e.code === 'BOOT_FAILED') throw e;
    throw new TiuError('BOOT_FAILED', `grub-mkconfig failed in snapshot ${o.num}: ${(e as Error).message}`, { hint: 'rerun with --debug to see its output; the new snapshot was discarded', cause: e });
  }
}

/**
 * Makes the bootloader follow the btrfs default (just switched to a new snapshot): adds its
 * entry and arms the boot trial. The default is already switched when this runs, so a failure
 * says how to finish by hand instead of undoing the update.
 */
export async function activateBoot(dev: Device): Promise<SyncResult> {
  try {
    return await syncBoot(dev);
  } catch (e) {
    throw new TiuError('BOOT_FAILED', `the new snapshot is the btrfs default, but the boot loader could not be updated: ${(e as Error).message}`, {
      hint: 'fix the cause, then run tiu health-check --sync-only (or tiu rollback to undo the update)',
      cause: e,
    });
  }
}
