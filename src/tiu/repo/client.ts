/**
 * The device side of a repository: refresh the TUF metadata with tuf-js (rollback, freeze,
 * mix-and-match, endless-data and fast-forward checks are tuf-js's TUF client workflow), then
 * hand tiu's own parts the verified target list. tuf-js's errors become tiu error codes here.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Metadata, MetadataKind, type Targets } from '@tufjs/models';
import { Updater } from 'tuf-js';
import { TiuError, type ErrorCode } from '../../core/errors.ts';
import type { Logger } from '../../core/log.ts';
import type { System } from '../../core/system.ts';
import { tryLockFile, type FlockHold } from '../../snapshot/lock.ts';
import { writeAtomic, writeAtomicSync } from './files.ts';
import { RepoFetcher } from './fetcher.ts';
import { parseImage, type RepoImage } from './model.ts';

/** Metadata size limits (bytes): far above what tiu writes, far below what hurts a device. */
export const LIMITS = { rootMaxLength: 64 * 1024, timestampMaxLength: 16 * 1024, snapshotMaxLength: 64 * 1024, targetsMaxLength: 8 * 1024 * 1024 };

export interface RefreshOptions {
  /** Repository base URL: https://…, http://… or file:///… (metadata/ and targets/ below it). */
  url: string;
  /** The trusted root shipped with the system (first root the device trusts). */
  trustedRootFile: string;
  /** Directory for the device's metadata cache (persisted trusted metadata). */
  cacheDir: string;
  log: Logger;
  timeoutMs?: number;
  /** The device type whose delegated targets role to load (the only one the device reads). */
  compatible: string;
  /**
   * For the cache lock (on `<cacheDir>/.lock`, src/snapshot/lock.ts tryLockFile): two refreshes of one cache at once would
   * interleave tuf-js's writes. Pure tests without tools pass none (no lock).
   */
  sys?: System;
  /** How long to wait for another refresh of the same cache (default 30 s), then BUSY. */
  lockWaitMs?: number;
}

export interface Refreshed {
  url: string;
  images: RepoImage[];
  rootVersion: number;
  timestampVersion: number;
  targetsVersion: number;
  /** Base URL of the target files. */
  targetsBase: string;
}

/** Cache directory of one repository URL. */
export function repoCacheDir(stateDir: string, url: string): string {
  return join(stateDir, 'repository', createHash('sha256').update(url).digest('hex').slice(0, 16));
}

