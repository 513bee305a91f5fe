/**
 * `tiu factory-reset`: prepare a reset snapshot (the current image with the vendor /etc and
 * fresh, empty data subvolumes) and switch to it in one atomic step (the btrfs default); and
 * the boot step that, once the reset snapshot has booted healthy, deletes the old data (and by
 * default the old snapshots). A power cut at any point leaves either the old device (nothing
 * switched yet, or the reset boot failed and the health check rolled back to the old snapshot,
 * whose fstab still mounts the old data) or the reset one. See docs/factory-reset.md.
 */
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, realpath, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../../core/errors.ts';
import { processAlive, type System } from '../../core/system.ts';
import { guardDisposable } from '../guard.ts';
import type { SnapshotStore } from '../../snapshot/store.ts';
import { createSubvolume, deleteSubvolume, isSubvolumeRoot, listSubvolumes } from '../../snapshot/btrfs.ts';
import { mountAt, parseMountinfo } from '../../snapshot/mountinfo.ts';
import { Transaction, cleanupInterrupted, deleteSnapshot } from './transaction.ts';
import { readRecordedImage, restoreDirTimes } from './state.ts';
import { loadIndex } from '../../core/fileindex/io.ts';
import { snapshotDir, UD, VENDOR_ETC_DIR } from './paths.ts';
import { prepareBoot, activateBoot } from './boot.ts';
import { carryVendorEtc } from './etc.ts';
import type { Device } from './open.ts';
import { dataSetDir, decideFinish, fstabSubvolumes, MARKER_NAME, parseMarker, planReset, remapFstab, RESET_MOUNTPOINTS, UD_RESET, type ResetMarker } from './reset-plan.ts';
import { readTiuEnv } from '../../core/env.ts';
import { writeFileAtomic } from '../../core/atomic.ts';

export interface FactoryResetOptions {
  keepSnapshots: boolean;
  /** Test hook: called with the name of each stage as it starts (the kill tests stop there). */
  onStage?: (stage: string) => void;
}

export interface FactoryResetResult {
  snapshot: number;
  base: number;
  version: string | undefined;
  marker: ResetMarker;
  /** Leftovers of interrupted resets removed first. */
  removedDataSets: string[];
}

function markerPath(root: string, num: number): string {
  return `${root.replace(/\/+$/, '')}/.snapshots/${num}/${MARKER_NAME}`;
}

async function writeAtomic(path: string, text: string): Promise<void> {
  await writeFileAtomic(path, text, { mkdir: false });
}

/**
 * The btrfs top level (subvolid 5) of the filesystem behind `root`, mounted on a private temp
 * directory for the duration (tiu never needs it mounted otherwise).
 */
export async function mountTopLevel(sys: System, root: string): Promise<{ dir: string } & AsyncDisposable> {
  const real = await realpath(root);
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const m = mountAt(mounts, join(real, '.snapshots')) ?? mountAt(mounts, real);
  if (!m || m.fsType !== 'btrfs') throw new TiuError('ROOT_LAYOUT', `cannot find the btrfs device behind ${root}`, { hint: 'R/.snapshots must be mounted (docs/snapshots.md)' });
  const base = readTiuEnv().runDir;
  await mkdir(base, { recursive: true, mode: 0o700 });
  await cleanupStaleTopMounts(sys, base, mounts);
  const dir = await mkdtemp(join(base, `top-${process.pid}-`));
  await sys.run('mount', ['-t', 'btrfs', '-o', 'subvolid=5', m.source, dir]);
  // Unmounted by the top-level guard too if tiu dies while it is mounted.
  return guardDisposable({
    dir,
    async [Symbol.asyncDispose]() {
      const r = await sys.run('umount', [dir], { allowFailure: true });
      if (r.exitCode !== 0) await sys.run('umount', ['-l', dir], { allowFailure: true });
      await rmdir(dir).catch(() => {});
    },
  });
}

