/**
 * `tiu update` from a repository: refresh and plan (device.ts), refuse a downgrade, fetch the
 * chosen target (resumable, checked against its signed length and sha256), check that the
 * archive is the image the metadata promised, then extract as for any archive.
 */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { compareVersions } from '../archive/version-order.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { createProgress } from '../progress.ts';
import { runExtract, report } from '../commands/extract.ts';
import { checkRepository, fetchTarget, targetChoice, under, type RepoCheck } from './device.ts';
import { openDelta } from '../delta/open.ts';
import type { RepoImage } from './model.ts';
import { checkJson, checkLines } from './report.ts';

export interface RepoUpdateOptions {
  root: string;
  repository?: string;
  channel?: string;
  allowDowngrade?: boolean;
  keyring?: string;
  reboot?: boolean;
  json?: boolean;
  rateLimit?: number;
}

export async function updateFromRepository(ctx: Context, o: RepoUpdateOptions): Promise<number> {
  const c = await checkRepository(ctx, o);
  const plan = c.plan;
  if (plan.outcome === 'downgrade-refused') {
    throw new TiuError('REPO_DOWNGRADE', `channel ${c.channel} offers ${plan.newest!.version}, older than the installed ${c.installed!.version}: refusing to downgrade`, { hint: 'pass --allow-downgrade to install it anyway' });
  }
  const chosen = plan.chosen;
  if (!chosen) {
    if (o.json) ctx.out(JSON.stringify({ ...checkJson(c), updated: false }, null, 2));
    else for (const l of checkLines(c)) ctx.out(l);
    return 0;
  }
  const choice = targetChoice(plan);
  if (!choice) throw new TiuError('INTERNAL', 'the planner chose a path this client cannot apply');
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  let r;
  try {
    r = await fetchAndApply(ctx, c, choice.first, keyringPem, o);
  } catch (e) {
    // A delta that cannot be used (damaged, for another base, a locally changed base file,
    // a failed download) leaves the device unchanged: take the full image of the same build.
    if (!choice.fallback || !(e instanceof TiuError) || ['INTERRUPTED', 'BUSY'].includes(e.code)) throw e;
    ctx.log.warn(`the delta ${choice.first.path} could not be applied (${e.message} [${e.code}]); downloading the full image instead`);
    r = await fetchAndApply(ctx, c, choice.fallback, keyringPem, o);
  }
  report(ctx, r, o.json);
  if (o.reboot && r.madeDefault) {
    ctx.log.info('rebooting to activate the update');
    await ctx.sys.run('systemctl', ['reboot']);
  }
  return 0;
}

/** Fetches one target, checks it is the image the metadata promised, and extracts it. */
async function fetchAndApply(ctx: Context, c: RepoCheck, img: RepoImage, keyringPem: string, o: RepoUpdateOptions) {
  if (!o.json) ctx.out(`${c.channel}: ${c.installed?.version ?? 'nothing'} → ${img.version} (${img.kind === 'delta' ? 'delta, ' : ''}${img.path}, ${img.length} bytes)`);
  const progress = await createProgress(ctx, !o.json);
  let file: string;
  try {
    file = await fetchTarget(ctx, img, { targetsBase: c.refreshed.targetsBase, cacheDir: under(o.root, ctx.config.cacheDir), rateLimit: o.rateLimit, onProgress: (d, t) => progress.update('download', t ? d / t : 0) });
  } finally {
    progress.done();
  }
  // The archive's own signed manifest must be the image the repository's signed target names:
  // two signatures by different keys (archive CA, repository targets key) have to agree.
  {
    const trust = { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: c.compatible };
    await using a = img.kind === 'delta' ? await openDelta(file, trust) : await openArchive(file, trust);
    const m = a.manifest;
    const base = 'envelope' in a ? a.envelope.base.indexSha256 : undefined;
    if (m.version !== img.version || m.compatible !== img.compatible || m.index.sha256 !== img.index || base !== img.base) {
      throw new TiuError('REPO_TARGET', `target ${img.path} holds ${m.compatible} ${m.version}, the repository promised ${img.compatible} ${img.version}`, { hint: 'the repository was published wrongly: nothing was installed' });
    }
    if (c.installed && compareVersions(m.version, c.installed.version) < 0 && !o.allowDowngrade) {
      throw new TiuError('REPO_DOWNGRADE', `${m.version} is older than the installed ${c.installed.version}: refusing to downgrade`, { hint: 'pass --allow-downgrade to install it anyway' });
    }
  }
  return runExtract(ctx, file, { root: o.root, keyring: o.keyring, json: o.json, allowDowngrade: o.allowDowngrade });
}
