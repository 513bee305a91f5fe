/**
 * `tiu verify <archive>`: signature + every data block; exit 0 only if all holds.
 * `tiu verify --system [--snapshot N]`: the booted (or N-th) snapshot against its recorded,
 * signed index (see src/tiu/device/verify-system.ts); SYSTEM_MODIFIED when anything differs.
 */
import { errorLine } from '../cli-errors.ts';
import { writeStderr } from '../../core/log.ts';
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { openArchive } from '../archive/open.ts';
import { isDeltaFile, openDelta } from '../delta/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { createProgress } from '../progress.ts';
import { openDevice, parseSnapshotNumber } from '../device/open.ts';
import { verifySystem } from '../device/verify-system.ts';
import { formatDifference } from '../device/verify-scope.ts';
import { displayPath } from '../../core/fileindex/types.ts';

export interface VerifyCommandOptions {
  keyring?: string;
  compatible?: string;
  system?: boolean;
  snapshot?: string;
  root?: string;
  json?: boolean;
}

export async function run(ctx: Context, file: string | undefined, o: VerifyCommandOptions): Promise<number> {
  if (o.system) {
    if (file !== undefined) throw new TiuError('USAGE', '--system checks the installed system, not an archive', { hint: 'drop the archive argument, or drop --system' });
    return runSystem(ctx, o);
  }
  if (file === undefined) throw new TiuError('USAGE', 'no archive given', { hint: 'tiu verify <archive>, or tiu verify --system for the installed system' });
  if (o.snapshot !== undefined) throw new TiuError('USAGE', '--snapshot goes with --system');
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  if (await isDeltaFile(file)) return runDelta(ctx, file, keyringPem, o);
  await using a = await openArchive(file, { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: o.compatible });
  const progress = await createProgress(ctx);
  await a.verifyData((done, total) => progress.update('verifying', total ? done / total : 1));
  progress.done();
  if (o.json) {
    const m = a.manifest;
    ctx.out(JSON.stringify({ file, ok: true, compatible: m.compatible, version: m.version, signer: { subject: a.signature.subject, commonName: a.signature.commonName ?? null }, dataBlocks: m.verity.dataSize / 4096 }, null, 2));
    return 0;
  }
  ctx.out(`${file}: OK (${a.manifest.compatible} ${a.manifest.version}, signed by ${a.signature.commonName ?? a.signature.subject}, ${a.manifest.verity.dataSize / 4096} data blocks verified)`);
  return 0;
}

/**
 * A delta: its signature, every byte of its body against the signed digest, and the new image's
 * manifest signature inside (what a device checks before applying it; each file a patch rebuilds
 * is checked against the new signed index on the device, where the base it needs is).
 */
async function runDelta(ctx: Context, file: string, keyringPem: string, o: VerifyCommandOptions): Promise<number> {
  await using d = await openDelta(file, { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: o.compatible });
  const env = d.envelope;
  const signer = d.signer.commonName ?? d.signer.subject;
  if (o.json) {
    ctx.out(JSON.stringify({ file, ok: true, type: 'delta', compatible: env.compatible, base: env.base.version, version: env.target.version, signer: { subject: d.signer.subject, commonName: d.signer.commonName ?? null }, bodyBytes: env.body.size }, null, 2));
    return 0;
  }
  ctx.out(`${file}: OK (delta ${env.compatible} ${env.base.version} -> ${env.target.version}, signed by ${signer}, ${env.body.size} bytes verified)`);
  return 0;
}

async function runSystem(ctx: Context, o: VerifyCommandOptions): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  await using dev = await openDevice(ctx.sys, o.root ?? '/', { snapper: ctx.config.snapper });
  const r = await verifySystem(dev, {
    snapshot: o.snapshot === undefined ? undefined : parseSnapshotNumber(o.snapshot),
    keyringPem,
    allowedSigners: ctx.config.allowedSigners,
    onDifference: o.json ? undefined : (d) => ctx.out(formatDifference(d, displayPath)),
  });
  if (o.json) {
    ctx.out(JSON.stringify({ ...r, differences: r.differences.map((d) => ({ ...d, path: `/${displayPath(d.path)}` })) }, null, 2));
  } else if (r.ok) {
    ctx.out(`snapshot ${r.snapshot}: OK (${r.compatible} ${r.version}, signed by ${r.signer.commonName ?? r.signer.subject}, ${r.scanned.entries} entries, ${r.scanned.bytes} bytes hashed)`);
  }
  if (!r.ok) {
    const c = r.counts;
    const e = new TiuError('SYSTEM_MODIFIED', `snapshot ${r.snapshot} differs from its signed image ${r.version}: ${c.modified} modified, ${c.missing} missing, ${c.extra} extra`, {
      hint: 'restore it with tiu update (a fresh snapshot of the image) or tiu rollback; investigate if unexpected',
    });
    if (!o.json) throw e;
    // Under --json the result above is the one document on stdout (its `ok: false` says it);
    // the error line still goes to stderr, and the exit code is the error's.
    writeStderr('error', errorLine(e));
    return e.exitCode;
  }
  return 0;
}
