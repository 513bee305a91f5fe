/** `tiu extract`: apply an archive into a new snapshot; see src/tiu/device/extract.ts. */
import type { Context } from '../context.ts';
import { extract, type ExtractResult } from '../device/extract.ts';
import { loadKeyring } from '../archive/trust.ts';
import { openDevice, parseSnapshotNumber } from '../device/open.ts';
import { createProgress } from '../progress.ts';
import { prefetchUpdateSource } from '../device/source.ts';
import { tuneForNativeWork } from '../v8tuning.ts';

export interface ExtractCommandOptions {
  root: string;
  base?: string;
  default?: boolean;
  keyring?: string;
  dryRun?: boolean;
  allowDowngrade?: boolean;
  json?: boolean;
}

export async function runExtract(ctx: Context, archive: string, o: ExtractCommandOptions): Promise<ExtractResult> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  const progress = await createProgress(ctx, !o.json);
  try {
    // The archive's signature and blocks are checked while the device is opened (see
    // prefetchUpdateSource); already without TurboFan, whose thread's malloc arena would stay in
    // the peak RSS (v8tuning.ts).
    tuneForNativeWork();
    await using prefetched = prefetchUpdateSource(archive, { keyringPem, allowedSigners: ctx.config.allowedSigners }, progress.update, ctx.sys);
    await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper, bootloader: ctx.config.bootloader });
    return await extract(dev, {
      archive,
      prefetched,
      base: o.base === undefined ? undefined : parseSnapshotNumber(o.base),
      makeDefault: o.default !== false,
      keyringPem,
      allowedSigners: ctx.config.allowedSigners,
      compatible: ctx.config.compatible,
      dryRun: o.dryRun,
      allowDowngrade: o.allowDowngrade,
      onProgress: progress.update,
    });
  } finally {
    progress.done();
  }
}

export function report(ctx: Context, r: ExtractResult & { status?: string }, json: boolean | undefined): void {
  if (json) {
    ctx.out(JSON.stringify(r, null, 2));
    return;
  }
  if (r.planLines) {
    for (const l of r.planLines) ctx.out(l);
    return;
  }
  const s = r.stats;
  if (r.sameImage) ctx.out(`snapshot ${r.number}: ${r.version} (from snapshot ${r.base}); the same image as snapshot ${r.base}: nothing written, ${s.unchanged} unchanged`);
  else ctx.out(`snapshot ${r.number}: ${r.version} (from snapshot ${r.base}); ${s.written} files written (${r.bytesWritten} bytes), ${s.linked} linked, ${s.created} created, ${s.metaOnly} metadata-only, ${s.removed} removed, ${s.unchanged} unchanged`);
  if (r.etcCarriedOver) ctx.out(`/etc: ${r.etcPlan?.[0] ?? 'carried over as it is'}`);
  else if (r.etc) {
    const e = r.etc;
    ctx.out(`/etc: ${e.takenFromVendor.length} from the new image, ${e.keptLocal.length} kept local, ${e.merged.length} merged, ${e.conflicts.length} conflicts`);
    for (const c of e.conflicts) ctx.out(`  conflict: /etc/${c.path}: ${c.reason}${c.tiunew ? ` (vendor version in /etc/${c.tiunew})` : ''}`);
  }
  ctx.out(r.madeDefault ? `snapshot ${r.number} is the new default: reboot to activate it` : `snapshot ${r.number} is ready; make it the default with: tiu rollback ${r.number}`);
}

export async function run(ctx: Context, archive: string, o: ExtractCommandOptions): Promise<number> {
  const r = await runExtract(ctx, archive, o);
  report(ctx, r, o.json);
  return 0;
}