/** Unmounts top-level mounts left by a tiu process that died (SIGKILL, power loss of the process). */
async function cleanupStaleTopMounts(sys: System, base: string, mounts: ReturnType<typeof parseMountinfo>): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    const m = /^top-(\d+)-/.exec(name);
    if (!m || processAlive(Number(m[1]))) continue;
    const dir = join(base, name);
    if (mountAt(mounts, dir)) {
      const r = await sys.run('umount', [dir], { allowFailure: true });
      if (r.exitCode !== 0) await sys.run('umount', ['-l', dir], { allowFailure: true });
    }
    await rmdir(dir).catch(() => {});
  }
}

/** Deletes a subvolume (from the top level) with every subvolume nested in it, deepest first. */
async function deleteTree(sys: System, top: string, path: string): Promise<boolean> {
  if (!(await isSubvolumeRoot(join(top, path)).catch(() => false))) return false;
  const nested = (await listSubvolumes(sys, top)).map((s) => s.path).filter((p) => p.startsWith(`${path}/`));
  for (const p of nested.sort((a, b) => b.length - a.length)) await deleteSubvolume(sys, join(top, p));
  await deleteSubvolume(sys, join(top, path));
  return true;
}

/** The subvolumes every existing snapshot's /etc/fstab mounts (those must never be deleted). */
async function referencedSubvolumes(root: string, store: SnapshotStore): Promise<Set<string>> {
  const out = new Set<string>();
  for (const s of await store.list()) {
    const text = await readFile(`${snapshotDir(root, s.num)}/etc/fstab`, 'utf8').catch(() => '');
    for (const p of Object.values(fstabSubvolumes(text))) out.add(p);
  }
  return out;
}

/** Data sets (`@/.tiu-data/N`) no snapshot's fstab refers to: leftovers of interrupted resets. */
async function removeStaleDataSets(sys: System, root: string, store: SnapshotStore, top: string): Promise<string[]> {
  const names = await readdir(join(top, '@/.tiu-data')).catch(() => [] as string[]);
  if (names.length === 0) return [];
  const used = await referencedSubvolumes(root, store);
  const removed: string[] = [];
  for (const n of names) {
    if (!/^[1-9]\d{0,9}$/.test(n)) continue;
    const set = dataSetDir(Number(n));
    if ([...used].some((p) => p.startsWith(`${set}/`))) continue;
    for (const mp of [...RESET_MOUNTPOINTS].sort((a, b) => b.length - a.length)) await deleteTree(sys, top, `${set}/${mp}`);
    await sys.run('rm', ['-r', '--one-file-system', '--', join(top, set)]);
    removed.push(set);
  }
  return removed;
}

/** Copies mode and owner of `from` (the old data subvolume's root) onto `to`. */
async function copyRootAttrs(from: string, to: string, fallbackMode: number): Promise<void> {
  const st = await stat(from).catch(() => undefined);
  await chmod(to, st ? st.mode & 0o7777 : fallbackMode);
  if (st) await chown(to, st.uid, st.gid);
}

/**
 * Prepares the reset and switches the default to it (the last step). Holds the lock for the
 * whole run (BUSY while an update runs). Throws RESET_REFUSED when a reset is already pending.
 */
