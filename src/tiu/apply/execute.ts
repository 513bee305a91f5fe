/**
 * The apply executor: carries out an {@link ApplyPlan} on a snapshot directory, copying file
 * content from a (verified, mounted or extracted) image tree.
 *
 * Side effects: writes only below `targetRoot`; every path in the snapshot and in the image is
 * resolved beneath its root ({@link SafeRoot}: no symlink, `..` or mount point is followed). Every file copied from the image is hashed while
 * it is copied and must match the index's sha256, so content cannot be swapped after the image
 * was verified. Runs external commands only for device nodes (mknod) and for xattrs the in-process
 * binding cannot name (setfattr).
 */
import { chmodSync, closeSync, constants, fchmodSync, fchownSync, fstatSync, ftruncateSync, lchownSync, lstatSync, lutimesSync, openSync, readSync, readdirSync, rmdirSync, unlinkSync, writeSync } from 'node:fs';
import { chmod, lchown, lutimes, link, lstat, mkdir, open, rename, symlink, unlink, writeFile, rm, type FileHandle } from 'node:fs/promises';
import { createHash, hash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startReadAhead } from './readahead.ts';
import { REDATE_CHILD_MIN, redatable, startRedate, type RedateRun } from './redate.ts';
import { TiuError, fromErrno } from '../../core/errors.ts';
import { SafeRoot, pathComponents } from '../../core/safepath.ts';
import { explainEperm, explainXattrNoSpace } from '../fsadvice.ts';
import type { System } from '../../core/system.ts';
import { displayPath, pathBytes, type IndexEntry } from '../../core/fileindex/types.ts';
import type { ApplyPlan } from './plan.ts';
import { setXattrsInProcess } from '../../core/fileindex/xattrs.ts';
import { forEachLimit } from '../../core/concurrency.ts';
import { bufferPool } from '../../core/bufferpool.ts';

/**
 * Where file content comes from (the seam a delta plugs into): chunks of a file's new content.
 * The executor hashes what it gets and rejects it unless it equals the index's sha256.
 */
export interface ContentSource {
  open(e: IndexEntry): Promise<AsyncIterable<Uint8Array>>;
  /**
   * The whole content of a small file (at most {@link SMALL_FILE} bytes), made synchronously, or
   * undefined when this source streams it (then `open` is used). Valid until the next call.
   */
  readSmall?(e: IndexEntry): Uint8Array | undefined;
}

/**
 * Files up to this size are read and written synchronously, whole: a small file's dozen calls
 * (open, fstat, read, close on each side, chown, chmod) take microseconds each, and as promises
 * each was a thread-pool round trip of ~0.15 ms. Larger files stream through the pool.
 */
export const SMALL_FILE = 256 * 1024;
/** Small files written between two turns of the event loop (the read-ahead issues reads in those). */
const YIELD_EVERY = 16;
/** Files read ahead at once (libuv's pool has 2-4 threads; the rest wait in its queue). */
const READ_AHEAD = 32;

export interface ExecuteOptions {
  sys: System;
  /** Content from elsewhere than `imageRoot` (a delta); default: the files below `imageRoot`. */
  content?: ContentSource;
  /** Root of the new image's tree (a read-only mount of the verified image). */
  imageRoot: string;
  /** Root of the snapshot being written. */
  targetRoot: string;
  /** Called after each file written, with cumulative bytes. */
  onProgress?: (bytesDone: number) => void;
  /** Files copied concurrently. */
  concurrency?: number;
  signal?: AbortSignal;
}

export interface ExecuteResult {
  bytesWritten: number;
  filesWritten: number;
}

/**
 * Bytes read and compared per call when writing content. 256 KiB: at 4 copies in flight, each
 * with a read and an old-content buffer, 2 MiB in all (1 MiB chunks held 8 MiB for no gain in
 * throughput: the squashfs block is 128 KiB).
 */
const CHUNK = 256 * 1024;
/** Metadata calls (lutimes, chown) in flight at once: enough to keep libuv's 4 threads busy. */
const FS_CONCURRENCY = 16;
let nodeCounter = 0;

/**
 * Runs `fn` with a string path naming the same inode as `p`: `p` itself when it is valid UTF-8,
 * else a temporary hard link with an ASCII name in `aliasDir` (same filesystem; command-line
 * tools take strings, not bytes).
 */
