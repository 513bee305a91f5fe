/**
 * Hashing file contents for the scan: sha256 of a regular file read in blocks, with checks that
 * the file is the one that was lstat'ed and did not change; and a small concurrency limiter.
 * Reads files; writes nothing.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { TiuError } from '../errors.ts';
import { displayPath } from './types.ts';
import { cannotRead, type WalkItem } from './walk.ts';
import { bufferPool } from '../bufferpool.ts';

export const EMPTY_SHA256 = createHash('sha256').digest('hex');

export function changed(path: string): TiuError {
  return new TiuError('TREE_INVALID', `${JSON.stringify(displayPath(path))} changed while it was scanned`, { hint: 'make sure nothing modifies the tree while it is scanned' });
}

// O_NONBLOCK: a FIFO swapped in where a file was must not wait for a writer (no effect on files).
const HASH_OPEN = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
// O_NOATIME: hashing should not touch the source's atimes (needs ownership or CAP_FOWNER; EPERM
// otherwise, and then the file is opened without it).
const noAtimeRefused = (err: unknown): boolean => (err as { code?: string }).code === 'EPERM';

async function openForHash(abs: Buffer): Promise<FileHandle> {
  try {
    return await open(abs, HASH_OPEN | constants.O_NOATIME);
  } catch (err) {
    if (!noAtimeRefused(err)) throw err;
    return open(abs, HASH_OPEN);
  }
}

function openForHashSync(abs: Buffer): number {
  try {
    return openSync(abs, HASH_OPEN | constants.O_NOATIME);
  } catch (err) {
    if (!noAtimeRefused(err)) throw err;
    return openSync(abs, HASH_OPEN);
  }
}

/**
 * One fstat after reading proves the file is the lstat'ed inode (not swapped) and that it did not
 * change while `read` bytes of it were hashed; throws {@link changed} otherwise.
 */
function checkReadWhole(it: WalkItem, read: number, after: BigIntStats): void {
  if (read !== Number(it.st.size) || after.ino !== it.st.ino || after.dev !== it.st.dev || after.size !== it.st.size || after.mtimeNs !== it.st.mtimeNs) throw changed(it.path);
}

/** sha256 of a regular file's content; checks that it is the inode that was lstat'ed and did not change. */
export async function hashFile(it: WalkItem, buf: Buffer): Promise<string> {
  const size = it.st.size;
  if (size === 0n) return EMPTY_SHA256;
  let fh: FileHandle;
  try {
    fh = await openForHash(it.abs);
  } catch (err) {
    throw cannotRead(it.path, err);
  }
  try {
    const h = createHash('sha256');
    const total = Number(size);
    let pos = 0;
    while (pos < total) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, total - pos), pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    checkReadWhole(it, pos, await fh.stat({ bigint: true }));
    return h.digest('hex');
  } catch (err) {
    throw err instanceof TiuError ? err : cannotRead(it.path, err);
  } finally {
    await fh.close();
  }
}

/** The read buffer of the synchronous hashing below (one suffices: nothing runs between its reads). */
const SYNC_BUFFER = Buffer.allocUnsafe(256 * 1024);

/**
 * {@link hashFile} without the event loop, for small files (a tree's thousands of files under a
 * few hundred KiB): open, read, fstat and close as four promises each through libuv's thread pool
 * cost more than the calls themselves (Debian's 5,317 files: ~0.65 s of a 1.45 s scan). The same
 * checks: the lstat'ed inode, unchanged while read.
 */
export function hashFileSync(it: WalkItem): string {
  const buf = SYNC_BUFFER;
  const size = it.st.size;
  if (size === 0n) return EMPTY_SHA256;
  let fd: number;
  try {
    fd = openForHashSync(it.abs);
  } catch (err) {
    throw cannotRead(it.path, err);
  }
  try {
    const h = createHash('sha256');
    const total = Number(size);
    let pos = 0;
    while (pos < total) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, total - pos), pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
    checkReadWhole(it, pos, fstatSync(fd, { bigint: true }));
    return h.digest('hex');
  } catch (err) {
    throw err instanceof TiuError ? err : cannotRead(it.path, err);
  } finally {
    closeSync(fd);
  }
}

/** Runs tasks with at most `n` at a time; `stop()` drops the ones not started. */
export function limiter(n: number) {
  let running = 0;
  const queue: Array<() => void> = [];
  let stopped = false;
  const next = () => {
    if (stopped) return;
    while (running < n && queue.length > 0) {
      running++;
      queue.shift()!();
    }
  };
  return {
    run<T>(task: () => Promise<T>): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push(() => {
          task().then(resolve, reject).finally(() => {
            running--;
            next();
          });
        });
        next();
      });
    },
    stop() {
      stopped = true;
      queue.length = 0;
    },
  };
}

/** Read buffers of {@link hashPath}, one per file hashed at once (256 KiB each). */
const HASH_BUFFERS = bufferPool(256 * 1024, 4);

/** sha256 (hex) of a file's content, read in 256 KiB chunks; never follows a symlink. */
export async function hashPath(path: Buffer | string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, HASH_OPEN);
  // Read buffers are reused across calls: a fresh 1 MiB per (mostly small) file kept the
  // garbage collector busy during /etc scans and digest filling.
  const buf = HASH_BUFFERS.take();
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    HASH_BUFFERS.give(buf);
    await fh.close();
  }
  return h.digest('hex');
}


/**
 * {@link hashPath} without the event loop: for scans of many small files (an /etc tree), where
 * the promise and thread-pool round trips of open/read/close cost more than the reads.
 * Bounded memory (one 256 KiB buffer); never follows a symlink.
 */
export function hashPathSync(path: Buffer | string): string {
  const h = createHash('sha256');
  const fd = openSync(path, HASH_OPEN);
  try {
    for (;;) {
      const n = readSync(fd, SYNC_BUFFER, 0, SYNC_BUFFER.length, null);
      if (n === 0) break;
      h.update(SYNC_BUFFER.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
