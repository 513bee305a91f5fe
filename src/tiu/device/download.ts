/**
 * Downloading an archive or metadata over HTTP(S): the interface the rest of tiu uses.
 *
 * The transport is Debian's curl run as a child (see src/tiu/download/curl.ts for why: Node's
 * built-in fetch kills the process when a server closes a connection under backpressure); the
 * bounds, retries, resume and conditional requests are in src/tiu/download/fetch.ts. The result
 * is authenticated later by the archive's signature (or the repository's metadata), never by
 * the transport. See docs/download.md.
 */
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TiuError } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import { createSystem, type System } from '../../core/system.ts';
import { runAttempt } from '../download/attempt.ts';
import { backoffSeconds, classifyCurlExit, retryAfterSeconds, retryableStatus } from '../download/curl.ts';
import { DOWNLOAD_DEFAULTS, fetchToCache, parseDownloadUrl, type FetchResult, type FetchToCacheOptions } from '../download/fetch.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export { cacheName, readMeta, writeMeta, type CacheMeta, type FetchResult } from '../download/fetch.ts';

/** What {@link download} takes: the fetch options (./download/fetch.ts documents each), with a logger and an optional System. */
export type DownloadOptions = Omit<FetchToCacheOptions, 'sys' | 'allowApplied'> & {
  log: Logger;
  /** The System to run curl and flock through (default: a new one logging to `log`). */
  sys?: System;
};

function toFetchOptions(o: DownloadOptions): FetchToCacheOptions {
  return { ...o, sys: o.sys ?? createSystem(o.log) };
}

/** Downloads `url` into cacheDir and returns the complete file's path. */
export async function download(o: DownloadOptions): Promise<string> {
  const r = await fetchToCache(toFetchOptions(o));
  return r.path!;
}

/**
 * Like {@link download}, but says whether the server reported the file unchanged (304), and
 * with `allowApplied` revalidates a file that was applied and removed (then `path` is undefined).
 */
export function downloadChecked(o: DownloadOptions & { allowApplied?: boolean }): Promise<FetchResult> {
  return fetchToCache(toFetchOptions(o));
}

export interface FetchBytesOptions {
  /** Refuse more than this many bytes (required: metadata is untrusted). */
  maxBytes: number;
  log?: Logger;
  sys?: System;
  signal?: AbortSignal;
  stallSeconds?: number;
  deadlineSeconds?: number;
  retries?: number;
}

/**
 * Fetches a small document (repository metadata) into memory: http(s) through curl with the
 * same bounds and retries as archives, or a local `file://` path (a regular file, no symlink
 * as last component). More than `maxBytes` is DOWNLOAD_TOO_LARGE; HTTP 404 is INPUT_NOT_FOUND
 * (callers like a TUF client treat a missing next version as "no update").
 */
export async function fetchBytes(url: string, o: FetchBytesOptions): Promise<Buffer> {
  const u = parseDownloadUrl(url, true);
  if (u.protocol === 'file:') return readLocalBounded(fileURLToPath(u), o.maxBytes, url);
  const sys = o.sys ?? createSystem(o.log);
  const deadline = Date.now() + (o.deadlineSeconds ?? 300) * 1000;
  const retries = o.retries ?? DOWNLOAD_DEFAULTS.retries;
  let last = '';
  for (let attempt = 1; attempt <= retries + 1; attempt++) {
    const left = (deadline - Date.now()) / 1000;
    if (left <= 0) break;
    const chunks: Buffer[] = [];
    const out = await runAttempt(sys, { url, stallSeconds: o.stallSeconds ?? DOWNLOAD_DEFAULTS.stallSeconds, maxSeconds: left, maxFilesize: o.maxBytes }, {
      maxBytes: o.maxBytes,
      signal: o.signal,
      sink: {
        async begin() {
          chunks.length = 0;
        },
        async write(c) {
          chunks.push(Buffer.from(c));
        },
        async close() {},
      },
    });
    if (out.stderr === 'curl-missing') throw new TiuError('TOOL_MISSING', "required tool 'curl' is not installed", { hint: 'install it (Debian/Ubuntu: apt-get install curl)' });
    if (out.aborted) throw new TiuError('INTERRUPTED', `fetching ${url} interrupted`);
    if (out.tooLarge || (out.exitCode !== 0 && classifyCurlExit(out.exitCode, out.stderr).kind === 'too-large')) {
      throw new TiuError('DOWNLOAD_TOO_LARGE', `${url} is larger than the ${o.maxBytes} bytes accepted`, { hint: 'check the update source' });
    }
    const h = out.head;
    if (h && h.status === 200 && out.exitCode === 0) return Buffer.concat(chunks);
    let wait = backoffSeconds(attempt);
    if (h && h.status !== 200) {
      if (h.status === 404 || h.status === 410) throw new TiuError('INPUT_NOT_FOUND', `${url}: HTTP ${h.status} ${h.reason}`.trim(), { hint: 'check the URL' });
      if (!retryableStatus(h.status)) throw new TiuError('DOWNLOAD_FAILED', `cannot fetch ${url}: HTTP ${h.status} ${h.reason}`.trim(), { hint: 'try again later' });
      last = `HTTP ${h.status}`;
      wait = retryAfterSeconds(h.headers.get('retry-after')) ?? wait;
    } else if (out.exitCode !== 0) {
      const f = classifyCurlExit(out.exitCode, out.stderr);
      last = f.what;
      if (f.kind === 'stalled') throw new TiuError('DOWNLOAD_STALLED', `fetching ${url} stalled: ${f.what}`, { hint: 'check the network or the server' });
      if (f.kind === 'fatal') throw new TiuError('DOWNLOAD_FAILED', `cannot fetch ${url}: ${f.what}`, { hint: 'check the URL and the network' });
    }
    if (attempt <= retries) await sleep(Math.min(wait, Math.max(0, (deadline - Date.now()) / 1000)) * 1000, undefined, { signal: o.signal }).catch(() => {});
  }
  throw new TiuError('DOWNLOAD_FAILED', `cannot fetch ${url}: ${last || 'deadline reached'}`, { hint: 'check the network; try again later' });
}

/** Reads a local file: regular, not a symlink, at most `max` bytes (read is bounded too). */
async function readLocalBounded(path: string, max: number, what: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new TiuError('INPUT_NOT_FOUND', `${what}: no such file`, { hint: 'check the URL' });
    if (code === 'ELOOP') throw new TiuError('INPUT_INVALID', `${what} is a symbolic link`, { hint: 'point at the file itself' });
    throw new TiuError('DOWNLOAD_FAILED', `cannot read ${what}: ${(e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TiuError('INPUT_INVALID', `${what} is not a regular file`, { hint: 'point at a file' });
    if (st.size > max) throw new TiuError('DOWNLOAD_TOO_LARGE', `${what} is ${st.size} bytes, more than the ${max} accepted`, { hint: 'check the update source' });
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > max) throw new TiuError('DOWNLOAD_TOO_LARGE', `${what} grew beyond the ${max} bytes accepted`, { hint: 'check the update source' });
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}
