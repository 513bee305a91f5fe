/**
 * `tiu install`: the factory flash. On an empty btrfs (mounted at its top level) create the
 * MicroOS subvolume layout, make snapshot 1 from a verified archive, write fstab, and set it as
 * the default. A failure removes snapshot 1 again; the layout subvolumes stay (they are empty).
 */
import { readdir, mkdir } from 'node:fs/promises';
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import { openArchive } from '../archive/open.ts';
import { mountImage } from '../archive/mount.ts';
import { planApply } from '../apply/plan.ts';
import { executePlan } from '../apply/execute.ts';
import { assertBtrfs, filesystemUuid, createSubvolume, setReadonly, subvolumeInfo, setDefaultSubvolume, deleteSubvolume } from '../../snapshot/btrfs.ts';
import { createLayout, createMountpoints, renderFstab } from '../../snapshot/layout.ts';
import { writeInfoXmlAtomic } from '../../snapshot/infoxml.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { readImageIndex, restoreDirTimes, scanActual } from './state.ts';
import { excludedMatcher, protectedMatcher, INDEX_PATH, UD } from './paths.ts';
import { readSignature, recordImage } from './extract.ts';
import { snapshotVendorEtc } from './etc.ts';
import { prepareBoot } from './boot.ts';
import { SafeRoot } from '../safepath.ts';

export interface InstallOptions {
  archive: string;
  /** Mount point of the btrfs top level (subvolid=5). */
  top: string;
  keyringPem: string;
  allowedSigners?: string[];
  compatible?: string;
  bootloader?: string;
}

export interface InstallResult {
  number: 1;
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
  const snapDir = `${o.top}/@/.snapshots/1`;
  const dir = `${snapDir}/snapshot`;
  await mkdir(snapDir, { mode: 0o755 });
  await createSubvolume(sys, dir);
  let done = false;
  try {
    await createSubvolume(sys, `${dir}/etc`);
    const isExcluded = excludedMatcher(m.excluded);
    const actual = await scanActual(sys, dir, { exclude: m.excluded });
    const plan = planApply(target, actual, { isExcluded, isProtected: protectedMatcher(m.excluded) });
    const exec = await executePlan(plan, { sys, imageRoot: image.dir, targetRoot: dir });
    await createMountpoints(dir);
    await recordImage(dir, image.dir, archive.manifestBytes, false, await readSignature(archive));
    await snapshotVendorEtc(sys, dir);
    const uuid = await filesystemUuid(sys, o.top);
    {
      // Through checked directories: an image whose /etc is a symlink cannot make this write outside.
      await using snap = await SafeRoot.open(dir, { what: 'the new snapshot' });
      await snap.writeAtomic('etc/fstab', renderFstab(uuid), { mode: 0o644 });
    }
    await prepareBoot(sys, { root: `${o.top}/@`, snapshotDir: dir, num: 1, manifest: m, bootloader: o.bootloader });
    await restoreDirTimes(dir, target);
    await sys.run('sync', ['-f', dir]);
    await setReadonly(sys, dir, true);
    const info = await subvolumeInfo(sys, dir);
    await writeInfoXmlAtomic(snapDir, {
      type: 'single',
      num: 1,
      date: new Date(),
      description: `tiu install: ${m.compatible} ${m.version}`,
      cleanup: '',
      userdata: { [UD.version]: m.version, [UD.compatible]: m.compatible, [UD.rootHash]: m.verity.rootHash, [UD.important]: 'yes', [UD.generation]: String(info.generation) },
    });
    await setDefaultSubvolume(sys, o.top, info.id);
    done = true;
    return { number: 1, version: m.version, filesWritten: exec.filesWritten, bytesWritten: exec.bytesWritten, uuid };
  } finally {
    if (!done) {
      await setReadonly(sys, dir, false).catch(() => {});
      await deleteSubvolume(sys, `${dir}/etc`).catch(() => {});
      await deleteSubvolume(sys, dir).catch(() => {});
    }
  }
}
