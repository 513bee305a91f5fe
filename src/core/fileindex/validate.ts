/**
 * Checks that a sequence of entries forms a valid index: the root first, then strict tree order
 * (so no duplicates), every parent listed before its children and a directory, at most
 * {@link MAX_ENTRIES} entries, and every hardlink naming an earlier regular file that is the first
 * member of its group and has the same attributes. Pure; memory grows with the number of regular
 * files (to resolve hardlinks) plus the directory depth.
 */
import { TiuError } from '../errors.ts';
import { comparePaths, displayPath, type IndexEntry } from './types.ts';
import { MAX_ENTRIES, entryProblem } from './format.ts';
import { sameXattrs } from './compare.ts';

export interface IndexValidator {
  /**
   * Checks the next entry (and the entry alone, unless `entryChecked`: parseIndexLine has done
   * that); throws ARCHIVE_INDEX naming `lineNo` if given.
   */
  push(e: IndexEntry, lineNo?: number, entryChecked?: boolean): void;
  /** Checks that the index is complete (has at least its root). */
  end(): void;
  readonly count: number;
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

function show(p: string): string {
  const d = JSON.stringify(displayPath(p));
  return d.length > 120 ? `${d.slice(0, 117)}..."` : d;
}

/** Whether a hardlink follower carries exactly its group leader's attributes (one inode). */
export function sameInodeAttributes(a: IndexEntry, b: IndexEntry): boolean {
  return a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtime === b.mtime && a.size === b.size &&
    a.sha256 === b.sha256 && (a.sparse ?? false) === (b.sparse ?? false) && sameXattrs(a.xattrs, b.xattrs);
}

export function createIndexValidator(options: { maxEntries?: number } = {}): IndexValidator {
  const maxEntries = options.maxEntries ?? MAX_ENTRIES;
  let count = 0;
  let prev: string | undefined;
  /** Directories that are ancestors of (or equal to) the previous entry, root first. */
  const dirs: string[] = [];
  /** Regular files that may lead a hardlink group. */
  const leaders = new Map<string, IndexEntry>();

  function fail(lineNo: number | undefined, msg: string): never {
    throw new TiuError('ARCHIVE_INDEX', `${lineNo === undefined ? `index entry ${count}` : `index line ${lineNo}`}: ${msg}`, {
      hint: 'the image index is corrupt or was not made by a compatible tiu; rebuild the image or use a trusted one',
    });
  }

  return {
    get count() {
      return count;
    },
    push(e, lineNo, entryChecked = false) {
      count++;
      if (count > maxEntries) fail(lineNo, `more than ${maxEntries} entries`);
      const problem = entryChecked ? undefined : entryProblem(e);
      if (problem) fail(lineNo, `${show(e.path)}: ${problem}`);
      if (prev === undefined) {
        if (e.path !== '.') fail(lineNo, `the first entry must be the root '.', not ${show(e.path)}`);
      } else {
        const order = comparePaths(prev, e.path);
        if (order === 0) fail(lineNo, `duplicate path ${show(e.path)}`);
        if (order > 0) fail(lineNo, `${show(e.path)} is out of tree order (after ${show(prev)})`);
        const parent = parentOf(e.path);
        while (dirs.length > 0 && dirs[dirs.length - 1] !== parent) dirs.pop();
        if (dirs.length === 0) fail(lineNo, `the parent of ${show(e.path)} is not listed before it as a directory`);
      }
      if (e.hardlink !== undefined) {
        const leader = leaders.get(e.hardlink);
        if (!leader) fail(lineNo, `${show(e.path)}: hardlink to ${show(e.hardlink)}, which is not an earlier regular file that leads a group`);
        if (!sameInodeAttributes(leader, e)) fail(lineNo, `${show(e.path)}: attributes differ from its hardlink ${show(e.hardlink)}`);
      } else if (e.type === 'file') {
        leaders.set(e.path, e);
      }
      if (e.type === 'dir') dirs.push(e.path);
      prev = e.path;
    },
    end() {
      if (count === 0) fail(undefined, 'the index has no entries (not even the root)');
    },
  };
}
