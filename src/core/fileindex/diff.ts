/**
 * What changed between two indexes: a merge-join of two tree-ordered entry streams producing one
 * {@link IndexChange} per path, in tree order. Pure and streaming (holds one entry of each side).
 * See docs/index-format.md.
 */
import { TiuError } from '../errors.ts';
import { comparePaths, displayPath, type IndexEntry } from './types.ts';
import { sameXattrs } from './compare.ts';

/**
 * - `added` / `removed`: the path is only in the new / old index.
 * - `content`: the object must be created afresh: the type changed, or a file's size/sha256, a
 *   symlink's target or a device's numbers changed (none of these can be changed in place).
 * - `meta`: same object, only attributes differ (mode, uid, gid, mtime, xattrs).
 * - `same`: nothing differs (but see `relink`).
 */
export type ChangeKind = 'added' | 'removed' | 'content' | 'meta' | 'same';

/** Content reasons (type, size, sha256, target, rdev), attributes, and hardlink membership. */
export type ChangeField = 'type' | 'size' | 'sha256' | 'target' | 'rdev' | 'mode' | 'uid' | 'gid' | 'mtime' | 'xattrs' | 'hardlink';

export interface IndexChange {
  path: string;
  kind: ChangeKind;
  /** The old entry (absent for `added`). */
  old?: IndexEntry;
  /** The new entry (absent for `removed`). */
  new?: IndexEntry;
  /**
   * Every attribute that differs, content reasons first. For a type change only `type`.
   * Includes `hardlink` when the `hardlink` field differs. Empty for added/removed; for `same`
   * at most `hardlink` (the `sparse` hint is not compared).
   */
  fields: ChangeField[];
  /**
   * Only on `same`/`meta` regular files whose `hardlink` changed: the content stays but the
   * inode does not. If `new.hardlink` is set, replace the path with a hard link to
   * `new.hardlink`; if not, give the path an inode of its own with the new attributes (it left
   * a group, or became the first member of one). Always false for added/removed/content: those
   * are created anew, and a new file with `hardlink` is created as a link.
   */
  relink: boolean;
}

export interface DiffOptions {
  /** Emit `same` changes too (default true). */
  includeSame?: boolean;
}

/** The differing fields of two entries for the same path, content reasons first. Pure. */
export function changedFields(o: IndexEntry, n: IndexEntry): ChangeField[] {
  if (o.type !== n.type) return ['type'];
  const f: ChangeField[] = [];
  if (n.type === 'file') {
    if (o.size !== n.size) f.push('size');
    // A missing digest cannot prove equality.
    if (o.sha256 === undefined || n.sha256 === undefined || o.sha256 !== n.sha256) f.push('sha256');
  }
  if (n.type === 'symlink' && o.target !== n.target) f.push('target');
  if ((n.type === 'chr' || n.type === 'blk') && (o.rdev?.major !== n.rdev?.major || o.rdev?.minor !== n.rdev?.minor)) f.push('rdev');
  if (o.mode !== n.mode) f.push('mode');
  if (o.uid !== n.uid) f.push('uid');
  if (o.gid !== n.gid) f.push('gid');
  if (o.mtime !== n.mtime) f.push('mtime');
  if (!sameXattrs(o.xattrs, n.xattrs)) f.push('xattrs');
  if (o.hardlink !== n.hardlink) f.push('hardlink');
  return f;
}

const CONTENT = new Set<ChangeField>(['type', 'size', 'sha256', 'target', 'rdev']);
const META = new Set<ChangeField>(['mode', 'uid', 'gid', 'mtime', 'xattrs']);

function orderError(which: string, prev: string, p: string): TiuError {
  return new TiuError('INTERNAL', `diffIndexes: the ${which} entries are not in tree order (${JSON.stringify(displayPath(p))} after ${JSON.stringify(displayPath(prev))})`, {
    hint: 'this is a bug in tiu: indexes must be validated (readIndex) or scanned (scanTree) before they are compared',
  });
}

