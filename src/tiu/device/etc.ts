/**
 * The /etc step of an update, and the re-merge of edits made after it.
 *
 * After the apply step the new snapshot's /etc holds the new image's vendor /etc. We keep a copy
 * of it (the next update's merge base), freeze the running /etc in a read-only *syncpoint*
 * (a btrfs snapshot, taken atomically), and merge three-way: base = the base snapshot's vendor
 * copy, local = the syncpoint, new = the new vendor /etc; the result goes into the new /etc.
 *
 * An admin may edit /etc after `tiu update` and before the reboot. `tiu etc sync` (run at
 * shutdown by tiu-etc-sync.service, and again early at the next boot) merges those edits:
 * base = the syncpoint, local = the base snapshot's /etc now, new = the new snapshot's /etc.
 */
import { rmSync } from 'node:fs';
import { lstat, mkdir, rm, rename, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { System } from '../../core/system.ts';
import { applyEtcPlan, mergeEtc, verifyEtcResult } from '../../etc-merge/apply.ts';
import { planResult } from '../../etc-merge/report.ts';
import { treeDigests } from '../../etc-merge/compare.ts';
import { planEtcMerge } from '../../etc-merge/plan.ts';
import { dirContents, scanEtc } from '../../etc-merge/scan.ts';
import type { EtcMergeReport, EtcPlan, EtcTree } from '../../etc-merge/types.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { TiuError } from '../../core/errors.ts';
import { deleteSubvolume, isSubvolumeRoot, snapshotSubvolume } from '../../snapshot/btrfs.ts';
import { VENDOR_ETC_DIR } from './paths.ts';
import { SafeRoot } from '../../core/safepath.ts';
import { writeFileAtomic } from '../../core/atomic.ts';
import { etcTreeOfIndex } from './etc-carry.ts';

export { etcTreeOfIndex };

/**
 * The read-only snapshot of the local /etc a merge started from: /.snapshots/N/etc-syncpoint,
 * beside the snapshot (not inside it: the snapshot is read-only once finished).
 */
export function syncpointPath(snapshotDir: string): string {
  return `${dirname(snapshotDir)}/etc-syncpoint`;
}

export interface EtcStepResult {
  report: EtcMergeReport;
}


async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

/**
 * Makes a snapshot's vendor /etc copy (the next merge's base) from its /etc, just written from
 * the image (the vendor defaults): a read-only btrfs snapshot of the /etc subvolume, nested at
 * {@link VENDOR_ETC_DIR} (one ioctl, where `cp -a --reflink` of a Debian /etc made 552 new
 * inodes in ~80 ms); a reflinked copy when /etc is not a subvolume. Whatever was there (the
 * base's copy as a plain directory, the empty directory a nested one leaves in a snapshot, an
 * older nested copy) is removed first.
 */
export async function snapshotVendorEtc(sys: System, snapshotDir: string): Promise<void> {
  // Both ends resolved beneath the snapshot (a symlinked etc, usr/lib or state dir from the
  // image must not make cp, btrfs or rm act outside it); the children get /proc/<pid>/fd paths
  // of checked directories.
  await using root = await SafeRoot.open(snapshotDir, { what: 'the new snapshot' });
  await root.dir('etc', (etc) =>
    root.dir(dirname(VENDOR_ETC_DIR), async (parent) => {
      const dst = Buffer.concat([parent, Buffer.from('/'), VENDOR_ETC_NAME]);
      await removeVendorEtc(sys, dst);
      if (await isSubvolumeRoot(etc.toString())) await snapshotSubvolume(sys, etc.toString(), dst.toString(), { readonly: true });
      else await sys.run('cp', ['-a', '--reflink=auto', '--no-target-directory', etc.toString(), dst.toString()]);
    }, { create: 0o755, child: true }),
  { child: true });
  root.forget(VENDOR_ETC_DIR);
}

const VENDOR_ETC_NAME = Buffer.from(VENDOR_ETC_DIR.slice(VENDOR_ETC_DIR.lastIndexOf('/') + 1));

/** Removes a vendor /etc copy at `dst` (a /proc/<pid>/fd path): a nested subvolume, or a directory tree. */
async function removeVendorEtc(sys: System, dst: Buffer): Promise<void> {
  if (await isSubvolumeRoot(dst.toString())) await deleteSubvolume(sys, dst.toString());
  // (synchronously: the async rm makes a thread-pool round trip per entry; for the 552 entries
  // of the bench's vendor /etc, rmSync took 14-18 ms against 38-43 ms)
  else rmSync(dst, { recursive: true, force: true });
}

/**
 * Gives a new snapshot its base's vendor /etc copy when the update keeps it (the vendor /etc did
 * not change). A copy that is a nested subvolume is not part of the snapshot of the root (an
 * empty directory stands there): it is snapshotted over, read-only. A plain directory came with
 * the root's snapshot already: nothing to do. False when the base has no copy.
 */
export async function carryVendorEtc(sys: System, baseDir: string, newDir: string): Promise<boolean> {
  await using base = await SafeRoot.open(baseDir, { what: 'the base snapshot' });
  await using root = await SafeRoot.open(newDir, { what: 'the new snapshot' });
  // (the base's copy stays pinned while its /proc/<pid>/fd path is in use)
  const carried = await base.dir(VENDOR_ETC_DIR, async (from) => {
    if (!(await isSubvolumeRoot(from.toString()))) return true;
    await root.dir(dirname(VENDOR_ETC_DIR), async (parent) => {
      const dst = Buffer.concat([parent, Buffer.from('/'), VENDOR_ETC_NAME]);
      await removeVendorEtc(sys, dst);
      await snapshotSubvolume(sys, from.toString(), dst.toString(), { readonly: true });
    }, { create: 0o755, child: true });
    root.forget(VENDOR_ETC_DIR);
    return true;
  }, { child: true }).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return false;
    throw e;
  });
  return carried;
}

