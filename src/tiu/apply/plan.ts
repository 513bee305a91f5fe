/**
 * The apply planner: what to do to a snapshot so that it equals a new image, exactly.
 *
 * Pure: takes the new image's index (the target) and a scan of the snapshot as it really is
 * (the actual state; content digests filled in by the caller, from the old image's index where
 * that can be trusted, else by hashing), and returns a list of actions. Nothing here touches a disk.
 *
 * Identical files produce no action (their extents stay shared with the base snapshot);
 * metadata-only differences produce `meta` actions (no content rewritten); removed paths are
 * removed; a file whose content changed is rewritten in place where it differs; everything
 * else is written fresh from the image.
 */
import { comparePaths, type IndexEntry } from '../../core/fileindex/types.ts';
import { metaDiff as indexMetaDiff, sameContent, type MetaField } from '../../core/fileindex/compare.ts';

export type { MetaField };

export type Action =
  | { op: 'remove'; path: string; type: IndexEntry['type'] }
  | { op: 'mkdir'; entry: IndexEntry }
  /**
   * `inPlace`: the snapshot's file (same path, own inode) is rewritten where it differs, not
   * replaced. `xattrsKept`: that file has no xattrs and the new one has none, so a rewrite in
   * place leaves them right (writing adds none, and there is no file capability for it to clear).
   */
  | { op: 'write'; entry: IndexEntry; inPlace?: boolean; xattrsKept?: boolean }
  | { op: 'link'; entry: IndexEntry }
  | { op: 'symlink'; entry: IndexEntry }
  | { op: 'mknod'; entry: IndexEntry }
  | { op: 'meta'; entry: IndexEntry; fields: MetaField[] };

export interface ApplyPlan {
  /** Removals (top-most paths only; directories recursively), deepest first. */
  removals: Extract<Action, { op: 'remove' }>[];
  /** Creations and metadata changes, in tree order (a parent before its children). */
  changes: Exclude<Action, { op: 'remove' }>[];
  /** Directories whose mtime must be (re)set after all changes, deepest first. */
  dirTimes: IndexEntry[];
  stats: PlanStats;
}

export interface PlanStats {
  unchanged: number;
  written: number;
  writtenBytes: number;
  created: number;
  /** Paths the target no longer has (replaced paths are counted as written/created). */
  removed: number;
  metaOnly: number;
  linked: number;
}

export interface PlanOptions {
  /** True for paths whose contents an update never touches (/var/..., /home/..., mount points' contents). */
  isExcluded: (path: string) => boolean;
  /** True for paths tiu itself manages inside the snapshot (never removed by the plan). */
  isProtected: (path: string) => boolean;
}