export async function factoryReset(dev: Device, o: FactoryResetOptions): Promise<FactoryResetResult> {
  const stage = o.onStage ?? (() => {});
  const { sys, store, root } = dev;
  await cleanupInterrupted(dev);
  await using top = await mountTopLevel(sys, root);
  const removedDataSets = await removeStaleDataSets(sys, root, store, top.dir);

  const list = await store.list();
  const pending = list.find((s) => s.userdata[UD_RESET] === 'pending');
  if (pending) {
    throw new TiuError('RESET_REFUSED', `a factory reset is already pending (snapshot ${pending.num})`, {
      hint: pending.isDefault ? 'reboot to carry it out' : `it did not boot healthy; delete snapshot ${pending.num} (tiu cleanup) and try again`,
    });
  }
  const baseInfo = list.find((s) => s.isMounted) ?? list.find((s) => s.isDefault);
  if (!baseInfo) throw new TiuError('ROOT_LAYOUT', `${root} has no booted or default snapshot to reset to`);
  const base = baseInfo.num;
  const baseDir = snapshotDir(root, base);
  const recorded = await readRecordedImage(baseDir);
  if (!recorded) throw new TiuError('RESET_FAILED', `snapshot ${base} was not made by tiu (no recorded image)`, { hint: 'update to an image first (tiu update)' });
  const baseFstab = await readFile(`${baseDir}/etc/fstab`, 'utf8').catch(() => {
    throw new TiuError('RESET_FAILED', `snapshot ${base} has no /etc/fstab`, { hint: 'the device does not have the layout tiu install makes' });
  });
  const vendorEtc = `${baseDir}/${VENDOR_ETC_DIR}`;
  if (!(await stat(vendorEtc).catch(() => undefined))?.isDirectory()) throw new TiuError('RESET_FAILED', `snapshot ${base} has no vendor /etc copy (${VENDOR_ETC_DIR})`);

  // 1. The new snapshot: the same image (a snapshot of the base), marked in progress.
  stage('snapshot');
  await using tx = new Transaction(dev);
  const keep = (k: string) => (baseInfo.userdata[k] === undefined ? {} : { [k]: baseInfo.userdata[k]! });
  const num = await tx.begin({
    from: base,
    description: `tiu factory-reset: ${recorded.manifest.compatible} ${recorded.manifest.version}`,
    userdata: { ...keep(UD.version), ...keep(UD.compatible), ...keep(UD.rootHash), [UD_RESET]: 'pending' },
  });
  const dir = tx.dir;
  const marker = planReset({ snapshot: num, base, baseFstab, keepSnapshots: o.keepSnapshots });
  let switched = false;
  try {
    // 2. /etc: a fresh subvolume with the image's vendor /etc (accounts from the image only).
    stage('etc');
    await deleteSubvolume(sys, `${dir}/etc`);
    await createSubvolume(sys, `${dir}/etc`);
    await sys.run('cp', ['-a', '--reflink=auto', '--no-target-directory', vendorEtc, `${dir}/etc`]);
    // The image's vendor /etc stays the next merge's base (a nested copy is not in the root's snapshot).
    await carryVendorEtc(sys, baseDir, dir);
    tx.throwIfAborted();

    // 3. Fresh, empty data subvolumes under new names (the old ones stay untouched).
    stage('data');
    await mkdir(join(top.dir, dataSetDir(num)), { recursive: true, mode: 0o700 });
    for (const mp of RESET_MOUNTPOINTS) {
      const at = join(top.dir, marker.new[mp]!);
      await mkdir(join(at, '..'), { recursive: true, mode: 0o755 });
      await createSubvolume(sys, at);
      await copyRootAttrs(join(top.dir, marker.old[mp]!), at, mp === 'root' ? 0o700 : 0o755);
    }
    tx.throwIfAborted();

    // 4. The new snapshot's fstab mounts them; the marker tells the boot step what to delete.
    stage('fstab');
    await writeAtomic(`${dir}/etc/fstab`, remapFstab(baseFstab, marker.new));
    await writeAtomic(markerPath(root, num), JSON.stringify(marker, null, 2) + '\n');

    // 5. Boot files (the initrd carries fstab's x-initrd.mount for /var).
    stage('boot');
    await prepareBoot(dev, { snapshotDir: dir, num, manifest: recorded.manifest });
    // Replacing /etc changed the root directory's mtime: put the image's back (verify --system).
    await restoreDirTimes(dir, await loadIndex(recorded.indexPath, { sha256: recorded.manifest.index.sha256 }));
    tx.throwIfAborted();

    // 6. The one atomic step: the reset snapshot becomes the default.
    stage('switch');
    await tx.finalize({ makeDefault: true });
    switched = true;
  } finally {
    if (!switched) {
      // The snapshot is deleted by the transaction; its fresh data set goes with it.
      for (const mp of [...RESET_MOUNTPOINTS].sort((a, b) => b.length - a.length)) await deleteTree(sys, top.dir, `${dataSetDir(num)}/${mp}`).catch(() => false);
      await sys.run('rm', ['-r', '--one-file-system', '--', join(top.dir, dataSetDir(num))], { allowFailure: true });
    }
  }
  stage('activate');
  await activateBoot(dev);
  return { snapshot: num, base, version: recorded.manifest.version, marker, removedDataSets };
}

