/**
 * `tiu extract` / `tiu update`'s core: verify an archive, then apply its image into a NEW
 * snapshot of the current default (or of `base`), merge /etc, prepare booting, and switch the
 * default in one atomic step at the very end. The running snapshot is never written.
 */
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { SafeRoot } from '../../core/safepath.ts';
import { MAX_MANIFEST_SIZE } from '../archive/manifest.ts';
import { loadIndex } from '../../core/fileindex/io.ts';
import { serializeEntry } from '../../core/fileindex/format.ts';
import { TiuError } from '../../core/errors.ts';
import type { PlanStats } from '../apply/plan.ts';
import { openUpdateSource, type PrefetchedSource, type SameImageSource } from './source.ts';
import { executePlan } from '../apply/execute.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { createMountpoints } from '../../snapshot/layout.ts';
import { Transaction, cleanupInterrupted } from './transaction.ts';
import { readRecordedImage, isBaseTrusted, restoreDirTimes, dirTimesOf, type RecordedImage } from './state.ts';
import type { Device } from './open.ts';
import { INDEX_PATH, MANIFEST_COPY_PATH, SIGNATURE_COPY_PATH, TIU_STATE_DIR, UD } from './paths.ts';
import type { OpenedArchive } from '../archive/open.ts';
import { applyEtcStep, carryVendorEtc, freezeSyncpoint, hasVendorEtc, planEtcStep, recordEtcCarriedOver, type EtcStepResult } from './etc.ts';
import { isEtc, sameVendorEtc } from './etc-carry.ts';
import { etcPlanLines, planUpdate, updatePlanLines } from './update-plan.ts';
import { formatPlan } from '../../etc-merge/report.ts';
import { prepareBoot, activateBoot } from './boot.ts';
import { checkDowngrade } from './downgrade.ts';
import { sameImage } from './policy.ts';
import type { Manifest } from '../archive/manifest.ts';
import type { ProbeCounts } from './trusted.ts';
import type { DeltaBaseCheck } from '../delta/apply.ts';
import { tuneForNativeWork } from '../v8tuning.ts';
import { allSettledOrThrow } from '../../core/concurrency.ts';

export interface ExtractOptions {
  archive: string;
  base?: number;
  makeDefault: boolean;
  keyringPem: string;
  allowedSigners?: string[];
  /** The device's compatible string; defaults to the one recorded in the base snapshot. */
  compatible?: string;
  dryRun?: boolean;
  /** Install an image whose version is lower than the base snapshot's. */
  allowDowngrade?: boolean;
  onProgress?: (phase: string, fraction: number) => void;
  /** `archive`, opened ahead of the device (see prefetchUpdateSource); else opened here. */
  prefetched?: PrefetchedSource;
}

export interface ExtractResult {
  number: number | undefined;
  base: number;
  version: string;
  stats: PlanStats;
  bytesWritten: number;
  verification: 'dm-verity' | 'userspace' | 'signed-index';
  trustedBaseIndex: boolean;
  /** How the base's state was read: from its trusted index (only differing paths lstat'ed), or a full scan. */
  probe: ProbeCounts;
  /** A delta: the base files it builds on, and how many were hashed before writing (none on a trusted base). */
  deltaBase?: DeltaBaseCheck;
  etc?: EtcStepResult['report'];
  /** The dry run's listing (tree step, then /etc). */
  planLines?: string[];
  /** The /etc merge plan, one line per action and a summary: the same in the dry run and the real run. */
  etcPlan?: string[];
  /** The archive held the image the trusted base was made from: the base copied as it is (no tree step, no /etc merge). */
  sameImage?: boolean;
  /** The image's vendor /etc is the base's: the local /etc carried over as it is (no merge; `etc` is then empty). */
  etcCarriedOver?: boolean;
  madeDefault: boolean;
}

