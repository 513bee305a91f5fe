/**
 * The /etc step of an update: the new snapshot's /etc holds the new image's vendor /etc after
 * the apply step; keep a copy of it as the next merge base, then carry this device's changes
 * (the base snapshot's /etc against its own vendor copy) over onto it, three-way.
 */
import { mkdir, rm, stat, writeFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { System } from '../system.ts';
import { TiuError } from '../errors.ts';
import { scanEtc, dirContents } from '../../etc-merge/scan.ts';
import { planEtcMerge } from '../../etc-merge/plan.ts';
import { applyEtcPlan } from '../../etc-merge/apply.ts';
import type { EtcMergeReport } from '../../etc-merge/types.ts';
import { VENDOR_ETC_DIR } from './paths.ts';

export interface EtcStepResult {
  report: EtcMergeReport;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * Copies a snapshot's /etc (just written from the image, i.e. the vendor defaults) to its
 * vendor-etc directory. Reflinks on btrfs, so it costs no data blocks.
 */
export async function snapshotVendorEtc(sys: System, snapshotDir: string): Promise<void> {
  const dst = `${snapshotDir}/${VENDOR_ETC_DIR}`;
  await rm(dst, { recursive: true, force: true });
  await mkdir(dirname(dst), { recursive: true, mode: 0o755 });
  await sys.run('cp', ['-a', '--reflink=auto', '--no-target-directory', `${snapshotDir}/etc`, dst]);
}

/**
 * Merges: base = the base snapshot's vendor copy (empty if it has none: then every difference
 * counts as a conflict and local wins), local = the base snapshot's /etc, new = the new vendor
 * /etc; the result is written into the new snapshot's /etc. Stores the report beside info.xml.
 */
export async function mergeEtcInto(sys: System, o: { baseDir: string; newDir: string; signal?: AbortSignal }): Promise<EtcStepResult> {
  await snapshotVendorEtc(sys, o.newDir);
  const dirs = {
    base: `${o.baseDir}/${VENDOR_ETC_DIR}`,
    local: `${o.baseDir}/etc`,
    new: `${o.newDir}/${VENDOR_ETC_DIR}`,
  };
  const hasBase = await exists(dirs.base);
  if (!hasBase) sys.log.warn('the base snapshot has no vendor /etc copy (not made by tiu): local /etc changes are kept, differing vendor files are written as .tiunew');
  const [base, local, next] = await Promise.all([hasBase ? scanEtc(dirs.base) : Promise.resolve(new Map()), scanEtc(dirs.local), scanEtc(dirs.new)]);
  if (o.signal?.aborted) throw o.signal.reason;
  const plan = await planEtcMerge(base, local, next, dirContents(dirs));
  let report: EtcMergeReport;
  try {
    report = await applyEtcPlan(sys, plan, { local: dirs.local, next: dirs.new, result: `${o.newDir}/etc` });
  } catch (e) {
    if (e instanceof TiuError) throw e;
    throw new TiuError('ETC_MERGE', `merging /etc failed: ${(e as Error).message}`, { cause: e, hint: 'nothing was made the default; rerun with --debug' });
  }
  const file = `${dirname(o.newDir)}/tiu-etc-merge.json`;
  await writeFile(`${file}.tmp`, JSON.stringify(report, null, 2) + '\n', { mode: 0o644 });
  await rename(`${file}.tmp`, file);
  return { report };
}
