/**
 * Read-ahead for the apply step: the small files the workers will read next are read first in
 * libuv's thread pool, so their bytes are in the page cache when a worker's synchronous read asks
 * for them. For the image that moves the kernel's squashfs decompression (done by the thread that
 * reads) to the pool's threads, off the main thread; for an in-place rewrite, the snapshot's old
 * file is read from disk there too. The bytes read here are thrown away (one scratch buffer,
 * shared by all reads in flight: nobody looks at it).
 *
 * Only what the worker would open anyway is opened, and more carefully: beneath its SafeRoot
 * (no symlinked directory followed), O_NOFOLLOW | O_NONBLOCK, a regular file only (lstat first:
 * no device or FIFO is ever opened). Anything odd is skipped silently: the worker's own read
 * reports it. Side effects: reads files, holds at most `inFlight` descriptors.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, read } from 'node:fs';
import type { SafeRoot } from '../../core/safepath.ts';

/** One file to read ahead: its root and path there. */
export interface ReadAheadFile {
  root: SafeRoot;
  path: string;
}

export interface ReadAhead {
  /** Stops issuing reads and waits for those in flight (their descriptors are closed). */
  stop(): Promise<void>;
  /** Files read ahead so far. */
  readonly files: number;
  /** Resolves once every file was read or skipped (or stop() was called and the reads ended). */
  readonly finished: Promise<void>;
}

const OPEN = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * Starts reading ahead `files(i)` for i = position() … count-1, at most `inFlight` at a time;
 * skips what the workers have passed. Files larger than `maxBytes` are not read (the workers
 * stream those through the pool themselves).
 */
export function startReadAhead(count: number, files: (i: number) => readonly ReadAheadFile[], position: () => number, o: { maxBytes: number; inFlight: number }): ReadAhead {
  let scratch: Buffer | undefined;
  let i = 0;
  let active = 0;
  let done = 0;
  let stopped = false;
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  const start = (f: ReadAheadFile) => {
    let fd: number | undefined;
    try {
      fd = f.root.atSync(f.path, (p) => {
        const st = lstatSync(p);
        return st.isFile() && st.size > 0 && st.size <= o.maxBytes ? openSync(p, OPEN) : undefined;
      });
      if (fd === undefined) return;
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('not a file');
      active++;
      const own = fd;
      scratch ??= Buffer.allocUnsafe(o.maxBytes);
      read(own, scratch, 0, Math.min(st.size, scratch.length), 0, (err) => {
        try {
          closeSync(own);
        } catch {
          // (a descriptor only read from: nothing to lose)
        }
        active--;
        if (!err) done++;
        pump();
      });
    } catch {
      if (fd !== undefined) closeSync(fd);
    }
  };
  const pump = () => {
    while (!stopped && active < o.inFlight && i < count) {
      const at = position();
      if (i < at) i = at;
      if (i >= count) break;
      for (const f of files(i++)) start(f);
    }
    // (with nothing in flight the loop above ended because it was stopped or is through)
    if (active === 0) finish();
  };
  pump();
  return {
    stop() {
      stopped = true;
      if (active === 0) finish();
      return finished;
    },
    get files() {
      return done;
    },
    finished,
  };
}