/** Freezes `etcDir` as a read-only subvolume at `dst` (a copy when /etc is not a subvolume). */
async function freeze(sys: System, etcDir: string, dst: string): Promise<void> {
  await mkdir(dirname(dst), { recursive: true, mode: 0o755 });
  if (await isSubvolumeRoot(etcDir)) await snapshotSubvolume(sys, etcDir, dst, { readonly: true });
  else await sys.run('cp', ['-a', '--reflink=auto', '--no-target-directory', etcDir, dst]);
}

async function writeReport(file: string, data: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n', { mkdir: false });
}

/** Where the merge report of snapshot N is kept (beside info.xml). */
export function reportPath(snapshotDir: string): string {
  return `${dirname(snapshotDir)}/tiu-etc-merge.json`;
}

/**
 * The /etc part of an update plan: the three-way merge decided before anything is written.
 * `next` is the new vendor /etc as the signed index lists it (so the plan needs no written
 * snapshot, and ACLs the image format cannot carry are seen as the apply step will write them).
 */
export interface EtcStepPlan {
  plan: EtcPlan;
  /** The new vendor /etc (index entries re-rooted at etc). */
  next: EtcTree;
  /** The base snapshot has a vendor /etc copy (else every difference counts as local). */
  hasBase: boolean;
}

/** Whether a snapshot (open as `root`) has tiu's copy of its vendor /etc, the next merge's base. */
export async function hasVendorEtc(root: SafeRoot): Promise<boolean> {
  return root.dir(VENDOR_ETC_DIR, async () => true).catch((e) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  });
}

/**
 * Plans the update's /etc merge: base = the base snapshot's vendor copy, local = `localDir` (the
 * live /etc for a dry run, its frozen syncpoint for the real run: the same content), new = the
 * target index's /etc, whose file contents (for line merges) are read from the etc directory of
 * `newContentRoot` (the mounted image, or for a delta the new snapshot once written), resolved
 * beneath it. Reads only.
 */
export async function planEtcStep(sys: System, o: { baseDir: string; localDir: string; target: readonly IndexEntry[]; newContentRoot: string }): Promise<EtcStepPlan> {
  // The base snapshot's directories are checked: its vendor copy and /etc are read through them.
  await using base = await SafeRoot.open(o.baseDir, { what: 'the base snapshot' });
  const hasBase = await hasVendorEtc(base);
  if (!hasBase) sys.log.warn('the base snapshot has no vendor /etc copy (not made by tiu): local /etc changes are kept, differing vendor files are written as .tiunew');
  await base.dir('etc', async () => {});
  const next = etcTreeOfIndex(o.target);
  await using content = await SafeRoot.open(o.newContentRoot, { what: 'the new image' });
  return await content.dir('etc', (newEtc) =>
    base.dir(hasBase ? VENDOR_ETC_DIR : '.', async (baseVendor) => {
      const baseDir = hasBase ? baseVendor.toString() : undefined;
      const [baseTree, local] = await Promise.all([baseDir ? scanEtc(baseDir, { sys }) : new Map<string, IndexEntry>(), scanEtc(o.localDir, { sys })]);
      const plan = await planEtcMerge(baseTree, local, next, dirContents({ base: baseDir ?? '/nonexistent', local: o.localDir, new: newEtc.toString() }));
      return { plan, next, hasBase };
    }, { child: true }),
  { child: true });
}

/**
 * Freezes the base snapshot's /etc as the new snapshot's syncpoint (the local side of the
 * merge, and the start of `tiu etc sync`). Returns its path.
 */
