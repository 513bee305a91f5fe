/**
 * Downloading into the cache, bounded and retried (docs/download.md):
 *   - size cap: `maxBytes` (or `expectedSize`), checked against the announced length and against
 *     every byte received; an oversized download is deleted;
 *   - free space on the cache's file system checked before starting and again once the length
 *     is known;
 *   - stall timeout and overall deadline;
 *   - the `.part` of one URL locked (./lock.ts): two runs never write one file;
 *   - transient failures (reset, timeout, 5xx, 429 with Retry-After) retried with backoff,
 *     resuming with Range (and If-Range), restarting cleanly when the server answers 200;
 *   - conditional requests (If-None-Match / If-Modified-Since) from the validators saved in
 *     `<file>.meta` beside the download: an unchanged source is not transferred again.
 *
 * The small file operations (stat, the `.meta` file, mkdir, rename, unlink, statfs) are
 * synchronous: each is one syscall on the local cache directory, where an asynchronous one
 * pays a thread-pool round trip — and the first in a process waits ~10 ms for the pool to
 * start. Together they were a quarter of the time of a 50 MB download from a LAN (#18).
 */
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, renameSync, statSync, statfsSync, unlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { runFileAttempt } from './attempt.ts';
import { backoffSeconds, classifyCurlExit, contentRangeTotal, retryAfterSeconds, retryableStatus, type CurlRequest, type ResponseHead, stallBytesPerSecond } from './curl.ts';
import { lockDownload } from './lock.ts';

/** Defaults of the [download] settings (src/tiu/config.ts). */
export const DOWNLOAD_DEFAULTS = { stallSeconds: 60, deadlineSeconds: 6 * 3600, retries: 4, maxBytes: 64 * 1024 ** 3 };

export interface FetchToCacheOptions {
  sys: System;
  url: string;
  cacheDir: string;
  rateLimit?: number;
  maxBytes?: number;
  /** The exact length the file must have (e.g. a TUF target's length). Also the size cap. */
  expectedSize?: number;
  /** Lower-case hex sha256 the complete file must have; otherwise it is deleted (DOWNLOAD_MISMATCH). */
  expectedSha256?: string;
  stallSeconds?: number;
  deadlineSeconds?: number;
  /** Extra attempts after the first for transient failures. */
  retries?: number;
  /** Base of the exponential backoff between attempts, in ms (default 1000; tests use less). */
  retryDelayMs?: number;
  /** Ask the server whether a cached copy changed (default true). */
  conditional?: boolean;
  /**
   * Also ask when the archive itself was removed after being applied: a 304 then means "the
   * update was applied already" (result without `path`).
   */
  allowApplied?: boolean;
  onProgress?: (done: number, total: number | undefined) => void;
  signal?: AbortSignal;
}

/** What is known about a cached download, saved as JSON in `<file>.meta`. */
export interface CacheMeta {
  url: string;
  etag?: string;
  lastModified?: string;
  length?: number;
  /** The file (not only its `.part`) was completed. */
  complete: boolean;
  /** An update from this file was applied (the file itself may be deleted since). */
  applied?: boolean;
  /** The applied image's signed index digest (manifest.index.sha256): a 304 means "up to date" only while the default snapshot holds it. */
  appliedIndexSha256?: string;
}

export interface FetchResult {
  /** The complete file, or undefined when the server said 304 for an applied, removed file. */
  path: string | undefined;
  notModified: boolean;
  /** Body bytes transferred by this call. */
  transferred: number;
  meta: CacheMeta;
}

/** Local file name for a URL: readable, unique per URL. */
export function cacheName(url: string): string {
  const base = new URL(url).pathname.split('/').pop() || 'archive';
  const safe = base.replace(/[^A-Za-z0-9._+-]/g, '_').slice(0, 100) || 'archive';
  return `${createHash('sha256').update(url).digest('hex').slice(0, 12)}-${safe}`;
}

/** Parses a download URL: http(s) only, every other scheme named in a USAGE error. */
export function parseDownloadUrl(text: string, allowFile = false): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TiuError('USAGE', `'${text}' is not a URL or an existing file`, { hint: 'give a path to a .tiu file or an http(s) URL' });
  }
  const ok = ['http:', 'https:', ...(allowFile ? ['file:'] : [])];
  if (!ok.includes(url.protocol)) {
    throw new TiuError('USAGE', `unsupported URL scheme '${url.protocol.replace(/:$/, '')}' in ${text}: tiu downloads over ${allowFile ? 'http, https and file' : 'http and https'} only`, { hint: 'use an https:// URL or a local file' });
  }
  return url;
}

