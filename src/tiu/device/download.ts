/**
 * Downloading an archive over HTTP(S) with Node's built-in fetch: resumable (HTTP Range on a
 * `.part` file), optionally throttled, with progress. The result is authenticated later by the
 * archive's signature, never by the transport.
 */
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { TiuError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface DownloadOptions {
  url: string;
  cacheDir: string;
  /** Bytes per second, or undefined for no limit. */
  rateLimit?: number;
  onProgress?: (done: number, total: number | undefined) => void;
  signal?: AbortSignal;
  log: Logger;
  /** Maximum archive size accepted (endless-data defence). */
  maxBytes?: number;
}

/** Local file name for a URL: readable, unique per URL. */
export function cacheName(url: string): string {
  const base = new URL(url).pathname.split('/').pop() || 'archive';
  const safe = base.replace(/[^A-Za-z0-9._+-]/g, '_').slice(0, 100) || 'archive';
  return `${createHash('sha256').update(url).digest('hex').slice(0, 12)}-${safe}`;
}

/** Downloads `url` into cacheDir and returns the complete file's path. */
export async function download(o: DownloadOptions): Promise<string> {
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new TiuError('USAGE', `'${o.url}' is not a URL or an existing file`, { hint: 'give a path to a .tiu file or an http(s) URL' });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TiuError('USAGE', `unsupported URL scheme ${url.protocol}`, { hint: 'use https://' });
  await mkdir(o.cacheDir, { recursive: true, mode: 0o700 });
  const final = `${o.cacheDir}/${cacheName(o.url)}`;
  const part = `${final}.part`;
  const max = o.maxBytes ?? 64 * 1024 ** 3;
  let have = 0;
  try {
    have = (await stat(part)).size;
  } catch {}
  const headers: Record<string, string> = { 'user-agent': 'tiu' };
  if (have > 0) headers.range = `bytes=${have}-`;
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: o.signal, redirect: 'follow' });
  } catch (e) {
    throw new TiuError('DOWNLOAD_FAILED', `cannot download ${o.url}: ${(e as Error).cause ? String((e as Error & { cause: Error }).cause.message) : (e as Error).message}`, { hint: 'check the network and the URL; rerunning resumes the download' });
  }
  if (res.status === 416 && have > 0) {
    // Already complete (or the server's file changed): start over once.
    await unlink(part);
    return download(o);
  }
  if (res.status !== 200 && res.status !== 206) {
    throw new TiuError('DOWNLOAD_FAILED', `cannot download ${o.url}: HTTP ${res.status} ${res.statusText}`, { hint: res.status === 404 ? 'check the URL' : 'try again later' });
  }
  const resumed = res.status === 206;
  if (!resumed) have = 0;
  const length = Number(res.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? have + length : undefined;
  if (total !== undefined && total > max) throw new TiuError('DOWNLOAD_FAILED', `${o.url} is ${total} bytes, more than the ${max} accepted`, { hint: 'check the update source' });
  if (resumed) o.log.info(`resuming download at ${have} bytes`);
  const fh = await open(part, resumed ? 'a' : 'w', 0o600);
  let done = have;
  const started = Date.now();
  let sinceStart = 0;
  try {
    if (!res.body) throw new TiuError('DOWNLOAD_FAILED', `no data from ${o.url}`);
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      await fh.write(chunk);
      done += chunk.length;
      sinceStart += chunk.length;
      if (done > max) throw new TiuError('DOWNLOAD_FAILED', `${o.url} sent more than the ${max} bytes accepted`, { hint: 'check the update source' });
      o.onProgress?.(done, total);
      if (o.rateLimit) {
        const ahead = (sinceStart / o.rateLimit) * 1000 - (Date.now() - started);
        if (ahead > 0) await sleep(ahead, undefined, { signal: o.signal });
      }
    }
    await fh.sync();
  } catch (e) {
    if (e instanceof TiuError) throw e;
    throw new TiuError('DOWNLOAD_FAILED', `download of ${o.url} interrupted at ${done} bytes: ${(e as Error).message}`, { hint: 'rerun to resume it' });
  } finally {
    await fh.close();
  }
  if (total !== undefined && done !== total) throw new TiuError('DOWNLOAD_FAILED', `download of ${o.url} ended at ${done} of ${total} bytes`, { hint: 'rerun to resume it' });
  await rename(part, final);
  return final;
}