/** Runs the update on `dev` (opened with its lock held). */
export async function extract(dev: Device, o: ExtractOptions): Promise<ExtractResult> {
  const { sys, store } = dev;
  // --debug shows when each step ended (where an update spends its time).
  const t0 = performance.now();
  // No top-tier compiler from here on, for a full extract and a delta alike (v8tuning.ts).
  tuneForNativeWork();
  const mark = (step: string) => sys.log.debug(`step ${step} done after ${(performance.now() - t0).toFixed(0)} ms ${JSON.stringify(Object.fromEntries(Object.entries(process.memoryUsage()).map(([k, v]) => [k, Math.round(v / 2 ** 20)])))}`);
  await cleanupInterrupted(dev);

  mark('clean up interrupted runs');
  const base = o.base ?? (await store.getDefault());
  if (base === undefined) {
    throw new TiuError('ROOT_LAYOUT', `${dev.root} has no default snapshot to update from`, { hint: 'install a system first (tiu install) or pass --base N' });
  }
  const snapshots = await store.list();
  const baseInfo = snapshots.find((s) => s.num === base);
  if (!baseInfo) throw new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${base} does not exist`, { hint: 'see tiu status for the snapshots' });
  if (baseInfo.userdata[UD.inProgress] === 'yes') throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${base} is unfinished and cannot be a base`, { hint: 'pick a finished snapshot with --base' });
  const baseDir = dev.snapshotDir(base);
  const recorded: RecordedImage | undefined = await readRecordedImage(baseDir);

  // Whether the base still is what tiu sealed (a child process): asked now, answered while the
  // archive is being verified.
  const trustedP = recorded !== undefined ? isBaseTrusted(sys, baseDir, baseInfo.userdata[UD.generation]) : Promise.resolve(false);
  trustedP.catch(() => {});

  // 1. Authenticate, check compatibility, verify every block (archive) or the whole delta and
  // its base: all before any byte is written.
  mark('list snapshots');
  const compatible = o.compatible ?? recorded?.manifest.compatible;
  // A full archive of another image than the base's: the base's index (the plan's old side, on a
  // trusted base) is read while the archive's blocks are still being checked.
  let oldIndexP: Promise<IndexEntry[] | undefined> | undefined;
  const onManifest = (nm: Manifest) => {
    if (!recorded || sameImage(nm, recorded.manifest)) return;
    oldIndexP = trustedP.then((t) => (t ? loadIndex(recorded.indexPath, { canonical: false }) : undefined));
    oldIndexP.catch(() => {});
  };
  await using image = await openUpdateSource(sys, { path: o.archive, keyringPem: o.keyringPem, allowedSigners: o.allowedSigners, compatible, baseNum: base, baseDir, recorded, onProgress: o.onProgress, baseTrusted: () => trustedP, prefetched: o.prefetched, onManifest });
  mark(image.kind === 'same-image' ? 'check the signature (the same image as the base)' : 'verify the archive');
  const m = image.manifest;
  checkDowngrade(m.version, baseInfo.userdata[UD.version] ?? recorded?.manifest.version, base, o.allowDowngrade === true);
  if (image.kind === 'same-image') return await extractSameImage(dev, o, { base, image, mark });
  const target = image.target;

  const trusted = await trustedP;
  // A delta has read (and checked) the base's recorded index already: one copy in memory.
  const oldIndex = trusted && recorded ? (image.content?.oldIndex ?? (await oldIndexP) ?? (await loadIndex(recorded.indexPath, { canonical: false }))) : undefined;
  mark('read the base index');
  // The image's vendor /etc is the base's (a trusted base, the same /etc in both indexes): the
  // three-way merge would give the local /etc, which the new snapshot holds from the start. So
  // /etc is left out of the tree step (not rewritten to the vendor's, then merged back) and not
  // merged; its syncpoint is the new /etc frozen, as for the same image.
  const etcCarried = oldIndex !== undefined && sameVendorEtc(oldIndex, target) && (await baseHasVendorEtc(baseDir));
  const planInputs = etcCarried
    ? { oldIndex, target: target.filter((e) => !isEtc(e.path)), excluded: [...m.excluded, '/etc'] }
    : { oldIndex, target, excluded: m.excluded };
  const etcSides = (localDir: string) => (image.etcDir && !etcCarried ? { baseDir, localDir, newContentRoot: image.imageRoot } : undefined);
  if (o.dryRun) {
    // The same plan the real run carries out, measured on the base (the new snapshot starts as its copy).
    const plan = await planUpdate(sys, { ...planInputs, treeDir: baseDir, etc: etcSides(`${baseDir}/etc`) });
    const etcPlan = etcCarried ? [carriedLine(base)] : plan.etc ? etcPlanLines(plan) : undefined;
    const planLines = updatePlanLines(plan, etcCarried ? [carriedLine(base)] : undefined);
    return { number: undefined, base, version: m.version, stats: plan.apply.stats, bytesWritten: 0, verification: image.verification, trustedBaseIndex: trusted, probe: plan.probe, planLines, etcPlan, etcCarriedOver: etcCarried || undefined, madeDefault: false };
  }

  // 2. The new snapshot, and its syncpoint: the base's /etc frozen (the merge's local side).
  await using tx = new Transaction(dev);
  const num = await tx.begin({
    from: base,
    description: `tiu: ${m.compatible} ${m.version}`,
    userdata: { [UD.version]: m.version, [UD.compatible]: m.compatible, [UD.rootHash]: m.verity.rootHash, [UD.base]: String(base) },
  });
  sys.log.debug(`new snapshot ${num} from ${base}`);
  const dir = tx.dir;
  mark('new snapshot');
  const syncpoint = etcCarried ? await freezeSyncpoint(sys, dir, dir) : await freezeSyncpoint(sys, baseDir, dir);
  tx.throwIfAborted();

  // 3. The plan (as --dry-run prints it), then make the snapshot equal to the image (only what
  // differs is written).
  mark('freeze /etc syncpoint');
  o.onProgress?.('scanning', 0);
  const plan = await planUpdate(sys, { ...planInputs, treeDir: dir, etc: etcSides(syncpoint) });
  tx.throwIfAborted();
  mark('plan');
  const total = plan.apply.stats.writtenBytes || 1;
  // A delta builds on the base's files: check them all before writing any.
  const deltaBase = await image.content?.precheck(plan.apply, { baseTrusted: trusted });
  const exec = await executePlan(plan.apply, {
    sys,
    imageRoot: image.imageRoot,
    content: image.content,
    targetRoot: dir,
    signal: tx.signal,
    onProgress: (b) => o.onProgress?.('writing', b / total),
  });
  image.content?.releaseBuffers();
  mark('apply');
  tx.throwIfAborted();

  // 4. Mount points of the separate subvolumes, and which image this snapshot holds (the next
  // update's base index).
  await createMountpoints(dir);
  await recordImage(dir, image.imageRoot, image.manifestBytes, recorded?.manifest.index.sha256 === m.index.sha256 && trusted, image.signatureDer);

  mark('record the image');
  // 5. /etc: the new vendor defaults with this device's changes carried over. The vendor copy
  // the snapshot inherited stays when the image's /etc did not change (nothing rewritten). A
  // delta's /etc is planned now that its contents are written (and checked against the index).
  const etcStep = etcCarried ? undefined : (plan.etc ?? (await planEtcStep(sys, { baseDir, localDir: syncpoint, target, newContentRoot: dir })));
  let etc: EtcStepResult;
  if (etcStep) etc = await applyEtcStep(sys, etcStep, { baseDir, newDir: dir, syncpoint, signal: tx.signal, vendorEtcUnchanged: oldIndex !== undefined && sameEtc(oldIndex, target) });
  else {
    await carryVendorEtc(sys, baseDir, dir);
    etc = { report: await recordEtcCarriedOver(dir) };
  }
  tx.throwIfAborted();

  mark('/etc merge');
  // Nothing reads the image (or the delta's work directory) after the /etc step: it is let go
  // now, its unmount (a child process) running beside the boot preparation and the seal. The
  // end of its scope waits for that and reports a failure, as before.
  const released = Promise.resolve(image[Symbol.asyncDispose]());
  released.catch(() => {});
  // 6. Booting: initrd and bootloader entries (per configuration).
  await prepareBoot(dev, { snapshotDir: dir, num, manifest: m });

  mark('boot preparation');
  await restoreDirTimes(dir, target);

  mark('directory times');
  // 7. Seal and switch; then the bootloader follows the new default.
  await tx.finalize({ makeDefault: o.makeDefault });
  mark('seal and set default');
  await released;
  if (o.makeDefault) await activateBoot(dev);
  return {
    number: num,
    base,
    version: m.version,
    stats: plan.apply.stats,
    bytesWritten: exec.bytesWritten,
    verification: image.verification,
    trustedBaseIndex: trusted,
    probe: plan.probe,
    deltaBase,
    etc: etc.report,
    etcPlan: etcStep ? formatPlan(etcStep.plan) : [carriedLine(base)],
    etcCarriedOver: etcCarried || undefined,
    madeDefault: o.makeDefault,
  };
}