export async function freezeSyncpoint(sys: System, baseDir: string, newDir: string): Promise<string> {
  await using base = await SafeRoot.open(baseDir, { what: 'the base snapshot' });
  await base.dir('etc', async () => {});
  const syncpoint = syncpointPath(newDir);
  await rm(syncpoint, { recursive: true, force: true });
  await freeze(sys, `${baseDir}/etc`, syncpoint);
  return syncpoint;
}

/**
 * Carries out the /etc part of the update plan in the new snapshot (its /etc holds the new
 * vendor /etc by now): keeps the vendor copy, applies the planned merge with the syncpoint as
 * the local side, checks the result equals the plan's outcome, stores the report beside info.xml.
 */
export async function applyEtcStep(sys: System, step: EtcStepPlan, o: { baseDir: string; newDir: string; syncpoint: string; signal?: AbortSignal; vendorEtcUnchanged?: boolean }): Promise<EtcStepResult> {
  await using nw = await SafeRoot.open(o.newDir, { what: 'the new snapshot' });
  const kept = o.vendorEtcUnchanged === true && (await carryVendorEtc(sys, o.baseDir, o.newDir));
  if (!kept) await snapshotVendorEtc(sys, o.newDir);
  if (o.signal?.aborted) throw o.signal.reason;
  // The merge works on /proc/<pid>/fd paths of directories checked to be real ones in the new
  // snapshot, held open for its duration: no symlinked etc or usr/lib can redirect it.
  const report = await nw.dir('etc', (resultDir) =>
    nw.dir(VENDOR_ETC_DIR, async (newDir) => {
      const r = await applyEtcPlan(sys, step.plan, { local: o.syncpoint, next: newDir.toString(), result: resultDir.toString() });
      const bad = verifyEtcResult(planResult(step.plan, step.next), await scanEtc(resultDir.toString(), { sys }));
      if (bad.length) throw new TiuError('ETC_MERGE', `the merged /etc differs from the plan at ${bad.length} path(s): ${bad.slice(0, 5).join(', ')}`, { details: { paths: bad } });
      return r;
    }, { child: true }),
  { child: true });
  await writeReport(reportPath(o.newDir), report);
  return { report };
}

/**
 * The /etc step of an update whose vendor /etc is the base's (the same image, or the same /etc
 * entries): nothing merged, the snapshot's /etc is the running one's copy. Records an empty
 * report beside info.xml, as a merge would.
 */
export async function recordEtcCarriedOver(newDir: string): Promise<EtcMergeReport> {
  const report: EtcMergeReport = { takenFromVendor: [], keptLocal: [], merged: [], deleted: [], conflicts: [] };
  await writeReport(reportPath(newDir), { ...report, carriedOver: true });
  return report;
}

export interface EtcSyncResult {
  /** Paths of the base /etc that changed after the update was prepared. */
  changed: number;
  report?: EtcMergeReport;
}

/**
 * Carries /etc edits made on the base snapshot after the update was prepared into the new
 * snapshot's /etc. Idempotent: a second run finds nothing new (the syncpoint is advanced).
 */
export async function syncEtc(sys: System, o: { baseDir: string; newDir: string }): Promise<EtcSyncResult> {
  const syncpoint = syncpointPath(o.newDir);
  if (!(await exists(syncpoint))) return { changed: 0 };
  const [then, now] = await Promise.all([scanEtc(syncpoint, { sys }), scanEtc(`${o.baseDir}/etc`, { sys })]);
  const a = treeDigests(then);
  const b = treeDigests(now);
  const changed = new Set([...Object.keys(a), ...Object.keys(b)].filter((p) => a[p] !== b[p])).size;
  if (changed === 0) return { changed: 0 };
  const r = await mergeEtc(sys, { baseDir: syncpoint, localDir: `${o.baseDir}/etc`, newDir: `${o.newDir}/etc`, resultDir: `${o.newDir}/etc`, verify: true });
  // Advance the syncpoint so the same edits are not merged twice.
  const next = `${syncpoint}.next`;
  await freeze(sys, `${o.baseDir}/etc`, next);
  await removeSyncpoint(sys, o.newDir);
  await rename(next, syncpoint);
  const file = reportPath(o.newDir);
  let previous: unknown = null;
  try {
    previous = JSON.parse(await readFile(file, 'utf8'));
  } catch {}
  await writeReport(file, { ...(previous as object), resync: r.report });
  return { changed, report: r.report };
}

/** Deletes a snapshot's syncpoint (a subvolume, or a plain copy), if any. */
export async function removeSyncpoint(sys: System, snapshotDir: string): Promise<void> {
  const p = syncpointPath(snapshotDir);
  if (await isSubvolumeRoot(p)) await sys.run('btrfs', ['subvolume', 'delete', p]);
  else await rm(p, { recursive: true, force: true });
}