/** The classification state shared by the sync and async merge loops. */
function createDiffer() {
  let prevOld: string | undefined;
  let prevNew: string | undefined;
  return {
    checkOrder(which: 'old' | 'new', e: IndexEntry) {
      const prev = which === 'old' ? prevOld : prevNew;
      if (prev !== undefined && comparePaths(prev, e.path) >= 0) throw orderError(which, prev, e.path);
      if (which === 'old') prevOld = e.path;
      else prevNew = e.path;
    },
    classify(o: IndexEntry | undefined, n: IndexEntry | undefined): IndexChange {
      if (!n) return { path: o!.path, kind: 'removed', old: o, fields: [], relink: false };
      if (!o) return { path: n.path, kind: 'added', new: n, fields: [], relink: false };
      const fields = changedFields(o, n);
      const kind: ChangeKind = fields.some((f) => CONTENT.has(f)) ? 'content' : fields.some((f) => META.has(f)) ? 'meta' : 'same';
      // Membership is all that can change an unchanged file's inode: a follower carries its
      // leader's content, so when the leader is rewritten the follower is `content` too, and a
      // leader that leaves another group gives its followers a new `hardlink` value.
      const relink = kind !== 'content' && n.type === 'file' && o.hardlink !== n.hardlink;
      return { path: n.path, kind, old: o, new: n, fields, relink };
    },
  };
}

/**
 * Compares two indexes given as tree-ordered iterables (old image, new image) and yields one
 * change per path of either, in tree order. Throws INTERNAL if an input is out of order.
 */
export function* diffIndexes(oldEntries: Iterable<IndexEntry>, newEntries: Iterable<IndexEntry>, options: DiffOptions = {}): Generator<IndexChange, void, undefined> {
  const d = createDiffer();
  const oi = oldEntries[Symbol.iterator]();
  const ni = newEntries[Symbol.iterator]();
  const nextOld = () => { const r = oi.next(); if (!r.done) d.checkOrder('old', r.value); return r.done ? undefined : r.value; };
  const nextNew = () => { const r = ni.next(); if (!r.done) d.checkOrder('new', r.value); return r.done ? undefined : r.value; };
  try {
    let o = nextOld();
    let n = nextNew();
    while (o || n) {
      const c = !o ? 1 : !n ? -1 : comparePaths(o.path, n.path);
      const change = d.classify(c <= 0 ? o : undefined, c >= 0 ? n : undefined);
      if (c <= 0) o = nextOld();
      if (c >= 0) n = nextNew();
      if (change.kind !== 'same' || change.relink || options.includeSame !== false) yield change;
    }
  } finally {
    oi.return?.();
    ni.return?.();
  }
}

/** {@link diffIndexes} for streamed inputs (e.g. two readIndex generators). */
export async function* diffIndexStreams(
  oldEntries: AsyncIterable<IndexEntry> | Iterable<IndexEntry>,
  newEntries: AsyncIterable<IndexEntry> | Iterable<IndexEntry>,
  options: DiffOptions = {},
): AsyncGenerator<IndexChange, void, undefined> {
  const d = createDiffer();
  const iter = (x: AsyncIterable<IndexEntry> | Iterable<IndexEntry>) =>
    Symbol.asyncIterator in x ? x[Symbol.asyncIterator]() : (x as Iterable<IndexEntry>)[Symbol.iterator]();
  const oi = iter(oldEntries);
  const ni = iter(newEntries);
  const nextOld = async () => { const r = await oi.next(); if (!r.done) d.checkOrder('old', r.value); return r.done ? undefined : r.value; };
  const nextNew = async () => { const r = await ni.next(); if (!r.done) d.checkOrder('new', r.value); return r.done ? undefined : r.value; };
  try {
    let o = await nextOld();
    let n = await nextNew();
    while (o || n) {
      const c = !o ? 1 : !n ? -1 : comparePaths(o.path, n.path);
      const change = d.classify(c <= 0 ? o : undefined, c >= 0 ? n : undefined);
      if (c <= 0) o = await nextOld();
      if (c >= 0) n = await nextNew();
      if (change.kind !== 'same' || change.relink || options.includeSame !== false) yield change;
    }
  } finally {
    await oi.return?.();
    await ni.return?.();
  }
}

/** Counts per kind (and relinks), for logs and dry-run output. Pure. */
export function summarizeChanges(changes: Iterable<IndexChange>): Record<ChangeKind | 'relink', number> {
  const s = { added: 0, removed: 0, content: 0, meta: 0, same: 0, relink: 0 };
  for (const c of changes) {
    s[c.kind]++;
    if (c.relink) s.relink++;
  }
  return s;
}
