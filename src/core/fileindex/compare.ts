/**
 * Comparing index entries: the one definition of "same content" and "which attributes differ"
 * for the apply planner, the index diff, the validator and the /etc merge. Pure.
 *
 * Content means the type plus the sha256 and size (files), the target (symlinks) or the device
 * numbers (chr/blk); attributes are mode (meaningless for symlinks), owner, mtime and xattrs.
 */
import type { IndexEntry } from './types.ts';

/** An attribute that can be changed in place (without a new inode). */
export type MetaField = 'mode' | 'owner' | 'mtime' | 'xattrs';

/** Same set of xattr names with the same values (absent and empty are the same). */
export function sameXattrs(a: IndexEntry['xattrs'], b: IndexEntry['xattrs']): boolean {
  const ka = Object.keys(a ?? {});
  if (ka.length !== Object.keys(b ?? {}).length) return false;
  return ka.every((k) => Object.hasOwn(b!, k) && a![k] === b![k]);
}

/** Same type and same content, attributes aside. */
export function sameContent(a: IndexEntry, b: IndexEntry): boolean {
  if (a.type !== b.type) return false;
  switch (a.type) {
    case 'file':
      return a.sha256 === b.sha256 && a.size === b.size;
    case 'symlink':
      return a.target === b.target;
    case 'chr':
    case 'blk':
      return a.rdev?.major === b.rdev?.major && a.rdev?.minor === b.rdev?.minor;
    default:
      return true;
  }
}

/**
 * The attributes that differ, in the order mode, owner, mtime, xattrs. mtime only with
 * `{ mtime: true }` (the /etc merge never compares it: rebuilt images differ in mtime only);
 * mode not when either side is a symlink.
 */
export function metaDiff(a: IndexEntry, b: IndexEntry, o: { mtime?: boolean } = {}): MetaField[] {
  const out: MetaField[] = [];
  if (a.type !== 'symlink' && b.type !== 'symlink' && a.mode !== b.mode) out.push('mode');
  if (a.uid !== b.uid || a.gid !== b.gid) out.push('owner');
  if (o.mtime && a.mtime !== b.mtime) out.push('mtime');
  if (!sameXattrs(a.xattrs, b.xattrs)) out.push('xattrs');
  return out;
}
