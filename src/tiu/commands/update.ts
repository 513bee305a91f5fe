/** `tiu update`: fetch (file or URL), verify, extract, finalize; reboot on request. */
import { stat } from 'node:fs/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../errors.ts';
import { download } from '../device/download.ts';
import { createProgress } from '../progress.ts';
import { runExtract, report } from './extract.ts';
import { parseSize } from '../size.ts';
import { parseSource } from '../source.ts';
import { sameAsInstalled } from './update-unchanged.ts';

/** Parses a rate like 500k, 2M, 1000 (bytes per second). */
export function parseRate(text: string): number {
  return parseSize(text, '--limit-rate');
}

export async function run(ctx: Context, o: { root: string; source?: string; keyring?: string; reboot?: boolean; json?: boolean; limitRate?: string; reinstall?: boolean; unchangedExit77?: boolean }): Promise<number> {
  const source = o.source ?? ctx.config.source;
  if (!source) throw new TiuError('USAGE', 'no update source: pass --source FILE|URL', { hint: 'or set [update] source in /etc/tiu/tiu.conf' });
  // Check the whole command line before doing anything (a bad rate is an error for a file too).
  const rateLimit = o.limitRate === undefined ? undefined : parseRate(o.limitRate);
  const src = parseSource(source);
  let file = source;
  if (src.kind === 'url') {
    const progress = createProgress(ctx, !o.json);
    const cacheDir = o.root === '/' ? ctx.config.cacheDir : `${o.root.replace(/\/+$/, '')}${ctx.config.cacheDir}`;
    file = await download({ url: source, cacheDir, log: ctx.log, rateLimit, onProgress: (d, t) => progress.update('download', t ? d / t : 0) });
    progress.done();
  } else {
    try {
      await stat(source);
    } catch {
      throw new TiuError('INPUT_NOT_FOUND', `update source ${source} does not exist`, { hint: 'give an archive file or an https URL' });
    }
  }
  if (!o.reinstall) {
    const same = await sameAsInstalled(ctx, file, o);
    if (same !== undefined) return same;
  }
  const r = await runExtract(ctx, file, { root: o.root, keyring: o.keyring, json: o.json });
  report(ctx, o.json ? { status: 'updated', ...r } : r, o.json);
  if (o.reboot && r.madeDefault) {
    ctx.log.info('rebooting to activate the update');
    await ctx.sys.run('systemctl', ['reboot']);
  }
  return 0;
}
