/** `tiu update`: fetch (file or URL), verify, extract, finalize; reboot on request. */
import { stat, unlink } from 'node:fs/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../errors.ts';
import { parseSize } from '../config.ts';
import { downloadChecked, writeMeta } from '../device/download.ts';
import { parseDownloadUrl } from '../download/fetch.ts';
import { createProgress } from '../progress.ts';
import { runExtract, report } from './extract.ts';

/** Parses a rate like 500k, 2M, 1000 (bytes per second). */
export function parseRate(text: string): number {
  const n = parseSize(text);
  if (n === undefined) throw new TiuError('USAGE', `--limit-rate must be bytes per second like 500k or 2M, got '${text}'`);
  if (n <= 0) throw new TiuError('USAGE', '--limit-rate must be positive');
  return n;
}

/** Parses a whole number of seconds (> 0) given for option `name`. */
export function parseSeconds(text: string, name: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) <= 0) throw new TiuError('USAGE', `${name} must be a whole number of seconds, got '${text}'`);
  return Number(text);
}

export interface UpdateOptions {
  root: string;
  source?: string;
  keyring?: string;
  reboot?: boolean;
  json?: boolean;
  limitRate?: string;
  stallTimeout?: string;
  timeout?: string;
  /** Accept an image older than the base snapshot. */
  allowDowngrade?: boolean;
}

export async function run(ctx: Context, o: UpdateOptions): Promise<number> {
  const source = o.source ?? ctx.config.source;
  if (!source) throw new TiuError('USAGE', 'no update source: pass --source FILE|URL', { hint: 'or set [update] source in /etc/tiu/tiu.conf' });
  let file = source;
  let downloaded: { path: string; meta: Parameters<typeof writeMeta>[1] } | undefined;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(source)) {
    parseDownloadUrl(source); // names an unsupported scheme (ftp://, file://) as such
    const dl = ctx.config.download;
    const rateLimit = o.limitRate !== undefined ? parseRate(o.limitRate) : dl.limitRate || undefined;
    const stallSeconds = o.stallTimeout !== undefined ? parseSeconds(o.stallTimeout, '--stall-timeout') : dl.stallTimeout;
    const deadlineSeconds = o.timeout !== undefined ? parseSeconds(o.timeout, '--timeout') : dl.timeout;
    const progress = createProgress(ctx, !o.json);
    const cacheDir = o.root === '/' ? ctx.config.cacheDir : `${o.root.replace(/\/+$/, '')}${ctx.config.cacheDir}`;
    const r = await downloadChecked({
      url: source, cacheDir, log: ctx.log, sys: ctx.sys, rateLimit, stallSeconds, deadlineSeconds,
      retries: dl.retries, maxBytes: dl.maxSize, allowApplied: true,
      onProgress: (d, t) => progress.update('download', t ? d / t : 0),
    }).finally(() => progress.done());
    if (r.notModified && r.meta.applied) {
      if (o.json) ctx.out(JSON.stringify({ unchanged: true, source }, null, 2));
      else ctx.out(`${source} has not changed since it was applied: nothing to do`);
      return 0;
    }
    file = r.path!;
    downloaded = { path: r.path!, meta: r.meta };
  } else {
    let st;
    try {
      st = await stat(source);
    } catch {
      throw new TiuError('INPUT_NOT_FOUND', `update source ${source} does not exist`, { hint: 'give an archive file or an https URL' });
    }
    // A FIFO or device would hang or feed endless data into the verifier.
    if (!st.isFile()) throw new TiuError('INPUT_INVALID', `update source ${source} is not a regular file`, { hint: 'give an archive file or an https URL' });
  }
  const r = await runExtract(ctx, file, { root: o.root, keyring: o.keyring, json: o.json, allowDowngrade: o.allowDowngrade });
  if (downloaded && !r.planLines) await forgetDownload(ctx, downloaded.path, downloaded.meta);
  report(ctx, r, o.json);
  if (o.reboot && r.madeDefault) {
    ctx.log.info('rebooting to activate the update');
    await ctx.sys.run('systemctl', ['reboot']);
  }
  return 0;
}

/**
 * After a successful apply: the validators stay (so an unchanged source is not fetched again),
 * the archive goes unless `[download] keep = yes` — the cache does not grow with every update.
 */
async function forgetDownload(ctx: Context, path: string, meta: Parameters<typeof writeMeta>[1]): Promise<void> {
  await writeMeta(path, { ...meta, applied: true }).catch((e) => ctx.log.debug(`cannot write ${path}.meta: ${(e as Error).message}`));
  if (!ctx.config.download.keep) await unlink(path).catch((e) => ctx.log.warn(`cannot remove the applied download ${path}: ${(e as Error).message}`));
}
