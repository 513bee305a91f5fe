/**
 * Scanning a tree into index entries, streamed in tree order.
 *
 * Pipeline: the walk (lstat, readlink) runs ahead of the consumer by a bounded window; regular
 * files are hashed several at a time (bounded); xattrs are read (binding, or getfattr) in batches of paths
 * that run while the hashing goes on. Entries come out in order once their hash and xattrs are in.
 * Reads the tree (and runs `xargs getfattr` where the xattr binding cannot be used); writes nothing.
 */
import type { BigIntStats } from 'node:fs';
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import { displayPath, type EntryType, type IndexEntry } from './types.ts';
import { walkTree, type WalkItem, type WalkOptions } from './walk.ts';
import { listXattrs, type Xattrs } from './xattrs.ts';
import { changed, hashFile, hashFileSync, limiter } from './hash.ts';

export interface ScanOptions extends WalkOptions {
  /** Called (at most every 100 ms, and once at the end) with entries emitted so far and bytes hashed. */
  onProgress?: (entries: number, bytes: number) => void;
  /** How many files are hashed at the same time (default 8: keeps the thread pool and the disk busy). */
  hashConcurrency?: number;
  /**
   * Which regular files to hash (default: all). A file not hashed gets no `sha256`, so the entry is
   * only good for in-memory comparison (writeIndex rejects it); e.g. the device side hashes only
   * files whose size or mtime differ from a trusted index.
   */
  hash?: boolean | ((entry: IndexEntry) => boolean);
}

export interface ScanStats {
  entries: number;
  /** Regular files hashed (hardlink followers are not hashed again). */
  filesHashed: number;
  bytesHashed: number;
  hardlinks: number;
}

/** Paths per xattr batch, and how far the walk may run ahead of the consumer. */
const XATTR_BATCH = 2048;
const WINDOW = 3 * XATTR_BATCH;
const READ_BUFFER = 1024 * 1024;
/**
 * Files up to this size are hashed synchronously in one read (thread-pool round trips cost more
 * than the read itself); larger ones asynchronously, several at once, so that reads of a cold
 * tree overlap.
 */
const SYNC_HASH_MAX = 256 * 1024;

export function entryType(st: BigIntStats): EntryType | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  return undefined;
}

/** glibc's major()/minor() for a 64-bit dev_t. */
export function deviceNumbers(rdev: bigint): { major: number; minor: number } {
  return {
    major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n)),
    minor: Number((rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n)),
  };
}

/** Whole seconds, rounded down (also before 1970). */
export function mtimeSeconds(ns: bigint): number {
  const s = ns / 1_000_000_000n;
  return Number(ns < 0n && s * 1_000_000_000n !== ns ? s - 1n : s);
}

/** The entry for a walked path, without sha256 and xattrs (those come later). */
export function baseEntry(it: WalkItem): IndexEntry {
  const st = it.st;
  const type = entryType(st);
  if (!type) throw new TiuError('TREE_INVALID', `${JSON.stringify(displayPath(it.path))} has an unsupported file type`, { hint: 'remove it from the tree' });
  const e: IndexEntry = { path: it.path, type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtime: mtimeSeconds(st.mtimeNs) };
  if (type === 'file') {
    e.size = Number(st.size);
    if (st.size > 0n && st.blocks * 512n < st.size) e.sparse = true;
  } else if (type === 'symlink') {
    e.target = it.link!.toString('latin1');
  } else if (type === 'chr' || type === 'blk') {
    e.rdev = deviceNumbers(st.rdev);
  }
  return e;
}

interface Batch {
  paths: string[];
  result?: Promise<Map<string, Xattrs>>;
}

interface Slot {
  entry: IndexEntry;
  hash?: Promise<string>;
  batch?: Batch;
  /** Hardlink followers: the group's inode key. */
  follows?: string;
}

const swallow = () => {};

/**
 * Scans `root` and yields one entry per path in tree order (see types.ts for the fields).
 * Options: `exclude` (contents left out, the directory itself listed), `skip`, `oneFileSystem`,
 * `hashConcurrency`, `onProgress`. Regular files with nlink > 1 are grouped by (dev, ino): the
 * first in tree order is a normal entry, the others get `hardlink` and the same attributes.
 * Returns (as the generator's return value) counts. Throws TREE_INVALID for a path that cannot
 * be read or changes during the scan.
 */