export async function withStringPath<T>(p: Buffer, aliasDir: string, fn: (path: string) => Promise<T>): Promise<T> {
  const s = p.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(p)) return fn(s);
  const alias = `${aliasDir}/.tiu-alias-${process.pid}-${nodeCounter++}`;
  await link(p, alias);
  try {
    return await fn(alias);
  } finally {
    await unlink(alias).catch(() => {});
  }
}
const ZERO = Buffer.alloc(4096);

/** Absolute Buffer path of a byte-string path below a root. */
export function under(root: string, p: string): Buffer {
  if (p === '.') return Buffer.from(root);
  return Buffer.concat([Buffer.from(root.endsWith('/') ? root : root + '/'), pathBytes(p)]);
}

function wrapFs(err: unknown, what: string, p: string): never {
  const mapped = fromErrno(err, `${what} /${displayPath(p)}`);
  if (mapped) throw mapped;
  throw new TiuError('APPLY_FAILED', `${what} /${displayPath(p)} failed: ${(err as Error).message}`, { cause: err });
}

/**
 * Removes `rel` below a safe root; directories recursively, each level resolved beneath the root
 * (never following symlinks). Synchronous: each call is a short metadata update, and a removed
 * package's tree is hundreds of them.
 */
export function removeTreeAt(root: SafeRoot, rel: readonly Buffer[]): void {
  const st = root.atSync(rel, (p) => lstatSync(p, { throwIfNoEntry: false }));
  if (!st) return;
  if (!st.isDirectory()) return root.atSync(rel, (p) => unlinkSync(p));
  const names = root.dirSync(rel, (p) => readdirSync(p, { encoding: 'buffer' }));
  for (const n of names) removeTreeAt(root, [...rel, n]);
  root.forget(rel);
  root.atSync(rel, (p) => rmdirSync(p));
}

/**
 * How an image file is opened: never through a symlink, and O_NONBLOCK so that a FIFO where the
 * index says file does not wait for a writer (no effect on regular files).
 */
const IMAGE_OPEN = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * The error for an image path the index says is a regular file: a symlink (the open failed with
 * ELOOP), or something else (no `err`); any other open error as it is.
 */
function notAFileInImage(e: IndexEntry, err?: unknown): unknown {
  if (err === undefined) return new TiuError('ARCHIVE_INDEX', `/${displayPath(e.path)} in the image is not a regular file, the index says it is`);
  if ((err as NodeJS.ErrnoException).code === 'ELOOP') return new TiuError('ARCHIVE_INDEX', `/${displayPath(e.path)} in the image is a symlink, the index says it is a file`);
  return err;
}

/** Chunks of a file of the mounted image, opened beneath the image root, checked to be a regular file. */
async function* imageFile(image: SafeRoot, e: IndexEntry): AsyncGenerator<Uint8Array> {
  const sfh = await image.at(e.path, (src) => open(src, IMAGE_OPEN)).catch((err) => {
    throw notAFileInImage(e, err);
  });
  try {
    const sst = await sfh.stat();
    if (!sst.isFile()) throw notAFileInImage(e);
    // Buffers are reused across files (one per concurrent copy): a fresh buffer per file, even
    // one no larger than the file, kept the garbage collector busy and the RSS up. The consumer
    // (copyContent, rewriteInPlace) is done with a chunk before it asks for the next, and with
    // the last one before the generator ends and gives the buffer back.
    const buf = READ_BUFFERS.take();
    try {
      const size = Math.max(1, Math.min(CHUNK, sst.size + 1));
      let pos = 0;
      for (;;) {
        const { bytesRead } = await sfh.read(buf, 0, size, pos);
        if (bytesRead === 0) break;
        yield buf.subarray(0, bytesRead);
        pos += bytesRead;
      }
    } finally {
      READ_BUFFERS.give(buf);
    }
  } finally {
    await sfh.close();
  }
}

/** Read buffers of {@link imageFile} (one per concurrent copy). */
const READ_BUFFERS = bufferPool(CHUNK, 4);

/**
 * The buffers of the synchronous small-file path, one each: the image file's content (one byte
 * more, to see a file larger than the index says), and the old content an in-place rewrite
 * compares with.
 */
const SMALL_READ = Buffer.allocUnsafe(SMALL_FILE + 1);
const SMALL_OLD = Buffer.allocUnsafe(SMALL_FILE);

/**
 * A small file of the mounted image, whole, opened beneath the image root and checked to be a
 * regular file (as {@link imageFile}); undefined when it has more than {@link SMALL_FILE} bytes after all (the caller streams it).
 * Valid until the next call.
 */