/** Maps an error out of tuf-js's refresh to a tiu error with its own code. */
export function classify(err: unknown, url: string): TiuError {
  if (err instanceof TiuError) return err;
  const e = err as Error & { statusCode?: number };
  const msg = `${e?.constructor?.name ?? ''} ${e?.message ?? String(err)}`;
  const mk = (code: ErrorCode, what: string, hint: string) => new TiuError(code, `repository ${url}: ${what}`, { hint, cause: err, details: { tuf: e?.message } });
  if (/Max length reached|DownloadLengthMismatch/.test(msg)) return mk('REPO_TOO_LARGE', `metadata larger than allowed (${e.message})`, 'the server sends endless data: check the mirror');
  if (/expired/i.test(msg)) return mk('REPO_EXPIRED', `metadata has expired (${e.message})`, 'the repository is frozen or stale: the publisher must run tiu repo refresh; check the clock');
  if (/was signed by \d+\/\d+ keys|UnsignedMetadata/.test(msg)) return mk('REPO_SIGNATURE', `metadata is not signed by the trusted keys (${e.message})`, 'the repository is forged or its keys changed without a root rotation');
  if (/less than current version|Expected version \d+, got/.test(msg)) return mk('REPO_ROLLBACK', `metadata is older than what this device already trusts (${e.message})`, 'a mirror replays old metadata: try again later or another mirror');
  if (/does not match snapshot version|doesn't match timestamp|Expected hash|Expected length|Missing .* in (new )?snapshot/.test(msg)) return mk('REPO_MISMATCH', `metadata files do not belong together (${e.message})`, 'the mirror serves a mix of versions: try again later');
  if (/Unexpected token|JSON|expected '|is not an? |must be/.test(msg)) return mk('REPO_METADATA', `malformed metadata (${e.message})`, 'the repository is broken or not a TUF repository');
  if (e?.statusCode !== undefined) return mk('REPO_UNAVAILABLE', `HTTP ${e.statusCode}`, 'check the repository URL ([update] repository)');
  return mk('REPO_UNAVAILABLE', `cannot read it: ${(e as { cause?: Error }).cause?.message ?? e?.message ?? String(err)}`, 'check the network and the repository URL');
}

async function readBounded(path: string, max: number, what: string): Promise<Buffer> {
  let b: Buffer;
  try {
    b = await readFile(path);
  } catch {
    throw new TiuError('REPO_INVALID', `${what} ${path} is missing`, { hint: 'ship the repository\'s root.json in the image (see docs/repository.md)' });
  }
  if (b.length > max) throw new TiuError('REPO_TOO_LARGE', `${what} ${path} is ${b.length} bytes, more than ${max}`);
  return b;
}

function rootVersion(b: Buffer, what: string): number {
  try {
    return Metadata.fromJSON(MetadataKind.Root, JSON.parse(b.toString('utf8'))).signed.version;
  } catch (e) {
    throw new TiuError('REPO_METADATA', `${what} is not a TUF root: ${(e as Error).message}`);
  }
}

/**
 * Refreshes the metadata cache from the repository and returns the verified targets. The cache
 * starts from the shipped trusted root; when the system ships a newer root than the cache holds
 * (an image update carried a rotation), the shipped one replaces it.
 */
export async function refreshRepository(o: RefreshOptions): Promise<Refreshed> {
  await mkdir(o.cacheDir, { recursive: true, mode: 0o755 });
  const hold = o.sys ? await lockCache(o.sys, o.cacheDir, o.url, o.lockWaitMs ?? 30_000) : undefined;
  try {
    return await refreshLocked(o);
  } finally {
    await hold?.release();
  }
}

/**
 * Takes the cache's flock, waiting up to `waitMs` for another tiu refreshing the same
 * repository (a `tiu check` beside a timer's `tiu update`), then BUSY. Only a regular file is
 * used as the lock (the flock(1) fallback follows symlinks).
 */
async function lockCache(sys: System, cacheDir: string, url: string, waitMs: number): Promise<FlockHold> {
  const file = join(cacheDir, '.lock');
  const st = await lstat(file).catch(() => undefined);
  if (st && !st.isFile()) throw new TiuError('PATH_UNSAFE', `lock file ${file} is not a regular file; tiu does not use it`, { hint: `remove ${file}, then retry` });
  const deadline = Date.now() + waitMs;
  for (;;) {
    const got = await tryLockFile(sys, file, 'the repository cache lock');
    if (got) return got;
    if (Date.now() >= deadline) throw new TiuError('BUSY', `another tiu is refreshing the metadata of ${url}`, { hint: 'wait for it to finish, then retry', details: { lockFile: file } });
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * tuf-js persists each verified metadata file with a plain writeFileSync: a crash mid-write
 * leaves a damaged file in the cache. Its (internal, synchronous) persistMetadata is replaced
 * on the instance by an atomic write; test/repo-build.test.ts pins that the hook still exists.
 */
function persistAtomically(updater: Updater, dir: string): void {
  const u = updater as unknown as { persistMetadata?: (name: string, bytes: Buffer) => void };
  if (typeof u.persistMetadata !== 'function') throw new TiuError('INTERNAL', 'tuf-js has no persistMetadata hook any more: cache writes cannot be made atomic');
  u.persistMetadata = (name, bytes) => {
    try {
      writeAtomicSync(join(dir, `${encodeURIComponent(name)}.json`), bytes);
    } catch (e) {
      throw new TiuError('IO', `cannot write the repository metadata cache ${dir}: ${(e as Error).message}`, { cause: e });
    }
  };
}

async function refreshLocked(o: RefreshOptions): Promise<Refreshed> {
  const shipped = await readBounded(o.trustedRootFile, LIMITS.rootMaxLength, 'trusted root');
  const shippedVersion = rootVersion(shipped, o.trustedRootFile);
  const cachedPath = join(o.cacheDir, 'root.json');
  const cached = await readFile(cachedPath).catch(() => undefined);
  if (!cached || rootVersion(cached, cachedPath) < shippedVersion) await writeAtomic(cachedPath, shipped);
  const base = o.url.replace(/\/+$/, '');
  let updater: Updater;
  try {
    updater = new Updater({
      metadataDir: o.cacheDir,
      metadataBaseUrl: `${base}/metadata`,
      fetcher: new RepoFetcher(o.timeoutMs),
      config: { ...LIMITS, maxRootRotations: 64 },
    });
    persistAtomically(updater, o.cacheDir);
    await updater.refresh();
    // Loads (and verifies) the delegated role of this device type: a lookup of a path in it.
    await updater.getTargetInfo(`${o.compatible}/-/-`);
  } catch (e) {
    throw classify(e, o.url);
  }
  // The verified metadata lives in tuf-js's trusted set; it has no public getter for the whole
  // targets role (only per-path lookups), so read it from there.
  const trusted = (updater as unknown as { trustedSet: { root: Metadata<any>; timestamp?: Metadata<any>; targets?: Metadata<Targets>; trustedSet: Record<string, Metadata<Targets> | undefined> } }).trustedSet;
  if (!trusted?.targets) throw new TiuError('INTERNAL', 'tuf-js refreshed but holds no targets');
  // Only the delegated role's own files, and only paths inside its delegation.
  const role = o.compatible === 'root' || o.compatible === 'targets' || o.compatible === 'snapshot' || o.compatible === 'timestamp' ? undefined : trusted.trustedSet[o.compatible];
  const images = Object.values(role?.signed.targets ?? {}).filter((t) => t.path.startsWith(`${o.compatible}/`)).map((t) => parseImage(t.path, t.length, t.hashes, t.custom));
  o.log.debug(`repository ${o.url}: root ${trusted.root.signed.version}, targets ${trusted.targets.signed.version}, ${images.length} targets`);
  return { url: o.url, images, rootVersion: trusted.root.signed.version, timestampVersion: trusted.timestamp?.signed.version ?? 0, targetsVersion: role?.signed.version ?? 0, targetsBase: `${base}/targets` };
}

/** URL of a target file (consistent snapshots: the file name is prefixed with its sha256). */
export function targetUrl(targetsBase: string, img: RepoImage): string {
  const slash = img.path.lastIndexOf('/');
  const dir = img.path.slice(0, slash);
  const name = img.path.slice(slash + 1);
  return `${targetsBase}/${dir.split('/').map(encodeURIComponent).join('/')}/${img.sha256}.${encodeURIComponent(name)}`;
}
