/**
 * What a snapshot holds, as the apply step needs it: the image it was made from (recorded
 * manifest and index), a scan of what is really there, and content digests — taken from the
 * recorded index only when the snapshot provably has not changed since it was sealed.
 */
import { lutimes, readFile } from 'node:fs/promises';
import { hashPath } from '../fileindex/hash.ts';
import type { System } from '../system.ts';
import { parseManifest, type Manifest } from '../archive/manifest.ts';
import { loadIndex } from '../fileindex/io.ts';
import { scanTreeToArray } from '../fileindex/scan.ts';
import type { IndexEntry } from '../fileindex/types.ts';
import { subvolumeInfo } from '../../snapshot/btrfs.ts';
import { dirsTouchedByTiu, INDEX_PATH, MANIFEST_COPY_PATH, VENDOR_ETC_DIR } from './paths.ts';
import { under } from '../apply/execute.ts';

export interface RecordedImage {
  manifest: Manifest;
  indexPath: string;
}

/** The image a snapshot was made from, or undefined (not made by tiu, or state missing). */
export async function readRecordedImage(snapshotDir: string): Promise<RecordedImage | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(`${snapshotDir}/${MANIFEST_COPY_PATH}`);
  } catch {
    return undefined;
  }
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
  const worker = async () => {
    while (next < todo.length) {
      const a = todo[next++]!;
      a.sha256 = await hashPath(under(dir, a.path));
    }
  };
  await Promise.all(Array.from({ length: Math.min(4, todo.length) }, worker));
  return todo.length;
}

/** Puts back the image's mtimes of the directories tiu wrote into after the apply step. */
export async function restoreDirTimes(dir: string, target: readonly IndexEntry[]): Promise<void> {
  const touched = new Set(dirsTouchedByTiu());
  const dirs = target.filter((e) => e.type === 'dir' && touched.has(e.path)).sort((a, b) => b.path.length - a.path.length);
  for (const d of dirs) await lutimes(under(dir, d.path), d.mtime, d.mtime);
}
