/**
 * `tiu extract` / `tiu update`'s core: verify an archive, then apply its image into a NEW
 * snapshot of the current default (or of `base`), merge /etc, prepare booting, and switch the
 * default in one atomic step at the very end. The running snapshot is never written.
 */
import { copyFile, mkdir, readFile, writeFile, rename } from 'node:fs/promises';
import { loadIndex } from '../fileindex/io.ts';
import { serializeEntry } from '../fileindex/format.ts';
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import { openUpdateSource } from './source.ts';
import { planApply, formatPlan, type PlanStats } from '../apply/plan.ts';
import { executePlan } from '../apply/execute.ts';
import { displayPath, type IndexEntry } from '../fileindex/types.ts';
import { openSnapshotStore } from '../../snapshot/store.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { assertBtrfs } from '../../snapshot/btrfs.ts';
import { createMountpoints } from '../../snapshot/layout.ts';
import { Transaction, cleanupInterrupted } from './transaction.ts';
import { readImageIndex, readRecordedImage, fillDigests, scanActual, isBaseTrusted, restoreDirTimes, type RecordedImage } from './state.ts';
import { excludedMatcher, protectedMatcher, snapshotDir, INDEX_PATH, MANIFEST_COPY_PATH, TIU_STATE_DIR, UD } from './paths.ts';
import { dryRunEtc, mergeEtcInto, type EtcStepResult } from './etc.ts';
import { prepareBoot, activateBoot } from './boot.ts';
import { TIU_VERSION } from '../version.ts';

export interface ExtractOptions {
  archive: string;
  root: string;
  base?: number;
  makeDefault: boolean;
  keyringPem: string;
  allowedSigners?: string[];
  /** The device's compatible string; defaults to the one recorded in the base snapshot. */
  compatible?: string;
  dryRun?: boolean;
  snapper?: 'auto' | 'yes' | 'no';
  bootloader?: string;
  onProgress?: (phase: string, fraction: number) => void;
}

export interface ExtractResult {
  number: number | undefined;
  base: number;
  version: string;
  stats: PlanStats;
  bytesWritten: number;
  verification: 'dm-verity' | 'userspace' | 'signed-index';
  trustedBaseIndex: boolean;
  etc?: EtcStepResult['report'];
  planLines?: string[];
  madeDefault: boolean;
}