/**
 * The archive holds the image the trusted base was made from (same signed index): the new
 * snapshot is the base's copy as it is. Its tree already equals the image, and its /etc (a
 * snapshot of the running one) is exactly what a merge would give, since the vendor side did not
 * change; so no tree step and no /etc merge, and the image is never mounted. The archive's blocks
 * are verified all the same (from the moment it is opened, while its signature and the base are
 * checked), before anything is created. What changes: the records (manifest, signature,
 * version), the boot entries, the default.
 */
async function extractSameImage(dev: Device, o: ExtractOptions, c: { base: number; image: SameImageSource; mark: (step: string) => void }): Promise<ExtractResult> {
  const { sys } = dev;
  const { base, image, mark } = c;
  const m = image.manifest;
  const stats: PlanStats = { unchanged: m.index.entries, written: 0, writtenBytes: 0, created: 0, removed: 0, metaOnly: 0, linked: 0 };
  const etcPlan = [carriedLine(base)];
  // The times of the directories tiu writes into, as the sealed base (so the image) has them.
  const dirTimes = await dirTimesOf(dev.snapshotDir(base));
  const common = { base, version: m.version, stats, bytesWritten: 0, verification: image.verification, trustedBaseIndex: true, probe: { mode: 'trusted-index' as const, pathsRead: 0 }, sameImage: true, etcCarriedOver: true, etcPlan };
  // Every block checked before anything is created (a bad archive changes nothing, not even
  // the next snapshot number); the signature, the base and its records were checked meanwhile.
  await image.verified;
  mark('every block of the archive verified');
  if (o.dryRun) {
    const planLines = [`nothing to write: snapshot ${base} holds this image (signed index ${m.index.sha256.slice(0, 16)}…)`, '', '/etc merge:', ...etcPlan];
    return { ...common, number: undefined, planLines, madeDefault: false };
  }
  await using tx = new Transaction(dev);
  const num = await tx.begin({
    from: base,
    description: `tiu: ${m.compatible} ${m.version}`,
    userdata: { [UD.version]: m.version, [UD.compatible]: m.compatible, [UD.rootHash]: m.verity.rootHash, [UD.base]: String(base) },
  });
  sys.log.debug(`new snapshot ${num} from ${base} (the same image)`);
  const dir = tx.dir;
  mark('new snapshot');
  // The syncpoint is the new snapshot's own /etc, frozen: what it carries over, and where
  // `tiu etc sync` takes the edits made on the running /etc from. It, the base's vendor /etc copy
  // and the records touch different places (a new subvolume beside the snapshot; one nested at
  // usr/lib/tiu/vendor-etc; the state directory, the mount points and the report): made at once.
  const [, , etc] = await allSettledOrThrow<[string, boolean, EtcStepResult['report']]>(
    freezeSyncpoint(sys, dir, dir),
    carryVendorEtc(sys, dev.snapshotDir(base), dir),
    (async () => {
      await createMountpoints(dir);
      await recordImage(dir, undefined, image.manifestBytes, true, image.signatureDer);
      return recordEtcCarriedOver(dir);
    })(),
  );
  tx.throwIfAborted();
  mark('records and /etc');
  await prepareBoot(dev, { snapshotDir: dir, num, manifest: m });
  await restoreDirTimes(dir, dirTimes);
  mark('boot preparation');
  tx.throwIfAborted();
  await tx.finalize({ makeDefault: o.makeDefault });
  mark('seal and set default');
  if (o.makeDefault) await activateBoot(dev);
  return { ...common, number: num, etc, madeDefault: o.makeDefault };
}

