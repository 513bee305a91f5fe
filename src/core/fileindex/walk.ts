/**
 * Walks a directory tree in tree order ({@link comparePaths}) with byte-exact (Buffer) names,
 * yielding each path with its lstat (bigint) and, for symlinks, the raw target. Reads the file
 * system; memory holds the sorted children of each directory on the current path.
 */
import { stat } from 'node:fs/promises';
import { lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { TiuError } from '../errors.ts';
import { bytesToPath, displayPath } from './types.ts';
import { pathProblem, utf8Bytes } from './text.ts';

export interface WalkItem {
  /** Relative byte-string path, `.` for the root. */
  path: string;
  /** Absolute path as bytes, for fs calls. */
  abs: Buffer;
  st: BigIntStats;
  /** Symlinks: the target's bytes. */
  link?: Buffer;
}

export interface WalkOptions {
  /**
   * Paths like `/var` (relative to the root, leading `/` optional) whose contents are left out;
   * the path itself is still listed.
   */
  exclude?: readonly string[];
  /** Paths (relative byte strings) left out entirely, with everything below them. Never called for the root. */
  skip?: (path: string) => boolean;
  /** List mount points (and btrfs subvolumes: another st_dev) but do not descend into them, like `find -xdev`. */
  oneFileSystem?: boolean;
}

const SLASH = Buffer.from('/');

/** A TREE_INVALID error for a path that could not be read. */
export function cannotRead(path: string, err: unknown): TiuError {
  const e = err as { code?: string; message?: string };
  const why = e?.code === 'ENOENT' ? 'it vanished while scanning' : e?.code ?? e?.message ?? String(err);
  return new TiuError('TREE_INVALID', `cannot read ${JSON.stringify(displayPath(path))}: ${why}`, {
    cause: err,
    hint: 'check permissions (scan as root) and that nothing modifies the tree while it is scanned',
  });
}

/** Normalizes exclude paths (`/var/`, `var`) to relative byte strings; INPUT_INVALID if one is malformed. */
export function normalizeExcludes(exclude: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const raw of exclude) {
    const trimmed = raw.replace(/^\/+/, '').replace(/\/+$/, '');
    const p = trimmed === '' ? '.' : utf8Bytes(trimmed);
    const problem = pathProblem(p);
    if (problem) throw new TiuError('INPUT_INVALID', `invalid exclude path ${JSON.stringify(raw)}: ${problem}`, { hint: "give paths inside the tree like '/var'" });
    out.add(p);
  }
  return out;
}

interface Child {
  name: Buffer;
  item: WalkItem;
}

interface Frame {
  children: Child[];
  next: number;
}

/**
 * The sorted children of `dir` with their lstat. Synchronous calls: trees are scanned right after
 * they were written (a build) or are mostly cached dentries (a snapshot, /etc), and a promise and
 * thread-pool round trip per entry cost more than the lstat itself (Debian's 7,244 entries:
 * ~0.25 s of a 1.4 s scan). A cold tree on a slow disk is read one entry at a time.
 */
function readChildren(dir: WalkItem, skip: WalkOptions['skip']): Child[] {
  let names: Buffer[];
  try {
    names = readdirSync(dir.abs, { encoding: 'buffer' });
  } catch (err) {
    throw cannotRead(dir.path, err);
  }
  names.sort(Buffer.compare);
  const prefix = dir.path === '.' ? '' : `${dir.path}/`;
  const out: Child[] = [];
  for (const name of names) {
    const path = prefix + bytesToPath(name);
    if (skip?.(path)) continue;
    const abs = Buffer.concat([dir.abs, SLASH, name]);
    try {
      const st = lstatSync(abs, { bigint: true });
      const item: WalkItem = { path, abs, st };
      if (st.isSymbolicLink()) item.link = readlinkSync(abs, { encoding: 'buffer' });
      out.push({ name, item });
    } catch (err) {
      throw cannotRead(path, err);
    }
  }
  return out;
}

/** Yields the root and everything below it in tree order. Throws TREE_INVALID on unreadable paths. */
export async function* walkTree(root: string, options: WalkOptions = {}): AsyncGenerator<WalkItem, void, undefined> {
  const excluded = normalizeExcludes(options.exclude ?? []);
  const rootAbs = Buffer.from(root.length > 1 ? root.replace(/\/+$/, '') : root);
  let rootSt: BigIntStats;
  try {
    rootSt = await stat(rootAbs, { bigint: true });
  } catch (err) {
    throw cannotRead('.', err);
  }
  if (!rootSt.isDirectory()) throw new TiuError('TREE_INVALID', `${root} is not a directory`, { hint: 'give the root directory of the tree' });
  const rootItem: WalkItem = { path: '.', abs: rootAbs, st: rootSt };
  yield rootItem;
  const descend = (it: WalkItem) =>
    it.st.isDirectory() && !excluded.has(it.path) && !(options.oneFileSystem && it.st.dev !== rootSt.dev);
  if (!descend(rootItem)) return;
  const stack: Frame[] = [{ children: readChildren(rootItem, options.skip), next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.next >= top.children.length) {
      stack.pop();
      continue;
    }
    const child = top.children[top.next]!;
    // Let the finished child be collected: a directory's list can be long.
    top.children[top.next++] = undefined as unknown as Child;
    yield child.item;
    if (descend(child.item)) stack.push({ children: readChildren(child.item, options.skip), next: 0 });
  }
}
