/**
 * Bounded-memory file access for the hash tree: exact positional reads, and buffered sequential
 * reading and writing of digest lists (so a level is never held in memory whole).
 */
import type { FileHandle } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';

/** Size of the buffers for digest lists: 1 MiB of digests covers 128 MiB of blocks below. */
export const DIGEST_BUFFER = 1024 * 1024;

export function truncatedError(position: number, end: number): TiuError {
  return new TiuError('ARCHIVE_TRUNCATED', `verity: file ends at byte ${position}, before byte ${end} of the verity data or hash tree`, {
    hint: 'the file is truncated; download or build it again',
    details: { position, end },
  });
}

/** Reads exactly `length` bytes at `position` into `buf`; ARCHIVE_TRUNCATED at end of file. */
export async function readFully(fh: FileHandle, buf: Uint8Array, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw truncatedError(position + done, position + length);
    done += bytesRead;
  }
}

export async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/** A source of expected digests, consumed front to back. */
export interface DigestSource {
  /** The next `bytes` bytes of digests (a fresh buffer the caller may keep). */
  take(bytes: number): Promise<Buffer>;
}

/** Digests held in memory (the root hash). */
export function memoryDigests(digests: Buffer): DigestSource {
  let pos = 0;
  return {
    async take(bytes) {
      if (pos + bytes > digests.length) throw new RangeError('read past the end of the digest list');
      const out = Buffer.from(digests.subarray(pos, pos + bytes));
      pos += bytes;
      return out;
    },
  };
}

/** Digests read sequentially from `[position, position + total)` of the file, 1 MiB at a time. */
export function fileDigests(fh: FileHandle, position: number, total: number): DigestSource {
  const buf = Buffer.allocUnsafe(Math.min(DIGEST_BUFFER, total));
  let start = 0; // file bytes consumed into buf so far (relative to position)
  let have = 0; // valid bytes in buf
  let used = 0; // bytes of buf handed out
  return {
    async take(bytes) {
      const out = Buffer.allocUnsafe(bytes);
      let done = 0;
      while (done < bytes) {
        if (used === have) {
          const n = Math.min(buf.length, total - start);
          if (n <= 0) throw new RangeError('read past the end of the digest list');
          await readFully(fh, buf, n, position + start);
          start += n;
          have = n;
          used = 0;
        }
        const k = Math.min(bytes - done, have - used);
        buf.copy(out, done, used, used + k);
        used += k;
        done += k;
      }
      return out;
    },
  };
}

/** Appends digests to the file from `position` on, buffered in 1 MiB writes. */
export interface DigestSink {
  write(digests: Uint8Array): Promise<void>;
  /** Writes what is buffered; returns the number of bytes written in total. */
  flush(): Promise<number>;
}

export function fileDigestSink(fh: FileHandle, position: number): DigestSink {
  const buf = Buffer.allocUnsafe(DIGEST_BUFFER);
  let fill = 0;
  let written = 0;
  const flush = async (): Promise<number> => {
    if (fill > 0) await writeFully(fh, buf.subarray(0, fill), position + written);
    written += fill;
    fill = 0;
    return written;
  };
  return {
    async write(digests) {
      let done = 0;
      while (done < digests.length) {
        const k = Math.min(digests.length - done, buf.length - fill);
        buf.set(digests.subarray(done, done + k), fill);
        fill += k;
        done += k;
        if (fill === buf.length) await flush();
      }
    },
    flush,
  };
}