export async function extract(sys: System, o: ExtractOptions): Promise<ExtractResult> {
  await assertBtrfs(sys, o.root);
  await using _lock = await acquireLock(sys, o.root);
  const store = await openSnapshotStore(sys, o.root, { snapper: o.snapper ?? 'auto' });
  await cleanupInterrupted(sys, store, o.root);

  const base = o.base ?? (await store.getDefault());
  if (base === undefined) {
    throw new TiuError('ROOT_LAYOUT', `${o.root} has no default snapshot to update from`, { hint: 'install a system first (tiu install) or pass --base N' });
  }
  const snapshots = await store.list();
  const baseInfo = snapshots.find((s) => s.num === base);
  if (!baseInfo) throw new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${base} does not exist`, { hint: 'see tiu status for the snapshots' });
  if (baseInfo.userdata[UD.inProgress] === 'yes') throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${base} is unfinished and cannot be a base`, { hint: 'pick a finished snapshot with --base' });
  const baseDir = snapshotDir(o.root, base);
  const recorded: RecordedImage | undefined = await readRecordedImage(baseDir);

  // 1. Authenticate, check compatibility, verify every block (archive) or the whole delta and
  // its base: all before any byte is written.
  const compatible = o.compatible ?? recorded?.manifest.compatible;
  await using image = await openUpdateSource(sys, { path: o.archive, keyringPem: o.keyringPem, allowedSigners: o.allowedSigners, compatible, baseNum: base, baseDir, recorded, onProgress: o.onProgress });
  const m = image.manifest;
  const target = image.target;

  const isExcluded = excludedMatcher(m.excluded);
  const trusted = recorded !== undefined && (await isBaseTrusted(sys, baseDir, baseInfo.userdata[UD.generation]));

  if (o.dryRun) {
    const actual = await scanActual(sys, baseDir, { exclude: m.excluded });
    await fillDigests(baseDir, actual, target, trusted && recorded ? await loadIndex(recorded.indexPath) : undefined);
    const plan = planApply(target, actual, { isExcluded, isProtected: protectedMatcher(m.excluded) });
    const etcLines = image.etcDir ? await dryRunEtc(sys, baseDir, image.etcDir) : ['(not shown for a delta: its image is never mounted)'];
    return { number: undefined, base, version: m.version, stats: plan.stats, bytesWritten: 0, verification: image.verification, trustedBaseIndex: trusted, planLines: [...formatPlan(plan, displayPath), '', '/etc merge:', ...etcLines], madeDefault: false };
  }

  // 2. The new snapshot.
  await using tx = new Transaction(sys, store, o.root);
  const num = await tx.begin({
    from: base,
    description: `tiu: ${m.compatible} ${m.version}`,
    userdata: { [UD.version]: m.version, [UD.compatible]: m.compatible, [UD.rootHash]: m.verity.rootHash, [UD.base]: String(base) },
  });
  sys.log.debug(`new snapshot ${num} from ${base}`);
  const dir = tx.dir;

  // 3. Make it equal to the image (only what differs is written).
  o.onProgress?.('scanning', 0);
  const actual = await scanActual(sys, dir, { exclude: m.excluded });
  tx.throwIfAborted();
  const oldIndex = trusted && recorded ? await loadIndex(recorded.indexPath) : undefined;
  await fillDigests(dir, actual, target, oldIndex);
  const plan = planApply(target, actual, { isExcluded, isProtected: protectedMatcher(m.excluded) });
  const total = plan.stats.writtenBytes || 1;
  // A delta builds on the base's files: check them all before writing any.
  await image.content?.precheck(plan);
  const exec = await executePlan(plan, {
    sys,
    imageRoot: image.imageRoot,
    content: image.content,
    targetRoot: dir,
    signal: tx.signal,
    onProgress: (b) => o.onProgress?.('writing', b / total),
  });
  tx.throwIfAborted();

  // 4. Mount points of the separate subvolumes, and which image this snapshot holds (the next
  // update's base index).
  await createMountpoints(dir);
  await recordImage(dir, image.imageRoot, image.manifestBytes, recorded?.manifest.index.sha256 === m.index.sha256 && trusted);

  // 5. /etc: the new vendor defaults with this device's changes carried over. The vendor copy
  // the snapshot inherited stays when the image's /etc did not change (nothing rewritten).
  const vendorEtcUnchanged = oldIndex !== undefined && sameEtc(oldIndex, target);
  const etc = await mergeEtcInto(sys, { baseDir, newDir: dir, signal: tx.signal, vendorEtcUnchanged });
  tx.throwIfAborted();

  // 6. Booting: initrd and bootloader entries (per configuration).
  await prepareBoot(sys, { root: o.root, snapshotDir: dir, num, manifest: m, bootloader: o.bootloader });

  await restoreDirTimes(dir, target);

  // 7. Seal and switch; then the bootloader follows the new default.
  await tx.finalize({ makeDefault: o.makeDefault });
  if (o.makeDefault) await activateBoot(sys, { root: o.root, bootloader: o.bootloader, snapper: o.snapper });
  return {
    number: num,
    base,
    version: m.version,
    stats: plan.stats,
    bytesWritten: exec.bytesWritten,
    verification: image.verification,
    trustedBaseIndex: trusted,
    etc: etc?.report,
    madeDefault: o.makeDefault,
  };
}

/** Whether two indexes list the same /etc (every entry and attribute). */
function sameEtc(a: readonly IndexEntry[], b: readonly IndexEntry[]): boolean {
  const etc = (l: readonly IndexEntry[]) => l.filter((e) => e.path === 'etc' || e.path.startsWith('etc/')).map((e) => serializeEntry(e));
  const x = etc(a);
  const y = etc(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/**
 * Writes the image's index and manifest into the snapshot's tiu state directory (the index is
 * left as inherited when it is the same, so an identical image rewrites nothing).
 */
export async function recordImage(dir: string, imageDir: string, manifestBytes: Buffer, sameIndex = false): Promise<void> {
  const state = `${dir}/${TIU_STATE_DIR}`;
  await mkdir(state, { recursive: true, mode: 0o755 });
  if (!sameIndex) {
    await copyFile(`${imageDir}/${INDEX_PATH}`, `${dir}/${INDEX_PATH}.tmp`);
    await rename(`${dir}/${INDEX_PATH}.tmp`, `${dir}/${INDEX_PATH}`);
  }
  const old = await readFile(`${dir}/${MANIFEST_COPY_PATH}`).catch(() => undefined);
  if (old?.equals(manifestBytes)) return;
  await writeFile(`${dir}/${MANIFEST_COPY_PATH}.tmp`, manifestBytes, { mode: 0o644 });
  await rename(`${dir}/${MANIFEST_COPY_PATH}.tmp`, `${dir}/${MANIFEST_COPY_PATH}`);
}