export async function* scanTree(sys: System, root: string, options: ScanOptions = {}): AsyncGenerator<IndexEntry, ScanStats, undefined> {
  const stats: ScanStats = { entries: 0, filesHashed: 0, bytesHashed: 0, hardlinks: 0 };
  const hashing = limiter(Math.max(1, options.hashConcurrency ?? 8));
  const wantHash = options.hash ?? true;
  const buffers: Buffer[] = [];
  /** (dev:ino) -> the leader's entry and how many more members to expect. */
  const groups = new Map<string, { entry: IndexEntry; remaining: bigint }>();
  /** Slots in tree order, from `head` on not yet emitted (compacted now and then). */
  let pending: Slot[] = [];
  let head = 0;
  const next = (): Slot => {
    const slot = pending[head++]!;
    if (head >= 4096 && head * 2 >= pending.length) {
      pending = pending.slice(head);
      head = 0;
    }
    return slot;
  };
  let batch: Batch = { paths: [] };
  let lastProgress = 0;

  const startBatch = () => {
    const b = batch;
    batch = { paths: [] };
    if (b.paths.length === 0) return;
    b.result = listXattrs(sys, root, b.paths);
    b.result.catch(swallow); // awaited later, in order
  };

  const finish = async (slot: Slot): Promise<IndexEntry> => {
    const e = slot.entry;
    if (slot.batch && !slot.batch.result) startBatch();
    if (slot.follows !== undefined) {
      const leader = groups.get(slot.follows);
      if (!leader) throw changed(e.path); // more links than the leader's nlink said
      const l = leader.entry;
      Object.assign(e, { mode: l.mode, uid: l.uid, gid: l.gid, mtime: l.mtime, size: l.size, hardlink: l.path });
      if (l.sha256 !== undefined) e.sha256 = l.sha256;
      if (l.sparse) e.sparse = true;
      else delete e.sparse;
      if (l.xattrs) e.xattrs = { ...l.xattrs };
      if (--leader.remaining <= 0n) groups.delete(slot.follows);
      stats.hardlinks++;
    }
    if (slot.hash) e.sha256 = await slot.hash;
    if (slot.batch) {
      const x = (await slot.batch.result!).get(e.path);
      if (x) e.xattrs = x;
    }
    stats.entries++;
    const now = Date.now();
    if (options.onProgress && now - lastProgress >= 100) {
      lastProgress = now;
      options.onProgress(stats.entries, stats.bytesHashed);
    }
    return e;
  };

  try {
    for await (const it of walkTree(root, options)) {
      const slot: Slot = { entry: baseEntry(it) };
      const key = it.st.isFile() && it.st.nlink > 1n ? `${it.st.dev}:${it.st.ino}` : undefined;
      if (key !== undefined && groups.has(key)) {
        slot.follows = key;
      } else {
        if (key !== undefined) groups.set(key, { entry: slot.entry, remaining: it.st.nlink - 1n });
        const hashIt = it.st.isFile() && (typeof wantHash === 'boolean' ? wantHash : wantHash(slot.entry));
        if (hashIt && it.st.size <= SYNC_HASH_MAX) {
          // (a failure is kept for its turn in tree order, as the asynchronous ones are)
          try {
            slot.hash = Promise.resolve(hashFileSync(it));
            stats.filesHashed++;
            stats.bytesHashed += Number(it.st.size);
          } catch (err) {
            slot.hash = Promise.reject(err);
            slot.hash.catch(swallow);
          }
        } else if (hashIt) {
          slot.hash = hashing.run(async () => {
            const buf = buffers.pop() ?? Buffer.allocUnsafe(READ_BUFFER);
            try {
              const digest = await hashFile(it, buf);
              stats.filesHashed++;
              stats.bytesHashed += Number(it.st.size);
              return digest;
            } finally {
              buffers.push(buf);
            }
          });
          slot.hash.catch(swallow);
        }
        batch.paths.push(it.path);
        slot.batch = batch;
        if (batch.paths.length >= XATTR_BATCH) startBatch();
      }
      pending.push(slot);
      while (pending.length - head > WINDOW) yield await finish(next());
    }
    while (pending.length > head) yield await finish(next());
  } finally {
    hashing.stop();
  }
  options.onProgress?.(stats.entries, stats.bytesHashed);
  return stats;
}

/** Scans the whole tree into memory (see {@link scanTree}). */
export async function scanTreeToArray(sys: System, root: string, options: ScanOptions = {}): Promise<{ entries: IndexEntry[]; stats: ScanStats }> {
  const entries: IndexEntry[] = [];
  const gen = scanTree(sys, root, options);
  for (;;) {
    const r = await gen.next();
    if (r.done) return { entries, stats: r.value };
    entries.push(r.value);
  }
}
