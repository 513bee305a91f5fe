/**
 * `tiu install`: the factory flash. On an empty btrfs (mounted at its top level) create the
 * MicroOS subvolume layout, make snapshot 1 from a verified archive (through a {@link Transaction},
 * as every new snapshot), write fstab, and set it as the default. A failure removes snapshot 1
 * again; the layout subvolumes stay (they are empty).
 */
import { readdir } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { openArchive } from '../archive/open.ts';
import { mountImage } from '../archive/mount.ts';
import { planApply } from '../apply/plan.ts';
import { executePlan } from '../apply/execute.ts';
import { assertBtrfs, filesystemUuid } from '../../snapshot/btrfs.ts';
import { createLayout, createMountpoints, renderFstab } from '../../snapshot/layout.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { readImageIndex, restoreDirTimes, scanActual } from './state.ts';
import { excludedMatcher, protectedMatcher, INDEX_PATH, UD } from './paths.ts';
import { readSignature, recordImage } from './extract.ts';
import { snapshotVendorEtc } from './etc.ts';
import { prepareBoot } from './boot.ts';
import { openDevice } from './open.ts';
import { Transaction } from './transaction.ts';
import { SafeRoot } from '../../core/safepath.ts';
import type { BootloaderSetting } from '../boot/detect.ts';

export interface InstallOptions {
  archive: string;
  /** Mount point of the btrfs top level (subvolid=5). */
  top: string;
  keyringPem: string;
  allowedSigners?: string[];
  compatible?: string;
  bootloader?: BootloaderSetting;
}

export interface InstallResult {
  /** The installed snapshot (1 on a fresh filesystem). */
  number: number;
  version: string;
  filesWritten: number;
  bytesWritten: number;
  uuid: string;
}

export async function install(sys: System, o: InstallOptions): Promise<InstallResult> {
  await assertBtrfs(sys, o.top);
  await using _lock = await acquireLock(sys, o.top);
  const existing = (await readdir(o.top)).filter((n) => n !== 'lost+found');
  if (existing.length > 0) {
    throw new TiuError('ROOT_LAYOUT', `${o.top} is not empty (${existing.slice(0, 3).join(', ')}${existing.length > 3 ? ', …' : ''})`, {
      hint: 'install onto a freshly made btrfs mounted at its top level (mkfs.btrfs, then mount)',
    });
  }
  await using archive = await openArchive(o.archive, { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners, compatible: o.compatible });
  const m = archive.manifest;
  await archive.verifyData();
  await using image = await mountImage(sys, archive, { verifiedInUserspace: true });
  const target = await readImageIndex(`${image.dir}/${INDEX_PATH}`, m.index.sha256);

  await createLayout(sys, o.top);
  // The new root R = <top>/@ (its .snapshots exists now); the top level's lock covers it. Plain
  // btrfs metadata: snapper has no config on a fresh filesystem.
  await using dev = await openDevice(sys, `${o.top}/@`, { snapper: 'no', bootloader: o.bootloader });
  // Snapshot 1 is an empty subvolume (with an empty /etc subvolume) marked in progress; any
  // failure below deletes it again (the layout subvolumes stay: they are empty).
  await using tx = new Transaction(dev);
  const num = await tx.begin({
    from: undefined,
    description: `tiu install: ${m.compatible} ${m.version}`,
    userdata: { [UD.version]: m.version, [UD.compatible]: m.compatible, [UD.rootHash]: m.verity.rootHash, [UD.important]: 'yes' },
    cleanup: '',
  });
  const dir = tx.dir;
  const isExcluded = excludedMatcher(m.excluded);
  const actual = await scanActual(sys, dir, { exclude: m.excluded });
  const plan = planApply(target, actual, { isExcluded, isProtected: protectedMatcher(m.excluded) });
  const exec = await executePlan(plan, { sys, imageRoot: image.dir, targetRoot: dir, signal: tx.signal });
  tx.throwIfAborted();
  await createMountpoints(dir);
  await recordImage(dir, image.dir, archive.manifestBytes, false, await readSignature(archive));
  await snapshotVendorEtc(sys, dir);
  const uuid = await filesystemUuid(sys, o.top);
  {
    // Through checked directories: an image whose /etc is a symlink cannot make this write outside.
    await using snap = await SafeRoot.open(dir, { what: 'the new snapshot' });
    await snap.writeAtomic('etc/fstab', renderFstab(uuid), { mode: 0o644 });
  }
  await prepareBoot(dev, { snapshotDir: dir, num, manifest: m });
  await restoreDirTimes(dir, target);
  await tx.finalize({ makeDefault: true });
  return { number: num, version: m.version, filesWritten: exec.filesWritten, bytesWritten: exec.bytesWritten, uuid };
}
