/**
 * The delta planner: which new contents a delta must carry and what each may be patched against.
 * Pure: takes the old and the new image's index, returns data.
 *
 * A new content whose digest the old image has anywhere is not sent: the device copies it from
 * its base snapshot (renames, moves, copies). An old /etc file is read from the base snapshot's
 * vendor copy of /etc ({@link sourceLocation}), since the live /etc carries local edits.
 * Everything else is sent, as a patch against an old file
 * (same path, or the same name with other version digits in the same directory) when both are at
 * most {@link PATCH_MAX_BYTES}, else as compressed content.
 */
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { VENDOR_ETC_DIR } from '../device/paths.ts';

/**
 * Largest old or new file a patch is made for. The device holds the old file in memory as the
 * zstd dictionary plus a window of about twice this while decoding: 16 MiB keeps the apply
 * under 100 MiB RSS with Node itself. Larger files are sent as compressed content.
 */
export const PATCH_MAX_BYTES = 16 * 1024 * 1024;

/** Largest file bsdiff is tried on when making a delta (it needs about 9x the file in memory). */
export const BSDIFF_MAX_BYTES = 8 * 1024 * 1024;

export interface NeededContent {
  sha256: string;
  size: number;
  /** Position in the new index of the first file holding it (how the delta names it). */
  entry: number;
  /** A path of the new image holding it (to read it when making the delta). */
  path: string;
  /** An old file to patch against. */
  base?: { sha256: string; size: number; path: string; entry: number };
}

export interface DeltaPlan {
  /** In new-index order, each digest once. */
  needed: NeededContent[];
  /** New contents (distinct digests) the device takes from its base snapshot. */
  reused: number;
  reusedBytes: number;
}

function isEtc(p: string): boolean {
  return p === 'etc' || p.startsWith('etc/');
}

/** Where the device reads an old image path from, inside its base snapshot. */
export function sourceLocation(p: string): string {
  return isEtc(p) ? VENDOR_ETC_DIR + p.slice(3) : p;
}

/** A file's name with digit runs folded, to pair `libfoo.so.3.1` with `libfoo.so.3.2`. */
function versionless(p: string): string {
  return p.replace(/[0-9]+/g, '#');
}

function regularFiles(index: readonly IndexEntry[]): IndexEntry[] {
  return index.filter((e) => e.type === 'file' && e.hardlink === undefined && e.sha256 !== undefined);
}

/** Old content digest -> the first old path (tree order) that holds it, outside /etc if any. */
export function oldSources(oldIndex: readonly IndexEntry[]): Map<string, IndexEntry> {
  const m = new Map<string, IndexEntry>();
  const files = regularFiles(oldIndex);
  for (const e of files) if (!isEtc(e.path) && !m.has(e.sha256!)) m.set(e.sha256!, e);
  for (const e of files) if (isEtc(e.path) && !m.has(e.sha256!)) m.set(e.sha256!, e);
  return m;
}

export function planDelta(oldIndex: readonly IndexEntry[], newIndex: readonly IndexEntry[], patchMax = PATCH_MAX_BYTES): DeltaPlan {
  const sources = oldSources(oldIndex);
  const oldByPath = new Map<string, number>();
  const oldByShape = new Map<string, number>();
  oldIndex.forEach((e, i) => {
    if (e.type !== 'file' || e.hardlink !== undefined || e.sha256 === undefined) return;
    oldByPath.set(e.path, i);
    const k = versionless(e.path);
    if (!oldByShape.has(k)) oldByShape.set(k, i);
  });
  const needed = new Map<string, NeededContent>();
  const reused = new Set<string>();
  let reusedBytes = 0;
  for (const [entry, e] of newIndex.entries()) {
    if (e.type !== 'file' || e.hardlink !== undefined || e.sha256 === undefined) continue;
    const d = e.sha256;
    if (sources.has(d)) {
      if (!reused.has(d)) {
        reused.add(d);
        reusedBytes += e.size ?? 0;
      }
      continue;
    }
    if (needed.has(d)) continue;
    const size = e.size ?? 0;
    const n: NeededContent = { sha256: d, size, entry, path: e.path };
    const bi = oldByPath.get(e.path) ?? oldByShape.get(versionless(e.path));
    const b = bi === undefined ? undefined : oldIndex[bi]!;
    if (b && size <= patchMax && (b.size ?? 0) <= patchMax && (b.size ?? 0) > 0 && size > 0) n.base = { sha256: b.sha256!, size: b.size ?? 0, path: b.path, entry: bi! };
    needed.set(d, n);
  }
  return { needed: [...needed.values()], reused: reused.size, reusedBytes };
}
