/**
 * The build side of the per-file index: say how mksquashfs must be called so that the image
 * holds exactly what the index lists (the directories tiu itself creates in the image,
 * usr/lib/tiu/image, and the index, fed through mksquashfs's stdin), then scan the tree and
 * write the index file. The two run side by side: mksquashfs starts before the scan.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { comparePaths, INDEX_PATH, type IndexEntry } from '../../core/fileindex/types.ts';
import { scanTree } from '../../core/fileindex/scan.ts';
import { normalizeExcludes } from '../../core/fileindex/walk.ts';
import { writeIndex } from '../../core/fileindex/io.ts';
import type { PseudoDefinition } from '../../squashfs/pseudo.ts';
import { TIU_STATE_DIR, VENDOR_ETC_DIR } from '../device/paths.ts';

export interface ImageIndex {
  sha256: string;
  size: number;
  entries: number;
  files: number;
  bytes: number;
  /** Host path of the written index (inside the work dir). */
  file: string;
}

/** What mksquashfs needs before the scan: the excludes, and pseudo definitions for tiu's own entries. */
export interface ImageIndexPlan {
  /** The paths left out (as given), for the scan as for mksquashfs. */
  exclude: string[];
  /** Directories leading to the index that the tree lacks, as index entries (tree-ordered). */
  synthetic: IndexEntry[];
  squashfsExcludes: string[];
  /** The directories above, and the index itself, whose content mksquashfs reads from its stdin. */
  pseudo: PseudoDefinition[];
  /** Per excluded path: how many direct children were left out. */
  excludedCounts: Record<string, number>;
}

/** Merges a small sorted list of synthetic entries into a tree-ordered stream. */
async function* mergeSorted(stream: AsyncIterable<IndexEntry>, extra: IndexEntry[]): AsyncGenerator<IndexEntry> {
  let i = 0;
  for await (const e of stream) {
    while (i < extra.length && comparePaths(extra[i]!.path, e.path) < 0) yield extra[i++]!;
    yield e;
  }
  while (i < extra.length) yield extra[i++]!;
}

async function kind(path: string): Promise<'dir' | 'other' | 'none'> {
  try {
    return (await lstat(path)).isDirectory() ? 'dir' : 'other';
  } catch {
    return 'none';
  }
}

/**
 * Checks the tree for what tiu itself writes and says how mksquashfs must be called so that the
 * image holds exactly what the index will list. Cheap (a few lstat calls): mksquashfs can start
 * right after it, while {@link writeImageIndex} scans the tree.
 */
export async function planImageIndex(root: string, o: { exclude: string[]; mkfsTime: number }): Promise<ImageIndexPlan> {
  // A malformed exclude is refused before mksquashfs starts, not by the scan while it runs.
  normalizeExcludes(o.exclude);
  // tiu's device state must not come from the tree: the device writes it.
  for (const p of [TIU_STATE_DIR, VENDOR_ETC_DIR]) {
    if ((await kind(join(root, p))) !== 'none') {
      throw new TiuError('TREE_INVALID', `the tree contains /${p}, which tiu writes on the device itself`, { hint: `remove /${p} from the tree before tiu create` });
    }
  }
  // Directories leading to the index that the tree lacks are created in the image (pseudo dirs).
  const synthetic: IndexEntry[] = [];
  const pseudo: PseudoDefinition[] = [];
  const parts = TIU_STATE_DIR.split('/');
  for (let i = 1; i <= parts.length; i++) {
    const p = parts.slice(0, i).join('/');
    const k = await kind(join(root, p));
    if (k === 'other') throw new TiuError('TREE_INVALID', `/${p} in the tree is not a directory`, { hint: 'tiu stores its index below /usr/lib/tiu; fix the tree' });
    if (k === 'none') {
      synthetic.push({ path: p, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: o.mkfsTime });
      pseudo.push({ type: 'dir', path: p, mode: 0o755, uid: 0, gid: 0, mtime: o.mkfsTime });
    }
  }
  // The index enters the image from mksquashfs's stdin, with the mode, owner and mtime the
  // device expects; mksquashfs reads it only when it reaches the file (in usr/lib).
  pseudo.push({ type: 'stdin', path: INDEX_PATH, mode: 0o644, uid: 0, gid: 0, mtime: o.mkfsTime });

  const excludedCounts: Record<string, number> = {};
  for (const e of o.exclude) {
    try {
      excludedCounts[e] = (await readdir(join(root, e))).length;
    } catch {
      excludedCounts[e] = 0;
    }
  }
  return { exclude: o.exclude, synthetic, squashfsExcludes: o.exclude.flatMap((e) => squashfsExcludePatterns(e)), pseudo, excludedCounts };
}

/** Scans the tree and writes the index file into `workDir` (`index.jsonl`). */
export async function writeImageIndex(sys: System, root: string, plan: ImageIndexPlan, workDir: string): Promise<ImageIndex> {
  let files = 0;
  let bytes = 0;
  const counted = async function* (s: AsyncIterable<IndexEntry>) {
    for await (const e of s) {
      if (e.type === 'file' && e.hardlink === undefined) {
        files++;
        bytes += e.size ?? 0;
      }
      yield e;
    }
  };
  const file = join(workDir, 'index.jsonl');
  const written = await writeIndex(file, counted(mergeSorted(scanTree(sys, root, { exclude: plan.exclude }), plan.synthetic)));
  return { sha256: written.sha256, size: written.bytes, entries: written.entries, files, bytes, file };
}

/**
 * mksquashfs wildcard patterns that leave out everything below `dir`. mksquashfs matches with
 * fnmatch(FNM_PERIOD), so `dir/*` alone keeps dot files (`/root/.ssh`!): `dir/.*` catches them.
 * Glob characters in the path itself are escaped so they match literally.
 */
export function squashfsExcludePatterns(dir: string): string[] {
  const literal = dir.replace(/^\/+|\/+$/g, '').replace(/[\\*?[\]+@!()]/g, '\\$&');
  return [`${literal}/*`, `${literal}/.*`];
}
