/** `tiu update`: from a repository (TUF metadata) or a plain source (file or URL): fetch, verify, extract; reboot on request. */
import { stat, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { downloadChecked, writeMeta } from '../device/download.ts';
import { createProgress } from '../progress.ts';
import { runExtract, report } from './extract.ts';
import { parseSize } from '../../core/size.ts';
import { parseSource } from '../source.ts';
import { appliedImageGone, indexDigestOf, sameAsInstalled, UNCHANGED_EXIT } from './update-unchanged.ts';

/** Parses a rate like 500k, 2M, 1000 (bytes per second). */
export function parseRate(text: string): number {
  return parseSize(text, '--limit-rate');
}

/** Parses a whole number of seconds (> 0) given for option `name`. */
export function parseSeconds(text: string, name: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) <= 0) throw new TiuError('USAGE', `${name} must be a whole number of seconds, got '${text}'`);
  return Number(text);
}

export interface UpdateOptions {
  root: string;
  source?: string;
  repository?: string;
  channel?: string;
  allowDowngrade?: boolean;
  keyring?: string;
  reboot?: boolean;
  json?: boolean;
  limitRate?: string;
  stallTimeout?: string;
  timeout?: string;
  reinstall?: boolean;
  unchangedExit77?: boolean;
}

export async function run(ctx: Context, o: UpdateOptions): Promise<number> {
  await followDaemon(ctx, o.root, !o.json);
  if (o.source && o.repository) throw new TiuError('USAGE', '--source and --repository exclude each other');
  // A repository (flag or tiu.conf) wins over a configured plain source; --source wins over both.
  if (o.repository || (!o.source && ctx.config.repository)) {
    // The TUF client (tuf-js, @tufjs/models) is loaded only for a repository update.
    const { updateFromRepository } = await import('../repo/update.ts');
    return updateFromRepository(ctx, { ...o, rateLimit: o.limitRate === undefined ? undefined : parseRate(o.limitRate) });
  }
  const source = o.source ?? ctx.config.source;
  if (!source) throw new TiuError('USAGE', 'no update source: pass --source FILE|URL or --repository URL', { hint: 'or set [update] repository (or source) in /etc/tiu/tiu.conf' });
  // Check the whole command line before doing anything (a bad rate is an error for a file too).
  const limitRate = o.limitRate === undefined ? undefined : parseRate(o.limitRate);
  const src = parseSource(source); // names an unsupported scheme (ftp://, file://) as such
  let file = source;
  let downloaded: { path: string; meta: Parameters<typeof writeMeta>[1] } | undefined;
  if (src.kind === 'url') {
    const dl = ctx.config.download;
    const rateLimit = limitRate ?? (dl.limitRate || undefined);
    const stallSeconds = o.stallTimeout !== undefined ? parseSeconds(o.stallTimeout, '--stall-timeout') : dl.stallTimeout;
    const deadlineSeconds = o.timeout !== undefined ? parseSeconds(o.timeout, '--timeout') : dl.timeout;
    const progress = await createProgress(ctx, !o.json);
    const cacheDir = o.root === '/' ? ctx.config.cacheDir : `${o.root.replace(/\/+$/, '')}${ctx.config.cacheDir}`;
    const fetch = (allowApplied: boolean) => downloadChecked({
      url: source, cacheDir, log: ctx.log, sys: ctx.sys, rateLimit, stallSeconds, deadlineSeconds,
      retries: dl.retries, maxBytes: dl.maxSize, allowApplied,
      onProgress: (d, t) => progress.update('download', t ? d / t : 0),
    });
    let r = await fetch(!o.reinstall).finally(() => progress.done());
    if (r.notModified && r.meta.applied) {
      // Unchanged on the server and applied before; but is that image still the default one?
      const gone = await appliedImageGone(ctx, o.root, r.meta.appliedIndexSha256);
      if (gone === undefined) {
        if (o.json) ctx.out(JSON.stringify({ status: 'unchanged', root: o.root, source }, null, 2));
        else ctx.out(`already up to date: ${source} has not changed since it was applied (use --reinstall to apply it anyway)`);
        return o.unchangedExit77 ? UNCHANGED_EXIT : 0;
      }
      // The archive itself is gone unless `[download] keep = yes` kept it.
      ctx.log.info(`${source} has not changed since it was applied, but ${gone}: ${r.path ? 'applying it again' : 'downloading it again'}`);
      if (!r.path) r = await fetch(false).finally(() => progress.done());
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
  if (!o.reinstall) {
    const same = await sameAsInstalled(ctx, file, o);
    if (same !== undefined) {
      if (downloaded) await forgetDownload(ctx, downloaded.path, downloaded.meta, o.keyring);
      return same;
    }
  }
  let r;
  try {
    r = await runExtract(ctx, file, { root: o.root, keyring: o.keyring, json: o.json, allowDowngrade: o.allowDowngrade });
  } catch (e) {
    // A download that fails verification must not stay in the cache: with its validators, the
    // next run would get 304 and try the same bad bytes forever. Drop both; refetch next time.
    if (downloaded && e instanceof TiuError && ['security', 'input'].includes(e.kind) && e.code.startsWith('ARCHIVE_')) {
      await unlink(downloaded.path).catch(() => {});
      await unlink(`${downloaded.path}.meta`).catch(() => {});
    }
    throw e;
  }
  if (downloaded && !r.planLines) await forgetDownload(ctx, downloaded.path, downloaded.meta, o.keyring);
  report(ctx, o.json ? { status: 'updated', ...r } : r, o.json);
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
async function forgetDownload(ctx: Context, path: string, meta: Parameters<typeof writeMeta>[1], keyring: string | undefined): Promise<void> {
  // Which image was applied: a later 304 counts as "up to date" only while the default holds it.
  const appliedIndexSha256 = await indexDigestOf(ctx, path, keyring).catch(() => undefined);
  await writeMeta(path, { ...meta, applied: true, appliedIndexSha256 }).catch((e) => ctx.log.debug(`cannot write ${path}.meta: ${(e as Error).message}`));
  if (!ctx.config.download.keep) await unlink(path).catch((e) => ctx.log.warn(`cannot remove the applied download ${path}: ${(e as Error).message}`));
}

/**
 * While `tiu daemon` downloads or applies an update for this root, show its progress and wait
 * (instead of competing with it for the download and the transaction lock); then carry on: an
 * image the daemon just applied is "already up to date" here.
 */
async function followDaemon(ctx: Context, root: string, showProgress: boolean): Promise<void> {
  const { connectDaemon } = await import('../daemon/client.ts');
  const d = await connectDaemon((l) => ctx.log.debug(l));
  if (!d) return;
  try {
    const busy = (s: string) => s === 'downloading' || s === 'applying';
    let v = await d.read();
    ctx.log.debug(`tiu daemon: ${v.state} for ${v.root || '?'}`);
    if (!busy(v.state) || resolve(v.root) !== resolve(root)) return;
    ctx.log.info(`the tiu daemon is ${v.state === 'applying' ? 'applying an update' : `downloading ${v.source}`}: showing its progress until it is done`);
    const progress = await createProgress(ctx, showProgress);
    while (busy(v.state)) {
      progress.update(`${v.state === 'applying' ? 'applying' : 'download'} (tiu daemon)`, v.total ? v.downloaded / v.total : 0);
      await sleep(250);
      v = await d.read();
    }
    progress.done();
    ctx.log.info(`the tiu daemon is done: ${v.state}${v.error ? ` (${v.error})` : ''}${v.snapshot ? `, snapshot ${v.snapshot}` : ''}`);
  } finally {
    d.close();
  }
}
