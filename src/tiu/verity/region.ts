/**
 * Streams the salted digests of a run of blocks in file order, chunk by chunk: hashed by the
 * workers of a {@link HashPool} if given (this thread then only hands out chunks and consumes
 * digests in order), else in this thread, which reads its next chunk while hashing the current one.
 * Memory: two chunks in this thread, or one per worker, plus a window of 32 KiB digest lists.
 */
import type { FileHandle } from 'node:fs/promises';
import type { BlockHasher } from './hash.ts';
import { readFully } from './io.ts';
import { SHA256_SIZE } from './layout.ts';
import type { HashPool } from './pool.ts';

/** Bytes read and hashed per step: large sequential reads, small enough to keep memory flat. */
export const CHUNK_SIZE = 1024 * 1024;

export interface Region {
  /** Byte offset of the first block in the file. */
  position: number;
  blocks: number;
}

export interface DigestChunk {
  /** Index (within the region) of the first block this chunk covers. */
  first: number;
  count: number;
  /** count * 32 bytes of digests. */
  digests: Buffer;
}

export interface RegionHashing {
  hasher: BlockHasher;
  blockSize: number;
  pool?: HashPool;
}

export async function* digestRegion(fh: FileHandle, region: Region, h: RegionHashing): AsyncGenerator<DigestChunk> {
  const perChunk = CHUNK_SIZE / h.blockSize;
  const chunks = Math.ceil(region.blocks / perChunk);
  const countOf = (i: number): number => Math.min(perChunk, region.blocks - i * perChunk);
  const threads = h.pool?.size ?? 1;

  // Hashing here: buffer k % 2 is reused once the task before on it has been hashed.
  const bufs: Buffer[] = [];
  const bufDone: Promise<unknown>[] = [Promise.resolve(), Promise.resolve()];
  let local = 0;
  const hashHere = (i: number): Promise<Buffer> => {
    const slot = local++ % 2;
    const bytes = countOf(i) * h.blockSize;
    const task = bufDone[slot]!.then(async () => {
      const buf = (bufs[slot] ??= Buffer.allocUnsafe(Math.min(CHUNK_SIZE, region.blocks * h.blockSize)));
      await readFully(fh, buf, bytes, region.position + i * CHUNK_SIZE);
      const digests = Buffer.allocUnsafe(countOf(i) * SHA256_SIZE);
      h.hasher.digestAll(buf.subarray(0, bytes), digests);
      return digests;
    });
    bufDone[slot] = task.catch(() => {});
    return task;
  };

  const inFlight: Promise<Buffer>[] = [];
  let submitted = 0;
  const submit = (): void => {
    const i = submitted++;
    const p = h.pool ? h.pool.digest(region.position + i * CHUNK_SIZE, countOf(i) * h.blockSize) : hashHere(i);
    p.catch(() => {}); // awaited in order below; a failure while the consumer is busy is not unhandled
    inFlight.push(p);
  };
  try {
    for (let i = 0; i < chunks; i++) {
      // Two tasks per thread keep every thread busy while results are consumed in order.
      while (submitted < chunks && inFlight.length < threads * 2) submit();
      const digests = await inFlight.shift()!;
      yield { first: i * perChunk, count: countOf(i), digests };
    }
  } finally {
    // On early exit, let every read land before the caller closes the file or the pool.
    await Promise.allSettled(inFlight);
  }
}