/** Reads `<file>.meta`; anything odd (missing, huge, not JSON, other URL) counts as absent. */
export async function readMeta(file: string, url: string): Promise<CacheMeta | undefined> {
  try {
    const st = statSync(`${file}.meta`);
    if (!st.isFile() || st.size > 64 * 1024) return undefined;
    const m = JSON.parse(readFileSync(`${file}.meta`, 'utf8')) as CacheMeta;
    return m && m.url === url && typeof m.complete === 'boolean' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `<file>.meta` (through a temporary file and a rename: never half a file). */
export async function writeMeta(file: string, meta: CacheMeta): Promise<void> {
  writeFileSync(`${file}.meta.tmp`, `${JSON.stringify(meta)}\n`, { mode: 0o600 });
  renameSync(`${file}.meta.tmp`, `${file}.meta`);
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const st = statSync(path);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

async function removeQuietly(...paths: string[]): Promise<void> {
  for (const p of paths) {
    try {
      unlinkSync(p);
    } catch {}
  }
}

/** Throws DOWNLOAD_NO_SPACE if the cache's file system has less than `need` bytes free. */
export async function checkFreeSpace(dir: string, need: number, url: string): Promise<void> {
  if (need <= 0) return;
  const fs = statfsSync(dir);
  const free = Number(fs.bavail) * Number(fs.bsize);
  if (free < need) {
    throw new TiuError('DOWNLOAD_NO_SPACE', `not enough space in ${dir} for ${url}: ${need} bytes needed, ${free} free`, { hint: 'free space (tiu cleanup, or remove files in the cache) or set [update] cache_dir' });
  }
}

async function sha256Of(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return h.digest('hex');
}

function wrapWriteError(e: unknown, url: string, part: string): TiuError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new TiuError('DOWNLOAD_NO_SPACE', `no space left while downloading ${url}`, { cause: e, hint: 'free space (tiu cleanup) or set [update] cache_dir; the partial file was deleted' });
  if (e instanceof TiuError) return e;
  return new TiuError('DOWNLOAD_FAILED', `cannot write ${part}: ${(e as Error).message}`, { cause: e });
}

/**
 * Downloads `url` into `cacheDir` (file name from {@link cacheName}), or finds it unchanged.
 * Side effects: creates cacheDir, `<name>.part`, `<name>.meta`, `<name>.lock`; renames the
 * `.part` to `<name>` when complete. Partial data of an interrupted transfer is kept for the
 * next run to resume; an oversized, mismatching or refused (HTTP 4xx) download is deleted.
 */
export async function fetchToCache(o: FetchToCacheOptions): Promise<FetchResult> {
  parseDownloadUrl(o.url);
  const { sys } = o;
  try {
    mkdirSync(o.cacheDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw wrapWriteError(e, o.url, o.cacheDir);
  }
  const final = `${o.cacheDir}/${cacheName(o.url)}`;
  const part = `${final}.part`;
  await using _lock = await lockDownload(sys, `${final}.lock`, o.url);
  const max = Math.min(o.maxBytes ?? DOWNLOAD_DEFAULTS.maxBytes, o.expectedSize ?? Infinity);
  const stallSeconds = o.stallSeconds ?? DOWNLOAD_DEFAULTS.stallSeconds;
  const deadline = Date.now() + (o.deadlineSeconds ?? DOWNLOAD_DEFAULTS.deadlineSeconds) * 1000;
  const retries = o.retries ?? DOWNLOAD_DEFAULTS.retries;
  const backoff = (n: number) => (backoffSeconds(n) * (o.retryDelayMs ?? 1000)) / 1000;

  let meta = await readMeta(final, o.url);
  const finalSize = await sizeOf(final);
  const conditional = o.conditional !== false && meta?.complete && (meta.etag || meta.lastModified) &&
    (finalSize !== undefined ? meta.length === undefined || meta.length === finalSize : !!(o.allowApplied && meta.applied));
  if (!conditional && finalSize !== undefined) await removeQuietly(final);
  if (!conditional && meta?.complete) meta = undefined;

  let transferred = 0;
  let restarted = false;
  let last = '';
  for (let attempt = 1; ; attempt++) {
    if (o.signal?.aborted) throw o.signal.reason instanceof TiuError ? o.signal.reason : new TiuError('INTERRUPTED', `download of ${o.url} interrupted`);
    const left = (deadline - Date.now()) / 1000;
    if (left <= 0) throw new TiuError('DOWNLOAD_TIMEOUT', `download of ${o.url} did not finish within the ${o.deadlineSeconds ?? DOWNLOAD_DEFAULTS.deadlineSeconds} s allowed${last ? ` (last: ${last})` : ''}`, { hint: 'rerun to resume it, or raise [download] timeout' });
    let have = conditional ? 0 : (await sizeOf(part)) ?? 0;
    if (have > max) {
      await removeQuietly(part);
      have = 0;
    }
    const known = o.expectedSize ?? (meta && !meta.complete ? meta.length : undefined);
    if (known !== undefined && !conditional) await checkFreeSpace(o.cacheDir, known - have, o.url);
    const req: CurlRequest = {
      url: o.url,
      from: have || undefined,
      ifRange: have && meta && !meta.complete ? meta.etag ?? meta.lastModified : undefined,
      ifNoneMatch: conditional ? meta!.etag : undefined,
      ifModifiedSince: conditional && !meta!.etag ? meta!.lastModified : undefined,
      rateLimit: o.rateLimit,
      stallSeconds,
      maxSeconds: left,
      maxFilesize: Number.isFinite(max) && !have ? max : undefined,
    };
    const out = await runFileAttempt(sys, { ...req, toFile: { file: part, headers: `${final}.headers`, piped: !!o.rateLimit } }, {
      maxBytes: max,
      signal: o.signal,
      // Once the length is known: refuse what cannot fit, before much of it is written.
      onHead: async (head) => {
        const total = totalOf(head, have);
        if (total !== undefined && total <= max) await checkFreeSpace(o.cacheDir, total - (head.status === 206 ? have : 0), o.url);
        // While curl goes on: the new body's validators, so that a run killed meanwhile resumes
        // with If-Range (a download over in less than one poll never gets here: written once below).
        if (head.status === 200) await writeMeta(final, { url: o.url, etag: head.headers.get('etag'), lastModified: head.headers.get('last-modified'), length: total, complete: false }).catch(() => {});
      },
      onBytes: (size, head) => o.onProgress?.(size, head ? totalOf(head, have) : undefined),
    });
    await removeQuietly(`${final}.headers`);
    transferred += out.received;
    if (out.headError) {
      await removeQuietly(part);
      throw out.headError;
    }
    if (out.stderr === 'curl-missing') throw new TiuError('TOOL_MISSING', "required tool 'curl' is not installed", { hint: 'install it (Debian/Ubuntu: apt-get install curl; openSUSE: zypper install curl)' });
    if (out.aborted) throw o.signal?.reason instanceof TiuError ? o.signal.reason : new TiuError('INTERRUPTED', `download of ${o.url} interrupted; rerun to resume it`);
    const head = out.head;
    if (out.tooLarge || (out.exitCode !== 0 && classifyCurlExit(out.exitCode, out.stderr).kind === 'too-large')) {
      await removeQuietly(part, `${final}.meta`);
      throw new TiuError('DOWNLOAD_TOO_LARGE', `${o.url} is larger than the ${max} bytes accepted; the partial download was deleted`, { hint: 'check the update source' });
    }
    if (out.exitCode === 33 || (head?.status === 200 && have > 0)) {
      // Resume refused (the server ignores Range, or If-Range saw a changed file): start over.
      await removeQuietly(part);
      last = 'the server does not resume';
      if (!restarted) sys.log.info(`${o.url}: the server sent the whole file instead of the rest; restarting from the beginning`);
      restarted = true;
      if (attempt > retries + 1) break;
      continue;
    }
    if (out.exitCode === 23) {
      await removeQuietly(part);
      let fs;
      try {
        fs = statfsSync(o.cacheDir);
      } catch {}
      if (fs && Number(fs.bavail) * Number(fs.bsize) < 1024 * 1024) throw wrapWriteError(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }), o.url, part);
      throw new TiuError('DOWNLOAD_FAILED', `cannot write ${part}: ${classifyCurlExit(23, out.stderr).what}`, { hint: 'check the cache directory ([update] cache_dir)' });
    }
    if (head?.status === 304 && conditional) {
      await removeQuietly(part);
      sys.log.info(`${o.url} has not changed since it was downloaded`);
      return { path: finalSize !== undefined ? final : undefined, notModified: true, transferred, meta: meta! };
    }
    if (head && (head.status === 200 || head.status === 206)) {
      const total = totalOf(head, out.offset);
      if (head.status === 206 && contentRangeTotal(head)?.start !== have) {
        // A range we did not ask for: the data cannot be trusted to line up; start over.
        await removeQuietly(part);
        last = `unexpected Content-Range ${head.headers.get('content-range') ?? '(none)'}`;
        if (attempt > retries) break;
        continue;
      }
      // The validators of a new body; written below only if this attempt did not complete it
      // (a later one resumes with If-Range), else once with the complete mark: one write less.
      if (head.status === 200) meta = { url: o.url, etag: head.headers.get('etag'), lastModified: head.headers.get('last-modified'), length: total, complete: false };
      if (total !== undefined && total > max) {
        await removeQuietly(part, `${final}.meta`);
        throw new TiuError('DOWNLOAD_TOO_LARGE', `${o.url} is ${total} bytes, more than the ${max} accepted; the partial download was deleted`, { hint: 'check the update source' });
      }
      if (out.exitCode === 0) {
        const size = (await sizeOf(part)) ?? 0;
        if (total !== undefined && size !== total) {
          last = `ended at ${size} of ${total} bytes`;
        } else {
          await finish(o, part, final, size);
          meta = { ...(meta ?? { url: o.url }), url: o.url, length: size, complete: true, applied: false };
          await writeMeta(final, meta).catch((e) => sys.log.debug(`cannot write ${final}.meta: ${(e as Error).message}`));
          return { path: final, notModified: false, transferred, meta };
        }
      }
      if (head.status === 200) await writeMeta(final, meta!).catch(() => {});
    }
    if (head && head.status === 416 && have > 0) {
      await removeQuietly(part);
      last = 'HTTP 416 for the resumed range';
      if (attempt > retries) break;
      continue;
    }
    let wait = 0;
    if (head && head.status !== 200 && head.status !== 206) {
      if (!retryableStatus(head.status)) {
        if (head.status >= 400 && head.status < 500) await removeQuietly(part);
        throw new TiuError('DOWNLOAD_FAILED', `cannot download ${o.url}: HTTP ${head.status} ${head.reason}`.trim(), { hint: head.status === 404 ? 'check the URL' : 'try again later' });
      }
      last = `HTTP ${head.status} ${head.reason}`.trim();
      wait = retryAfterSeconds(head.headers.get('retry-after')) ?? backoff(attempt);
    } else if (out.exitCode !== 0) {
      const f = classifyCurlExit(out.exitCode, out.stderr);
      last = f.what;
      if (f.kind === 'stalled' && out.received < 1024 * 1024) {
        throw new TiuError('DOWNLOAD_STALLED', `download of ${o.url} stalled: less than ${stallBytesPerSecond(o.rateLimit)} bytes/s for ${stallSeconds} s`, { hint: 'check the network or the server; rerun to resume it' });
      }
      if (f.kind === 'deadline' && Date.now() >= deadline - 1500) continue; // the loop's deadline check reports it
      if (f.kind === 'fatal') throw new TiuError('DOWNLOAD_FAILED', `cannot download ${o.url}: ${f.what}`, { hint: 'check the URL and the network' });
      wait = backoff(attempt);
    } else if (!head) {
      last = 'no HTTP response';
      wait = backoff(attempt);
    }
    if (attempt > retries) break;
    wait = Math.min(wait, Math.max(0, (deadline - Date.now()) / 1000));
    sys.log.info(`download of ${o.url} failed (${last}); retrying${wait ? ` in ${wait} s` : ''} (attempt ${attempt + 1} of ${retries + 1})`);
    if (wait > 0) await sleep(wait * 1000, undefined, { signal: o.signal }).catch(() => {});
  }
  throw new TiuError('DOWNLOAD_FAILED', `download of ${o.url} interrupted at ${(await sizeOf(part)) ?? 0} bytes: ${last}`, { hint: 'rerun to resume it' });
}

/** The complete file's length from a 200/206 response, if announced. */
function totalOf(head: ResponseHead, offset: number): number | undefined {
  const cr = contentRangeTotal(head);
  if (head.status === 206 && cr?.total !== undefined) return cr.total;
  const len = Number(head.headers.get('content-length') ?? NaN);
  return Number.isFinite(len) ? (head.status === 206 ? offset + len : len) : undefined;
}

async function finish(o: FetchToCacheOptions, part: string, final: string, size: number): Promise<void> {
  if (o.expectedSize !== undefined && size !== o.expectedSize) {
    await removeQuietly(part, `${final}.meta`);
    throw new TiuError('DOWNLOAD_MISMATCH', `${o.url} is ${size} bytes, not the ${o.expectedSize} expected; the download was deleted`, { hint: 'the server has a different file than the update metadata names' });
  }
  if (o.expectedSha256 !== undefined) {
    const got = await sha256Of(part);
    if (got !== o.expectedSha256.toLowerCase()) {
      await removeQuietly(part, `${final}.meta`);
      throw new TiuError('DOWNLOAD_MISMATCH', `${o.url} has sha256 ${got}, not the ${o.expectedSha256} expected; the download was deleted`, { hint: 'the server has a different file than the update metadata names' });
    }
  }
  renameSync(part, final);
}
