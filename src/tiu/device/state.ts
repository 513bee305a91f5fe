/**
 * What a snapshot holds, as the apply step needs it: the image it was made from (recorded
 * manifest and index), a scan of what is really there, and content digests — taken from the
 * recorded index only when the snapshot provably has not changed since it was sealed.
 */
import { lstat, lutimes } from 'node:fs/promises';
import { SafeRoot } from '../../core/safepath.ts';
import { TiuError } from '../../core/errors.ts';
import { hashPath } from '../../core/fileindex/hash.ts';
import type { System } from '../../core/system.ts';
import { parseManifest, MAX_MANIFEST_SIZE, type Manifest } from '../archive/manifest.ts';
import { loadIndex } from '../../core/fileindex/io.ts';
import { scanTreeToArray, mtimeSeconds } from '../../core/fileindex/scan.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { subvolumeInfo } from '../../snapshot/btrfs.ts';
import { dirsTouchedByTiu, INDEX_PATH, MANIFEST_COPY_PATH, VENDOR_ETC_DIR } from './paths.ts';

export interface RecordedImage {
  manifest: Manifest;
  indexPath: string;
}

/** The image a snapshot was made from, or undefined (not made by tiu, or state missing). */
export async function readRecordedImage(snapshotDir: string): Promise<RecordedImage | undefined> {
  // Resolved beneath the snapshot and bounded: a symlinked state directory, a FIFO or a huge
  // file is reported (PATH_UNSAFE / FILE_INVALID), never followed or waited on.
  await using root = await SafeRoot.open(snapshotDir, { what: 'the base snapshot' });
  let bytes: Buffer;
  try {
    bytes = await root.readBounded(MANIFEST_COPY_PATH, MAX_MANIFEST_SIZE);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const st = await root.at(INDEX_PATH, (p) => lstat(p)).catch(() => undefined);
  if (st && !st.isFile()) throw new TiuError('FILE_INVALID', `/${INDEX_PATH} in the base snapshot is not a regular file`, { hint: 'the snapshot\'s tiu state is damaged; update from another base (--base)' });
  return { manifest: parseManifest(bytes), indexPath: `${snapshotDir}/${INDEX_PATH}` };
}

/** Reads an image's index completely, checking its digest against the signed manifest. */
export async function readImageIndex(path: string, sha256: string): Promise<IndexEntry[]> {
  // The digest pins the signed bytes: no need to re-serialize every line to prove it canonical.
  return loadIndex(path, { sha256, canonical: false });
}

/**
 * Whether the recorded index of a base snapshot describes its content: the snapshot must be
 * read-only and its btrfs generation unchanged since tiu sealed it.
 */
export async function isBaseTrusted(sys: System, snapshotDir: string, recordedGeneration: string | undefined): Promise<boolean> {
  if (recordedGeneration === undefined) return false;
  const info = await subvolumeInfo(sys, snapshotDir);
  const ok = info.readonly && String(info.generation) === recordedGeneration;
  sys.log.debug(`base index ${ok ? 'trusted' : 'not trusted'}: readonly=${info.readonly} generation=${info.generation} recorded=${recordedGeneration}`);
  return ok;
}

/** Scans a snapshot as it is (no content hashing), tiu's vendor-etc copy left out. */
export async function scanActual(sys: System, dir: string, o: { exclude: readonly string[] }): Promise<Map<string, IndexEntry>> {
  const { entries } = await scanTreeToArray(sys, dir, { exclude: o.exclude, hash: false, skip: (p) => p === VENDOR_ETC_DIR });
  return new Map(entries.map((e) => [e.path, e]));
}

/**
 * Fills in `sha256` of the actual files the planner must compare: those whose size equals the
 * target's (a different size is a change anyway). From the trusted recorded index (the base
 * snapshot's) when that
 * has the same path with the same size and mtime, else by reading the file.
 * Returns how many files were hashed.
 */
export async function fillDigests(dir: string, actual: Map<string, IndexEntry>, target: readonly IndexEntry[], recordedIndex: readonly IndexEntry[] | undefined): Promise<number> {
  const old = new Map<string, IndexEntry>();
  for (const e of recordedIndex ?? []) if (e.type === 'file') old.set(e.path, e);
  const todo: IndexEntry[] = [];
  for (const t of target) {
    if (t.type !== 'file' || t.hardlink !== undefined) continue;
    const a = actual.get(t.path);
    if (!a || a.type !== 'file' || a.size !== t.size || a.hardlink !== undefined) continue;
    const o = old.get(t.path);
    if (o && o.size === a.size && o.mtime === a.mtime && o.sha256) a.sha256 = o.sha256;
    else todo.push(a);
  }
  let next = 0;
  await using root = await SafeRoot.open(dir, { what: 'the snapshot' });
  const worker = async () => {
    while (next < todo.length) {
      const a = todo[next++]!;
      a.sha256 = await root.at(a.path, (p) => hashPath(p));
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, todo.length) }, worker));
  return todo.length;
}

/**
 * The mtimes of the directories tiu writes into, as `dir` has them now (those that exist), in
 * the form {@link restoreDirTimes} takes.
 */
export async function dirTimesOf(dir: string): Promise<Pick<IndexEntry, 'path' | 'type' | 'mtime'>[]> {
  await using root = await SafeRoot.open(dir, { what: 'the new snapshot' });
  const out: Pick<IndexEntry, 'path' | 'type' | 'mtime'>[] = [];
  for (const path of dirsTouchedByTiu()) {
    const st = await root.at(path, (p) => lstat(p, { bigint: true })).catch(() => undefined);
    if (st?.isDirectory()) out.push({ path, type: 'dir', mtime: mtimeSeconds(st.mtimeNs) });
  }
  return out;
}

/** Puts back the image's mtimes of the directories tiu wrote into after the apply step. */
export async function restoreDirTimes(dir: string, target: readonly Pick<IndexEntry, 'path' | 'type' | 'mtime'>[]): Promise<void> {
  const touched = new Set(dirsTouchedByTiu());
  const dirs = target.filter((e) => e.type === 'dir' && touched.has(e.path)).sort((a, b) => b.path.length - a.path.length);
  await using root = await SafeRoot.open(dir, { what: 'the new snapshot' });
  for (const d of dirs) await root.at(d.path, (p) => lutimes(p, d.mtime, d.mtime));
}