/** The /etc line of an update that carries the local /etc over unmerged. */
function carriedLine(base: number): string {
  return `carried over as it is: the image's vendor /etc is snapshot ${base}'s`;
}

/** Whether the base snapshot has tiu's copy of its vendor /etc (the merge base of this update). */
async function baseHasVendorEtc(baseDir: string): Promise<boolean> {
  await using root = await SafeRoot.open(baseDir, { what: 'the base snapshot' });
  return hasVendorEtc(root);
}

/** Whether two indexes list the same /etc (every entry and attribute). */
function sameEtc(a: readonly IndexEntry[], b: readonly IndexEntry[]): boolean {
  const etc = (l: readonly IndexEntry[]) => l.filter((e) => isEtc(e.path)).map((e) => serializeEntry(e));
  const x = etc(a);
  const y = etc(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** The archive's CMS SignedData (DER), read through its open handle. */
export async function readSignature(archive: OpenedArchive): Promise<Buffer> {
  const buf = Buffer.alloc(archive.sigSize);
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await archive.fh.read(buf, done, buf.length - done, archive.sigOffset + done);
    if (bytesRead === 0) throw new TiuError('ARCHIVE_TRUNCATED', `archive ended early reading its signature`, { hint: 'download the archive again' });
    done += bytesRead;
  }
  return buf;
}

/**
 * Writes the image's index, manifest and (when given) the manifest's signature into the
 * snapshot's tiu state directory (each left as inherited when it is the same, so an identical
 * image rewrites nothing).
 */
export async function recordImage(dir: string, imageDir: string | undefined, manifestBytes: Buffer, sameIndex = false, signatureDer?: Buffer): Promise<void> {
  // Both trees are resolved beneath their roots: a symlinked usr/lib (or state dir) in the image
  // must not make tiu write outside the snapshot, nor read outside the image.
  await using target = await SafeRoot.open(dir, { what: 'the new snapshot' });
  await target.dir(TIU_STATE_DIR, async () => {}, { create: 0o755 });
  if (!sameIndex) {
    if (imageDir === undefined) throw new TiuError('INTERNAL', 'recordImage: a new index needs the image it comes from');
    await using image = await SafeRoot.open(imageDir, { what: 'the image' });
    const index = await image.at(INDEX_PATH, async (p) => {
      const fh = await open(p, constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    });
    await target.writeAtomic(INDEX_PATH, index, { mode: 0o644 });
  }
  await replaceIfDifferent(target, MANIFEST_COPY_PATH, manifestBytes, MAX_MANIFEST_SIZE);
  // The signed blob too, so `tiu verify --system` can re-check the signature later.
  if (signatureDer) await replaceIfDifferent(target, SIGNATURE_COPY_PATH, signatureDer, 1024 * 1024);
}

/** Writes `bytes` at `rel` beneath `root` (atomically) unless the file already holds them. */
async function replaceIfDifferent(root: SafeRoot, rel: string, bytes: Buffer, max: number): Promise<void> {
  const old = await root.readBounded(rel, max).catch(() => undefined);
  if (old?.equals(bytes)) return;
  await root.writeAtomic(rel, bytes, { mode: 0o644 });
}