export interface FinishResult {
  /** The reset snapshot finished now, if any. */
  finished?: number;
  deletedSnapshots: number[];
  deletedSubvolumes: string[];
  /** Kept snapshots whose fstab now mounts the new data. */
  remapped: number[];
}

/**
 * The boot step (run by `tiu health-check` after a healthy verdict): when the booted snapshot
 * is a reset snapshot marked good, delete the old data subvolumes and (unless kept) the other
 * snapshots, then mark the reset done. Idempotent: a crash half-way is finished at the next boot.
 * Refuses to delete anything while the old data is still mounted.
 */
export async function finishFactoryReset(dev: Device): Promise<FinishResult> {
  const out: FinishResult = { deletedSnapshots: [], deletedSubvolumes: [], remapped: [] };
  const { sys, store, root } = dev;
  const list = await store.list();
  const booted = list.find((s) => s.isMounted);
  if (!booted || booted.userdata[UD_RESET] !== 'pending') return out;
  const marker = parseMarker(await readFile(markerPath(root, booted.num), 'utf8'));
  if (marker.snapshot !== booted.num) throw new TiuError('RESET_FAILED', `the factory-reset marker of snapshot ${booted.num} names snapshot ${marker.snapshot}`);
  if (decideFinish({ booted: booted.num, marker, health: booted.userdata[UD.health], status: booted.userdata[UD_RESET] }) !== 'finish') return out;

  // The new data must be what is mounted now; never delete data in use.
  const real = await realpath(root);
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  for (const mp of RESET_MOUNTPOINTS) {
    const m = mountAt(mounts, join(real, mp));
    if (m?.root !== `/${marker.new[mp]}`) {
      throw new TiuError('RESET_FAILED', `/${mp} is mounted from ${m ? m.root : 'nothing'}, not the reset's ${marker.new[mp]}: not deleting the old data`, { hint: 'reboot into the reset snapshot; the boot step finishes then' });
    }
  }

  for (const s of list) {
    if (s.num === booted.num || s.isDefault) continue;
    if (marker.keepSnapshots) {
      const f = `${snapshotDir(root, s.num)}/etc/fstab`;
      const text = await readFile(f, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const now = fstabSubvolumes(text);
      if (RESET_MOUNTPOINTS.every((mp) => now[mp] === marker.new[mp])) continue;
      await writeAtomic(f, remapFstab(text, marker.new));
      out.remapped.push(s.num);
    } else {
      await deleteSnapshot(dev, s.num);
      out.deletedSnapshots.push(s.num);
    }
  }

  await using top = await mountTopLevel(sys, root);
  const used = await referencedSubvolumes(root, store);
  for (const mp of [...RESET_MOUNTPOINTS].sort((a, b) => b.length - a.length)) {
    const p = marker.old[mp]!;
    if (used.has(p)) {
      sys.log.warn(`keeping ${p}: a snapshot's fstab still mounts it`);
      continue;
    }
    if (await deleteTree(sys, top.dir, p)) out.deletedSubvolumes.push(p);
  }
  await removeStaleDataSets(sys, root, store, top.dir);
  await store.setUserdata(booted.num, { [UD_RESET]: 'done' });
  out.finished = booted.num;
  return out;
}
