/** `tiu update`: fetch (file or URL), verify, extract, finalize; reboot on request. */
import { stat } from 'node:fs/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../errors.ts';
import { download } from '../device/download.ts';
import { createProgress } from '../progress.ts';
import { runExtract, report } from './extract.ts';

/** Parses a rate like 500k, 2M, 1000 (bytes per second). */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(text.trim());
  if (!m) throw new TiuError('USAGE', `--limit-rate must be bytes per second like 500k or 2M, got '${text}'`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  const n = Math.floor(Number(m[1]) * unit);
  if (n <= 0) throw new TiuError('USAGE', '--limit-rate must be positive');
  return n;
}

export async function run(ctx: Context, o: { root: string; source?: string; keyring?: string; reboot?: boolean; json?: boolean; limitRate?: string; allowDowngrade?: boolean }): Promise<number> {
  const source = o.source ?? ctx.config.source;
  if (!source) throw new TiuError('USAGE', 'no update source: pass --source FILE|URL', { hint: 'or set [update] source in /etc/tiu/tiu.conf' });
  let file = source;
  if (/^https?:\/\//.test(source)) {
    const progress = createProgress(ctx, !o.json);
    const cacheDir = o.root === '/' ? ctx.config.cacheDir : `${o.root.replace(/\/+$/, '')}${ctx.config.cacheDir}`;
    file = await download({ url: source, cacheDir, log: ctx.log, rateLimit: o.limitRate ? parseRate(o.limitRate) : undefined, onProgress: (d, t) => progress.update('download', t ? d / t : 0) });
    progress.done();
  } else {
    try {
      await stat(source);
    } catch {
      throw new TiuError('INPUT_NOT_FOUND', `update source ${source} does not exist`, { hint: 'give an archive file or an https URL' });
    }
  }
  const r = await runExtract(ctx, file, { root: o.root, keyring: o.keyring, json: o.json, allowDowngrade: o.allowDowngrade });
  report(ctx, r, o.json);
  if (o.reboot && r.madeDefault) {
    ctx.log.info('rebooting to activate the update');
    await ctx.sys.run('systemctl', ['reboot']);
  }
  return 0;
}