/** Whether an entry has no xattrs (the actual state's entries list what the file has). Pure. */
function noXattrs(e: IndexEntry): boolean {
  if (!e.xattrs) return true;
  for (const _ in e.xattrs) return false;
  return true;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

function isUnder(p: string, dir: string): boolean {
  return dir === '.' || p.startsWith(dir + '/');
}

/** Which metadata fields differ between what is and what should be. */
export function metaDiff(actual: IndexEntry, target: IndexEntry): MetaField[] {
  return indexMetaDiff(actual, target, { mtime: true });
}

/** Whether the thing at a path can stay (same type and same content), metadata aside. */
function sameObject(actual: IndexEntry, target: IndexEntry): boolean {
  return (target.type !== 'file' || actual.sha256 !== undefined) && sameContent(actual, target);
}

function createOp(e: IndexEntry): Exclude<Action, { op: 'remove' | 'meta' }> {
  if (e.type === 'dir') return { op: 'mkdir', entry: e };
  if (e.type === 'symlink') return { op: 'symlink', entry: e };
  if (e.type === 'file') return e.hardlink !== undefined ? { op: 'link', entry: e } : { op: 'write', entry: e };
  return { op: 'mknod', entry: e };
}

/**
 * Plans the changes that make the snapshot (`actual`, a map from path to entry) equal `target`
 * (the new image's index in tree order). Paths under excluded directories are neither removed
 * nor created; protected paths are never removed.
 */
export function planApply(target: readonly IndexEntry[], actual: ReadonlyMap<string, IndexEntry>, options: PlanOptions): ApplyPlan {
  const stats: PlanStats = { unchanged: 0, written: 0, writtenBytes: 0, created: 0, removed: 0, metaOnly: 0, linked: 0 };
  const removals: ApplyPlan['removals'] = [];
  const changes: ApplyPlan['changes'] = [];
  /** Paths whose inode is replaced (rewritten or recreated): their hardlink followers must be relinked. */
  const replaced = new Set<string>();
  /** Directories whose set of children changes: their mtime must be restored at the end. */
  const touched = new Set<string>();
  /** Top-most removed directories: nothing below them needs its own removal. */
  const removedDirs: string[] = [];
  const removedPaths = new Set<string>();

  const remove = (a: IndexEntry) => {
    if (removedDirs.some((d) => isUnder(a.path, d)) || options.isProtected(a.path)) return;
    removals.push({ op: 'remove', path: a.path, type: a.type });
    removedPaths.add(a.path);
    if (a.type === 'dir') removedDirs.push(a.path);
    touched.add(parentOf(a.path));
  };

  const targetByPath = new Map<string, IndexEntry>();
  for (const t of target) targetByPath.set(t.path, t);

  // Removals first, in tree order so a removed directory covers its contents: paths that exist
  // but should not, and paths whose type changes.
  const actualSorted = [...actual.values()].sort((x, y) => comparePaths(x.path, y.path));
  for (const a of actualSorted) {
    if (a.path === '.' || options.isExcluded(a.path) || options.isProtected(a.path)) continue;
    const t = targetByPath.get(a.path);
    if (!t || t.type !== a.type) {
      if (!t && !removedDirs.some((d) => isUnder(a.path, d)) && !options.isProtected(a.path)) stats.removed++;
      remove(a);
    }
  }
  const gone = (p: string) => removedPaths.has(p) || removedDirs.some((d) => isUnder(p, d) || p === d);
  /** Files that other paths of the snapshot are hardlinked to: never rewritten in place. */
  const leaders = new Set<string>();
  for (const a of actual.values()) if (a.hardlink !== undefined) leaders.add(a.hardlink);

  for (const t of target) {
    if (t.path !== '.' && options.isExcluded(t.path)) continue;
    const found = actual.get(t.path);
    const a = found && !gone(t.path) ? found : undefined;
    if (t.type === 'dir') {
      if (a) {
        const fields = metaDiff(a, t);
        if (fields.length) changes.push({ op: 'meta', entry: t, fields });
      } else {
        changes.push({ op: 'mkdir', entry: t });
        replaced.add(t.path);
        touched.add(parentOf(t.path));
        stats.created++;
      }
      continue;
    }
    if (t.type === 'file' && t.hardlink !== undefined) {
      // A hardlink follower stays only if it is already linked to its first member and that
      // member keeps its inode.
      if (a && a.hardlink === t.hardlink && !replaced.has(t.hardlink)) {
        stats.unchanged++;
        continue;
      }
      if (a) remove(a);
      changes.push({ op: 'link', entry: t });
      replaced.add(t.path);
      touched.add(parentOf(t.path));
      stats.linked++;
      continue;
    }
    if (a && sameObject(a, t) && (t.type !== 'file' || a.hardlink === undefined)) {
      const fields = metaDiff(a, t);
      if (fields.length) {
        changes.push({ op: 'meta', entry: t, fields });
        stats.metaOnly++;
      } else stats.unchanged++;
      continue;
    }
    // A regular file with new content, on its own inode on both sides: rewritten in place, so
    // that its unchanged blocks stay shared with the base snapshot (disk growth = changed blocks,
    // as with rsync --inplace). Its directory keeps its entries (no mtime to restore).
    if (a && a.type === 'file' && t.type === 'file' && a.hardlink === undefined && !t.sparse && !leaders.has(a.path)) {
      changes.push({ op: 'write', entry: t, inPlace: true, ...(noXattrs(a) && noXattrs(t) ? { xattrsKept: true } : {}) });
      stats.written++;
      stats.writtenBytes += t.size ?? 0;
      continue;
    }
    // Same type, different content (or a file that was a hardlink follower and should not be).
    if (a) remove(a);
    changes.push(createOp(t));
    replaced.add(t.path);
    touched.add(parentOf(t.path));
    if (t.type === 'file') {
      stats.written++;
      stats.writtenBytes += t.size ?? 0;
    } else stats.created++;
  }

  // Directory mtimes: every directory that was created, got its mtime changed, or whose
  // children changed, gets its mtime set last (children first).
  const dirTimes: IndexEntry[] = [];
  for (const t of target) {
    if (t.type !== 'dir') continue;
    if (t.path !== '.' && options.isExcluded(t.path)) continue;
    const a = actual.get(t.path);
    if (touched.has(t.path) || !a || a.type !== 'dir' || a.mtime !== t.mtime || replaced.has(t.path)) dirTimes.push(t);
  }
  dirTimes.sort((x, y) => comparePaths(y.path, x.path));
  removals.sort((x, y) => comparePaths(y.path, x.path));
  return { removals, changes, dirTimes, stats };
}

/** A human-readable rendering of a plan for `--dry-run`. */
export function formatPlan(plan: ApplyPlan, display: (p: string) => string): string[] {
  const lines: string[] = [];
  for (const r of plan.removals) lines.push(`remove  /${display(r.path)}${r.type === 'dir' ? '/' : ''}`);
  for (const c of plan.changes) {
    const p = `/${display(c.entry.path)}`;
    if (c.op === 'meta') lines.push(`meta    ${p} (${c.fields.join(', ')})`);
    else if (c.op === 'link') lines.push(`link    ${p} -> /${display(c.entry.hardlink!)}`);
    else if (c.op === 'write' && c.inPlace) lines.push(`rewrite ${p}`);
    else lines.push(`${c.op.padEnd(7)} ${p}`);
  }
  const s = plan.stats;
  lines.push(`${s.written} files written (${s.writtenBytes} bytes), ${s.created} created, ${s.linked} linked, ${s.metaOnly} metadata-only, ${s.removed} removed, ${s.unchanged} unchanged`);
  return lines;
}