function readImageSmall(image: SafeRoot, e: IndexEntry): Buffer | undefined {
  let fd: number;
  try {
    fd = image.atSync(e.path, (src) => openSync(src, IMAGE_OPEN));
  } catch (err) {
    throw notAFileInImage(e, err);
  }
  try {
    if (!fstatSync(fd).isFile()) throw notAFileInImage(e);
    let n = 0;
    for (;;) {
      const r = readSync(fd, SMALL_READ, n, SMALL_READ.length - n, n);
      if (r === 0) break;
      n += r;
      if (n === SMALL_READ.length) return undefined;
    }
    return SMALL_READ.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Writes `data` at `pos` of `fd`: all of it, or (sparse) only its 4 KiB blocks that are not all zero. */
function writeSyncAll(fd: number, data: Uint8Array, pos: number, sparse: boolean): void {
  if (!sparse) {
    for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, pos + done);
    return;
  }
  for (let off = 0; off < data.length; off += 4096) {
    const blk = data.subarray(off, Math.min(off + 4096, data.length));
    if (!ZERO.subarray(0, blk.length).equals(blk)) writeSyncAll(fd, blk, pos + off, false);
  }
}

/**
 * {@link copyContent} for a small file whose content is in memory: checked against the signed
 * index before anything is created, then written to a fresh inode.
 */
function writeSmallNew(target: SafeRoot, e: IndexEntry, data: Uint8Array, viaDelta: boolean): void {
  checkContent(e, data.length, hash('sha256', data), viaDelta);
  const fd = target.atSync(e.path, (dst) => openSync(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600));
  try {
    writeSyncAll(fd, data, 0, e.sparse === true);
    if (e.sparse) ftruncateSync(fd, data.length);
    fchownSync(fd, checkId(e.uid, e), checkId(e.gid, e));
    fchmodSync(fd, e.mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * The runs of 4 KiB blocks of `chunk` that differ from `old` (which holds `have` valid bytes at
 * the same offsets), as [start, end) offsets: each is written with one call.
 */
function differingRuns(chunk: Buffer, old: Buffer, have: number): [number, number][] {
  const runs: [number, number][] = [];
  let runStart = -1;
  for (let off = 0; off < chunk.length; off += BLOCK) {
    const end = Math.min(off + BLOCK, chunk.length);
    const differs = end > have || chunk.compare(old, off, end, off, end) !== 0;
    if (differs && runStart < 0) runStart = off;
    if (!differs && runStart >= 0) {
      runs.push([runStart, off]);
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push([runStart, chunk.length]);
  return runs;
}

/**
 * {@link rewriteInPlace} for a small file whose content is in memory (checked first): only the
 * 4 KiB blocks that differ are written (all of them for a delta). False, having changed nothing,
 * when the snapshot's path is not a lone regular file.
 */
function rewriteSmallInPlace(target: SafeRoot, e: IndexEntry, data: Uint8Array, viaDelta: boolean): boolean {
  checkContent(e, data.length, hash('sha256', data), viaDelta);
  let fd: number;
  try {
    fd = target.atSync(e.path, (dst) => openSync(dst, constants.O_RDWR | constants.O_NOFOLLOW));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOENT' || code === 'EISDIR') return false;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.nlink !== 1) return false;
    let have = 0;
    // (a delta's content is rebuilt from the base's files, which differ in most blocks: it is
    // written whole, not compared with the old file's blocks first)
    const want = viaDelta ? 0 : Math.min(st.size, data.length);
    while (have < want) {
      const r = readSync(fd, SMALL_OLD, have, want - have, have);
      if (r === 0) break;
      have += r;
    }
    const chunk = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    for (const [from, to] of differingRuns(chunk, SMALL_OLD, have)) writeSyncAll(fd, chunk.subarray(from, to), from, false);
    if (st.size !== chunk.length) ftruncateSync(fd, chunk.length);
    fchownSync(fd, checkId(e.uid, e), checkId(e.gid, e));
    fchmodSync(fd, e.mode);
    return true;
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes one file from `source` (the image, or a delta's rebuilt content) beneath `target`,
 * hashing every byte: it must equal the signed index entry, or nothing is made the default.
 */
async function copyContent(source: AsyncIterable<Uint8Array>, target: SafeRoot, e: IndexEntry, viaDelta: boolean): Promise<void> {
  const hash = createHash('sha256');
  // The source is opened (and checked: a regular file beneath the image root) before anything
  // is created in the target.
  const chunks = source[Symbol.asyncIterator]();
  let next = await chunks.next();
  let dfh;
  try {
    dfh = await target.at(e.path, (dst) => open(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600));
    let pos = 0;
    for (; !next.done; next = await chunks.next()) {
      const c = next.value;
      const chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      const bytesRead = chunk.length;
      hash.update(chunk);
      if (e.sparse) {
        // Keep holes: write only 4 KiB blocks that are not all zero.
        for (let off = 0; off < bytesRead; off += 4096) {
          const blk = chunk.subarray(off, Math.min(off + 4096, bytesRead));
          if (!blk.equals(ZERO.subarray(0, blk.length))) await dfh.write(blk, 0, blk.length, pos + off);
        }
      } else {
        await writeAll(dfh, chunk, pos);
      }
      pos += bytesRead;
    }
    if (e.sparse) await dfh.truncate(pos);
    checkContent(e, pos, hash.digest('hex'), viaDelta);
    await dfh.chown(checkId(e.uid, e), checkId(e.gid, e));
    await dfh.chmod(e.mode);
  } finally {
    await chunks.return?.(undefined);
    await dfh?.close();
  }
}

/** Throws unless `size` bytes with `digest` are what the signed index says `e` holds. */
function checkContent(e: IndexEntry, size: number, digest: string, viaDelta: boolean): void {
  if (size === e.size && digest === e.sha256) return;
  if (viaDelta) {
    throw new TiuError('DELTA_CORRUPT', `/${displayPath(e.path)} rebuilt from the delta does not match the signed index (${size} bytes, sha256 ${digest.slice(0, 12)}…)`, {
      hint: 'the delta or the base snapshot is damaged; use the full image; nothing was made the default',
    });
  }
  throw new TiuError('ARCHIVE_VERITY', `content of /${displayPath(e.path)} in the image does not match the signed index (${size} bytes, sha256 ${digest.slice(0, 12)}…)`, {
    hint: 'the archive changed after it was verified or is corrupt; nothing was made the default',
  });
}

const BLOCK = 4096;

/**
 * Rewrites the snapshot's file at `e.path` (inherited from the base) with the image's content,
 * writing only the 4 KiB blocks that differ, then truncating to the new size: unchanged blocks
 * keep sharing their extents with the base snapshot, as `rsync --inplace` leaves them. Every
 * byte read from the image is hashed and must match the signed index. Returns false, having
 * changed nothing, when the path is not a regular file with a single link (the caller then
 * replaces it). A failure part-way leaves a mixed file in the new snapshot, which the caller
 * discards as a whole. `viaDelta`: the content is a delta's, rebuilt from the base's files; it is
 * written whole (no old block is read to compare) and a mismatch is DELTA_CORRUPT.
 */
async function rewriteInPlace(source: AsyncIterable<Uint8Array>, target: SafeRoot, e: IndexEntry, viaDelta: boolean): Promise<boolean> {
  const hash = createHash('sha256');
  const chunks = source[Symbol.asyncIterator]();
  // The source is opened (and checked) before the target is touched.
  let next = await chunks.next();
  let dfh;
  try {
    try {
      dfh = await target.at(e.path, (dst) => open(dst, constants.O_RDWR | constants.O_NOFOLLOW));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOENT' || code === 'EISDIR') return false;
      throw err;
    }
    const st = await dfh.stat();
    if (!st.isFile() || st.nlink !== 1) return false;
    const old = OLD_BUFFERS.take();
    try {
      let pos = 0;
      for (; !next.done; next = await chunks.next()) {
        const c = next.value;
        const chunk = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
        hash.update(chunk);
        // (a delta's content is written whole, as for small files above)
        const have = !viaDelta && pos < st.size ? (await dfh.read(old, 0, Math.min(chunk.length, st.size - pos), pos)).bytesRead : 0;
        for (const [from, to] of differingRuns(chunk, old, have)) await writeAll(dfh, chunk.subarray(from, to), pos + from);
        pos += chunk.length;
      }
      if (st.size !== pos) await dfh.truncate(pos);
      checkContent(e, pos, hash.digest('hex'), viaDelta);
    } finally {
      OLD_BUFFERS.give(old);
    }
    await dfh.chown(checkId(e.uid, e), checkId(e.gid, e));
    await dfh.chmod(e.mode);
    return true;
  } finally {
    await chunks.return?.(undefined);
    await dfh?.close();
  }
}

/** Spare buffers for the old content read by in-place rewrites (one per concurrent write). */
const OLD_BUFFERS = bufferPool(CHUNK, 4);

async function writeAll(fh: FileHandle, data: Buffer, at: number): Promise<void> {
  let done = 0;
  while (done < data.length) done += (await fh.write(data, done, data.length - done, at + done)).bytesWritten;
}

/** Owner ids must be real ids: chown(-1) means "unchanged", so 4294967295 would silently not apply. */
function checkId(id: number, e: IndexEntry): number {
  if (!Number.isInteger(id) || id < 0 || id >= 0xffffffff) throw new TiuError('ARCHIVE_INDEX', `/${displayPath(e.path)} has owner id ${id}, which cannot be set (4294967295 means "unchanged" to chown)`);
  return id;
}

function setOwnerModeSync(p: Buffer, e: IndexEntry): void {
  lchownSync(p, checkId(e.uid, e), checkId(e.gid, e));
  if (e.type !== 'symlink') chmodSync(p, e.mode);
}

async function setOwnerMode(p: Buffer, e: IndexEntry): Promise<void> {
  await lchown(p, checkId(e.uid, e), checkId(e.gid, e));
  if (e.type !== 'symlink') await chmod(p, e.mode);
}

/** Escapes a path for getfattr/setfattr dump format (octal for specials, as getfattr does). */
export function escapeDumpPath(p: Buffer): string {
  let out = '';
  for (const b of p) {
    if (b === 0x5c) out += '\\\\';
    else if (b <= 0x20 || b >= 0x7f || b === 0x3d /* = */) out += '\\' + b.toString(8).padStart(3, '0');
    else out += String.fromCharCode(b);
  }
  return out;
}

/**
 * Carries out the plan. On failure throws; the caller discards the whole snapshot, so no undo
 * is attempted here.
 */
export async function executePlan(plan: ApplyPlan, opts: ExecuteOptions): Promise<ExecuteResult> {
  const { sys, imageRoot, targetRoot } = opts;
  await using target = await SafeRoot.open(targetRoot, { what: 'the new snapshot' });
  await using image = await SafeRoot.open(imageRoot, { what: 'the image' });
  // (--debug: where the apply step spends its time)
  const t0 = performance.now();
  const mark = (what: string) => sys.log.debug(`apply: ${what} after ${(performance.now() - t0).toFixed(0)} ms`);
  // Re-dated files (only their mtime changes) go to a child process that runs beside everything
  // below (see redate.ts): their parents are checked beneath the root first.
  const redated = new Set<IndexEntry>();
  for (const c of plan.changes) if (c.op === 'meta' && redatable(c.entry, c.fields)) redated.add(c.entry);
  let redate: RedateRun | undefined;
  if (redated.size >= REDATE_CHILD_MIN) {
    const parents = new Set<string>();
    for (const e of redated) {
      const i = e.path.lastIndexOf('/');
      if (i > 0) parents.add(e.path.slice(0, i));
    }
    for (const d of parents) target.dirSync(d, () => {});
    redate = startRedate(sys, targetRoot, [...redated]);
    mark(`${redated.size} re-dated entries handed to a child (${parents.size} directories checked)`);
  } else redated.clear();
  try {
    const r = await executeTree(plan, opts, target, image, redated, mark);
    // (a Ctrl-C reaches the child too: its failure then is the interruption, reported as such)
    await redate?.done().catch((e: unknown) => {
      throw opts.signal?.aborted ? new TiuError('INTERRUPTED', 'interrupted; the new snapshot is being discarded') : e;
    });
    redate = undefined;
    return r;
  } finally {
    await redate?.stop();
  }
}

async function executeTree(plan: ApplyPlan, opts: ExecuteOptions, target: SafeRoot, image: SafeRoot, redated: ReadonlySet<IndexEntry>, mark: (what: string) => void): Promise<ExecuteResult> {
  const { sys, targetRoot } = opts;
  /** Runs `fn` on the snapshot path of `p`, its parents checked to be real directories in it. */
  const T = <R>(p: string, fn: (path: Buffer) => Promise<R>) => target.at(p, fn);
  /**
   * Replaces a file the plan meant to rewrite in place (not a lone regular file after all, or
   * a delta's content): its directory's mtime, which the plan expects unchanged, is put back.
   */
  const replaceKeepingDirTime = async (e: IndexEntry, source: AsyncIterable<Uint8Array>, viaDelta: boolean) => {
    const parent = pathComponents(e.path).slice(0, -1);
    const dir = parent.length ? parent : '.';
    const before = await target.at(dir, (d) => lstat(d, { bigint: true }));
    await T(e.path, (p) => unlink(p));
    await copyContent(source, target, e, viaDelta);
    await target.at(dir, (d) => lutimes(d, Number(before.atimeNs) / 1e9, Number(before.mtimeNs) / 1e9));
  };
  /** {@link replaceKeepingDirTime} for a small file's content in memory. */
  const replaceSmallKeepingDirTime = (e: IndexEntry, data: Uint8Array, viaDelta: boolean) => {
    const parent = pathComponents(e.path).slice(0, -1);
    const before = target.dirSync(parent, (d) => lstatSync(d, { bigint: true }));
    target.atSync(e.path, (p) => unlinkSync(p));
    writeSmallNew(target, e, data, viaDelta);
    target.dirSync(parent, (d) => lutimesSync(d, Number(before.atimeNs) / 1e9, Number(before.mtimeNs) / 1e9));
  };
  const check = () => {
    if (opts.signal?.aborted) throw new TiuError('INTERRUPTED', 'interrupted; the new snapshot is being discarded');
  };
  let bytesWritten = 0;
  let filesWritten = 0;
  /** Desired xattr sets for every created or changed entry: applied in one setfattr run. */
  const xattrWork: IndexEntry[] = [];

  for (const r of plan.removals) {
    check();
    try {
      removeTreeAt(target, pathComponents(r.path));
    } catch (e) {
      if (e instanceof TiuError) throw e;
      await explainEperm(sys, targetRoot, r.path, e);
      wrapFs(e, 'removing', r.path);
    }
  }

  // Structure first (directories, symlinks, nodes, metadata); file content in a pool after.
  const writes: IndexEntry[] = [];
  const links: IndexEntry[] = [];
  const metas: Extract<ApplyPlan['changes'][number], { op: 'meta' }>[] = [];
  /** Writes of files the snapshot already has on their own inode: rewritten where they differ. */
  const inPlace = new Set<IndexEntry>();
  /** Of those, the ones whose xattrs need no check after a rewrite in place (see Action). */
  const xattrsKept = new Set<IndexEntry>();
  /** Files whose content was written: their mtimes are set once their xattrs are. */
  const written: IndexEntry[] = [];
  for (const c of plan.changes) {
    check();
    const e = c.entry;
    try {
      switch (c.op) {
        case 'mkdir':
          await T(e.path, async (p) => {
            await mkdir(p, { mode: 0o700 });
            await setOwnerMode(p, e);
          });
          xattrWork.push(e);
          break;
        case 'symlink':
          await T(e.path, async (p) => {
            await symlink(pathBytes(e.target ?? ''), p);
            await lchown(p, checkId(e.uid, e), checkId(e.gid, e));
            await lutimes(p, e.mtime, e.mtime);
          });
          xattrWork.push(e);
          break;
        case 'mknod': {
          const args = e.type === 'fifo' ? ['p'] : e.type === 'socket' ? [] : [e.type === 'chr' ? 'c' : 'b', String(e.rdev!.major), String(e.rdev!.minor)];
          if (e.type === 'socket') {
            sys.log.warn(`not creating socket /${displayPath(e.path)}: sockets are made by the programs that listen on them`);
            break;
          }
          // mknod(1) takes a string path: make the node under an ASCII name in its own directory
          // (the same subvolume: /etc is a nested one), then rename it (Buffer-safe).
          const tmpName = Buffer.from(`.tiu-node-${process.pid}-${nodeCounter++}`);
          const parent = pathComponents(e.path).slice(0, -1);
          await target.at([...parent, tmpName], async (tmp) => {
            await sys.run('mknod', ['-m', (e.mode & 0o7777).toString(8), '--', tmp.toString('latin1'), ...args]);
          }, { child: true });
          await target.at([...parent, tmpName], (tmp) => T(e.path, (p) => rename(tmp, p)));
          await T(e.path, async (p) => {
            await setOwnerMode(p, e);
            await lutimes(p, e.mtime, e.mtime);
          });
          xattrWork.push(e);
          break;
        }
        case 'write':
          writes.push(e);
          if (c.inPlace) inPlace.add(e);
          if (c.inPlace && c.xattrsKept) xattrsKept.add(e);
          break;
        case 'link':
          links.push(e);
          break;
        case 'meta':
          // chown clears setuid bits and file capabilities: restore xattrs whenever the owner changed.
          if (c.fields.includes('xattrs') || c.fields.includes('owner')) xattrWork.push(e);
          if (!redated.has(e)) metas.push(c);
          break;
      }
    } catch (err) {
      if (err instanceof TiuError) throw err;
      await explainEperm(sys, targetRoot, e.path, err);
      wrapFs(err, 'creating', e.path);
    }
  }

  mark(`${plan.removals.length} removals and ${plan.changes.length - writes.length - links.length - metas.length - redated.size} new directories, symlinks and nodes done`);
  // Metadata of entries that exist (an update re-dates thousands of files): independent of each
  // other and of the structure above, so many are in flight at once.
  // The calls are synchronous: each is an inode update in memory, far cheaper than a round
  // trip through libuv's thread pool (2,800 re-dated files: ~0.1 s instead of ~0.5 s).
  await forEachLimit(metas, FS_CONCURRENCY, async (c) => {
    check();
    const e = c.entry;
    try {
      if (c.fields.includes('owner') || c.fields.includes('mode')) await T(e.path, async (p) => setOwnerModeSync(p, e));
      if (c.fields.includes('mtime') && e.type !== 'dir') await T(e.path, async (p) => lutimesSync(p, e.mtime, e.mtime));
    } catch (err) {
      if (err instanceof TiuError) throw err;
      await explainEperm(sys, targetRoot, e.path, err);
      wrapFs(err, 'setting metadata of', e.path);
    }
  });

  mark(`metadata of ${metas.length} entries set`);
  const concurrency = opts.concurrency ?? 4;
  /** Files the workers have begun writing (the read-ahead goes on beyond them). */
  let taken = 0;
  /** Small files written since the event loop last ran (see below). */
  let sinceYield = 0;
  // The image's small files (and the snapshot's old ones to rewrite in place) read ahead in the
  // thread pool: a full extract of the Debian update spent ~0.1 s of its apply step waiting for
  // squashfs decompression and cold reads on the main thread.
  // (Not for a delta: reading the base files it builds on ahead made its apply step ~0.1 s
  // faster, but its peak RSS ~1.5 MiB higher, over its 100 MiB bound in half the runs.)
  const readAhead = startReadAhead(
    opts.content ? 0 : writes.length,
    (k) => {
      const e = writes[k]!;
      return inPlace.has(e) ? [{ root: image, path: e.path }, { root: target, path: e.path }] : [{ root: image, path: e.path }];
    },
    () => taken,
    { maxBytes: SMALL_FILE, inFlight: READ_AHEAD },
  );
  // forEachLimit: the first failure stops the others from taking files, and is rethrown once the
  // writes in flight have settled (nothing may still write into the snapshot, or read a delta's
  // streams, while the caller discards it).
  try {
    await forEachLimit(writes, concurrency, async (e, i) => {
      // A run of small files is written without a thread-pool round trip: let the event loop in
      // now and then (the large files' reads and writes complete, the read-ahead goes on, a signal
      // is seen, progress is drawn).
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      check();
      taken = Math.max(taken, i + 1);
      try {
        const viaDelta = opts.content !== undefined;
        const source = () => (opts.content ? opts.content.open(e) : Promise.resolve(imageFile(image, e)));
        const small = (e.size ?? 0) <= SMALL_FILE ? (opts.content ? opts.content.readSmall?.(e) : readImageSmall(image, e)) : undefined;
        let rewritten = false;
        if (small && !inPlace.has(e)) writeSmallNew(target, e, small, viaDelta);
        else if (small && rewriteSmallInPlace(target, e, small, viaDelta)) rewritten = true;
        else if (small) replaceSmallKeepingDirTime(e, small, viaDelta);
        else if (!inPlace.has(e)) await copyContent(await source(), target, e, viaDelta);
        else if (await rewriteInPlace(await source(), target, e, viaDelta)) rewritten = true;
        else await replaceKeepingDirTime(e, await source(), viaDelta);
        // (a fresh inode may have inherited a default ACL or been labelled: its xattrs are checked)
        if (!(rewritten && xattrsKept.has(e))) xattrWork.push(e);
      } catch (err) {
        if (err instanceof TiuError) throw err;
        await explainEperm(sys, targetRoot, e.path, err);
        wrapFs(err, 'writing', e.path);
      }
      written.push(e);
      bytesWritten += e.size ?? 0;
      filesWritten++;
      opts.onProgress?.(bytesWritten);
    });
  } finally {
    await readAhead.stop();
  }
  mark(`${writes.length} files written${opts.content ? '' : ` (${readAhead.files} read ahead)`}`);

  for (const e of links) {
    check();
    try {
      await T(e.hardlink!, (from) => T(e.path, (to) => link(from, to)));
    } catch (err) {
      if (err instanceof TiuError) throw err;
      wrapFs(err, 'linking', e.path);
    }
  }

  // The tree now matches the index (every parent a real directory tiu made or checked), so
  // setfattr may take plain paths below the root.
  await applyXattrs(sys, targetRoot, xattrWork);
  mark(`${links.length} hardlinks made, xattrs of ${xattrWork.length} entries checked`);

  // File mtimes after xattrs (capabilities), directory mtimes last, deepest first.
  // (Setting a directory's mtime changes nothing in its parent: no order is needed among them.)
  const writtenSet = new Set(written);
  const files = [...written, ...xattrWork.filter((e) => e.type === 'file' && e.hardlink === undefined && !writtenSet.has(e))];
  await forEachLimit(files, FS_CONCURRENCY, (e) => T(e.path, async (p) => lutimesSync(p, e.mtime, e.mtime)).catch((err) => wrapFs(err, 'setting mtime of', e.path)));
  await forEachLimit(plan.dirTimes, FS_CONCURRENCY, (d) => T(d.path, async (p) => lutimesSync(p, d.mtime, d.mtime)).catch((err) => wrapFs(err, 'setting mtime of', d.path)));
  mark(`times of ${files.length} files and ${plan.dirTimes.length} directories set`);
  // (the spare copy buffers, 2 MiB, are not needed again in this run: the /etc merge and sealing
  // that follow are where its memory peaks)
  READ_BUFFERS.drain();
  OLD_BUFFERS.drain();
  return { bytesWritten, filesWritten };
}

/**
 * Makes each entry's xattrs exactly the indexed set: removes extra ones, sets the rest (through
 * the binding, or, for what it cannot name, in one `setfattr --restore` run (ACLs are set as their system.posix_acl_* xattrs).
 */
async function applyXattrs(sys: System, root: string, entries: IndexEntry[]): Promise<void> {
  if (entries.length === 0) return;
  const current = await readXattrs(sys, root, entries.map((e) => e.path));
  let dump = '';
  for (const e of entries) {
    const want = e.xattrs ?? {};
    const have = current.get(e.path) ?? {};
    const p = under(root, e.path);
    // In-process (N-API binding) when it loads and the path and names are UTF-8; else setfattr.
    try {
      if (await setXattrsInProcess(p, have, want)) continue;
    } catch (err) {
      // ENOSPC with free space: btrfs cannot hold an attribute that large (see fsadvice.ts).
      await explainXattrNoSpace(root, err, largestXattr([e]));
      throw err;
    }
    for (const name of Object.keys(have)) {
      if (!(name in want)) await withStringPath(p, root, (sp) => sys.run('setfattr', ['-h', '-x', name, '--', sp]));
    }
    const set = Object.entries(want).filter(([k, v]) => have[k] !== v);
    if (set.length === 0) continue;
    dump += `# file: ${escapeDumpPath(p)}\n`;
    for (const [k, v] of set) dump += `${escapeDumpPath(Buffer.from(k, "latin1"))}=0s${v}\n`;
    dump += '\n';
  }
  if (!dump) return;
  const dir = await import('node:fs/promises').then((m) => m.mkdtemp(join(tmpdir(), 'tiu-xattr-')));
  try {
    const file = join(dir, 'restore');
    await writeFile(file, dump, 'latin1');
    try {
      await sys.run('setfattr', ['-h', `--restore=${file}`]);
    } catch (err) {
      await explainXattrNoSpace(root, err, largestXattr(entries));
      throw err;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The largest attribute the entries set, to name it when the filesystem refuses one. */
function largestXattr(entries: readonly IndexEntry[]): { path: string; name: string; bytes: number } | undefined {
  let largest: { path: string; name: string; bytes: number } | undefined;
  for (const e of entries) {
    for (const [k, v] of Object.entries(e.xattrs ?? {})) {
      const bytes = Buffer.byteLength(v, 'base64');
      if (!largest || bytes > largest.bytes) largest = { path: e.path, name: k, bytes };
    }
  }
  return largest;
}

/** Reads xattrs of the given paths (names -> base64 values). */
export async function readXattrs(sys: System, root: string, paths: string[]): Promise<Map<string, Record<string, string>>> {
  const { listXattrs } = await import('../../core/fileindex/xattrs.ts');
  return listXattrs(sys, root, paths);
}
