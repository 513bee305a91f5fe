/**
 * Computing and verifying a dm-verity hash tree (sha256, 4096-byte blocks, format version 1,
 * no superblock) stored in the same file as its data, as RAUC verity bundles and tiu archives do.
 *
 * Both stream the file in large sequential chunks with memory bounded by a few chunks whatever
 * the image size; level 0 (over 99% of the work) is hashed by worker threads when the machine
 * has more than one core and the data is large.
 */
import { availableParallelism } from 'node:os';
import type { FileHandle } from 'node:fs/promises';
import { TiuError, type ErrorCode } from '../../core/errors.ts';
import { createBlockHasher, type BlockHasher } from './hash.ts';
import { fileDigests, fileDigestSink, memoryDigests, readFully, writeFully, type DigestSource } from './io.ts';
import { SHA256_SIZE, VERITY_BLOCK_SIZE, verityLayout, type VerityLayout, type VerityLevel } from './layout.ts';
import { createHashPool, type HashPool } from './pool.ts';
import { CHUNK_SIZE, digestRegion, type Region } from './region.ts';

/** Starting the workers costs ~40-70 ms (40-70 MiB hashed): smaller regions are hashed here. */
const AUTO_POOL_MIN_BYTES = 128 * 1024 * 1024;
const MAX_SALT = 256; // veritysetup's limit
const MAX_WORKERS = 4;

export interface HashTreeCommon {
  /** Bytes of data at the start of the file: a positive multiple of 4096. */
  dataSize: number;
  /** Where the tree starts in the same file: 4096-aligned, at or after dataSize. */
  hashOffset: number;
  salt: Buffer;
  /** Called after each chunk with bytes hashed so far and in total (data plus tree). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Worker threads to hash with (this thread then only coordinates); 0 hashes in this thread.
   * Default when computing (the build side): one per core, at most 4, none on a single core;
   * used for regions of 128 MiB or more. Default when verifying (the device side): none, so that
   * memory stays flat in the archive size (each worker is an isolate of ~16 MiB plus its chunk),
   * and because on 2 cores the pool was slower than this thread alone (bench: 701 vs 828 MB/s).
   * An explicit count is used for every region of at least one 4 MiB chunk.
   */
  workers?: number;
}

export type ComputeHashTreeOptions = HashTreeCommon;

export interface VerifyHashTreeOptions extends HashTreeCommon {
  /** Size of the tree as recorded (must equal what the layout needs). */
  hashSize: number;
  rootHash: Buffer;
  /** Stops at the next chunk, rejecting with the signal's reason. */
  signal?: AbortSignal;
}

interface Geometry {
  layout: VerityLayout;
  hasher: BlockHasher;
  workers: number;
  poolMinBytes: number;
}

function geometry(code: ErrorCode, o: HashTreeCommon, defaultWorkers?: number): Geometry {
  const fail = (message: string): never => {
    throw new TiuError(code, `verity: ${message}`, { hint: code === 'ARCHIVE_VERITY' ? 'the archive is corrupt or not a tiu archive' : undefined });
  };
  if (!Number.isSafeInteger(o.dataSize) || o.dataSize <= 0 || o.dataSize % VERITY_BLOCK_SIZE !== 0) {
    fail(`data size ${o.dataSize} is not a positive multiple of ${VERITY_BLOCK_SIZE}`);
  }
  if (!Number.isSafeInteger(o.hashOffset) || o.hashOffset % VERITY_BLOCK_SIZE !== 0 || o.hashOffset < o.dataSize) {
    fail(`hash offset ${o.hashOffset} is not a multiple of ${VERITY_BLOCK_SIZE} at or after the data (${o.dataSize} bytes)`);
  }
  if (!Buffer.isBuffer(o.salt) || o.salt.length > MAX_SALT) fail(`salt must be at most ${MAX_SALT} bytes`);
  const auto = availableParallelism() > 1 ? Math.min(availableParallelism(), MAX_WORKERS) : 0;
  const workers = o.workers ?? defaultWorkers ?? auto;
  if (!Number.isInteger(workers) || workers < 0) throw new TiuError('INTERNAL', `verity: invalid worker count ${workers}`);
  return {
    layout: verityLayout(o.dataSize / VERITY_BLOCK_SIZE),
    hasher: createBlockHasher(o.salt, VERITY_BLOCK_SIZE),
    workers,
    poolMinBytes: o.workers === undefined ? AUTO_POOL_MIN_BYTES : CHUNK_SIZE,
  };
}

/** Hands out one lazily started pool for the regions big enough for it; disposing terminates it. */
function pools(fh: FileHandle, g: Geometry, salt: Buffer): { for(region: Region): HashPool | undefined } & AsyncDisposable {
  let pool: HashPool | undefined;
  return {
    for(region) {
      if (g.workers === 0 || region.blocks * VERITY_BLOCK_SIZE < g.poolMinBytes) return undefined;
      pool ??= createHashPool({ fd: fh.fd, salt, blockSize: VERITY_BLOCK_SIZE, chunkSize: CHUNK_SIZE }, g.workers);
      return pool;
    },
    async [Symbol.asyncDispose]() {
      await pool?.close();
    },
  };
}

function progress(o: HashTreeCommon, total: number): (bytes: number) => void {
  let done = 0;
  return (bytes) => {
    done += bytes;
    o.onProgress?.(done, total);
  };
}

/**
 * Computes the hash tree over `[0, dataSize)` of the open file and writes it at
 * `[hashOffset, hashOffset + hashSize)` of the same file (extending it if needed; later bytes are
 * left alone). Level 0 is written in chunks, and each higher level is computed by reading back the
 * level below. Throws INPUT_INVALID on a bad geometry, ARCHIVE_TRUNCATED if the data is short.
 */
export async function computeHashTree(fh: FileHandle, o: ComputeHashTreeOptions): Promise<{ rootHash: Buffer; hashSize: number }> {
  const g = geometry('INPUT_INVALID', o);
  const { layout } = g;
  const tick = progress(o, o.dataSize + layout.size);
  await using pool = pools(fh, g, o.salt);
  let below: Region = { position: 0, blocks: layout.dataBlocks };
  for (const level of [...layout.levels].reverse()) {
    const at = o.hashOffset + level.offset;
    const sink = fileDigestSink(fh, at);
    for await (const chunk of digestRegion(fh, below, { hasher: g.hasher, blockSize: VERITY_BLOCK_SIZE, pool: pool.for(below) })) {
      await sink.write(chunk.digests);
      tick(chunk.count * VERITY_BLOCK_SIZE);
    }
    const written = await sink.flush();
    const levelBytes = level.blocks * VERITY_BLOCK_SIZE;
    if (written < levelBytes) await writeFully(fh, Buffer.alloc(levelBytes - written), at + written);
    below = { position: at, blocks: level.blocks };
  }
  // `below` is now one block: the top hash block, or the only data block when there is no tree.
  const top = Buffer.allocUnsafe(VERITY_BLOCK_SIZE);
  await readFully(fh, top, VERITY_BLOCK_SIZE, below.position);
  tick(VERITY_BLOCK_SIZE);
  return { rootHash: g.hasher.digest(top), hashSize: layout.size };
}

function mismatch(what: string, offset: number, against: string, details: Record<string, unknown>): TiuError {
  return new TiuError('ARCHIVE_VERITY', `verity: ${what} (byte offset ${offset}) does not match ${against}`, {
    hint: 'the archive is corrupt or was tampered with; download it again',
    details: { ...details, offset },
  });
}

/** Zero bytes after the last digest of a level, as veritysetup writes them. */
async function checkPadding(fh: FileHandle, o: VerifyHashTreeOptions, layout: VerityLayout, level: VerityLevel): Promise<void> {
  const used = (level.digests - (level.blocks - 1) * layout.hashesPerBlock) * SHA256_SIZE;
  if (used === VERITY_BLOCK_SIZE) return;
  const position = o.hashOffset + level.offset + (level.blocks - 1) * VERITY_BLOCK_SIZE;
  const block = Buffer.allocUnsafe(VERITY_BLOCK_SIZE);
  await readFully(fh, block, VERITY_BLOCK_SIZE, position);
  const bad = block.subarray(used).findIndex((b) => b !== 0);
  if (bad >= 0) {
    throw new TiuError('ARCHIVE_VERITY', `verity: hash block ${level.blocks - 1} of level ${level.level} (byte offset ${position}) has non-zero padding at byte ${position + used + bad}`, {
      hint: 'the archive is corrupt or was tampered with; download it again',
      details: { kind: 'hash', level: level.level, block: level.blocks - 1, offset: position },
    });
  }
}

/**
 * Hashes every block of `region` and compares it with `expected`. `name(i)` names block i for
 * the error; `against` names where the expected digests come from.
 */
async function verifyRegion(
  fh: FileHandle, g: Geometry, pool: HashPool | undefined, region: Region, expected: DigestSource,
  name: (i: number) => { what: string; details: Record<string, unknown> }, against: string, tick: (bytes: number) => void, signal: AbortSignal | undefined,
): Promise<void> {
  for await (const chunk of digestRegion(fh, region, { hasher: g.hasher, blockSize: VERITY_BLOCK_SIZE, pool })) {
    signal?.throwIfAborted();
    const want = await expected.take(chunk.digests.length);
    if (!chunk.digests.equals(want)) {
      let k = 0;
      while (chunk.digests.compare(want, k * SHA256_SIZE, (k + 1) * SHA256_SIZE, k * SHA256_SIZE, (k + 1) * SHA256_SIZE) === 0) k++;
      const i = chunk.first + k;
      const n = name(i);
      throw mismatch(n.what, region.position + i * VERITY_BLOCK_SIZE, against, { ...n.details, block: i });
    }
    tick(chunk.count * VERITY_BLOCK_SIZE);
  }
}

/**
 * Verifies every hash block (top level first, against the root hash) and then every data block
 * of the file against the tree, and that the tree is canonical: exactly the layout's size, zero
 * padding. Resolves if all match; otherwise throws ARCHIVE_VERITY naming the first block that
 * does not (top-down, so a damaged hash block is blamed rather than the data below it), or
 * ARCHIVE_TRUNCATED if the file is too short. Reads only; memory stays at a few chunks.
 */
export async function verifyHashTree(fh: FileHandle, o: VerifyHashTreeOptions): Promise<void> {
  const g = geometry('ARCHIVE_VERITY', o, 0);
  const { layout } = g;
  if (o.hashSize !== layout.size) {
    throw new TiuError('ARCHIVE_VERITY', `verity: hash tree size ${o.hashSize} is not the ${layout.size} bytes that ${layout.dataBlocks} data blocks need`, {
      hint: 'the archive is corrupt or not a tiu archive',
    });
  }
  if (!Buffer.isBuffer(o.rootHash) || o.rootHash.length !== SHA256_SIZE) {
    throw new TiuError('ARCHIVE_VERITY', `verity: root hash must be ${SHA256_SIZE} bytes`, { hint: 'the archive is corrupt or not a tiu archive' });
  }
  const tick = progress(o, o.dataSize + layout.size);
  await using pool = pools(fh, g, o.salt);
  let expected: DigestSource = memoryDigests(o.rootHash);
  let against = 'the root hash';
  for (const level of layout.levels) {
    await checkPadding(fh, o, layout, level);
    const region = { position: o.hashOffset + level.offset, blocks: level.blocks };
    const name = (i: number) => ({ what: `hash block ${i} of level ${level.level}`, details: { kind: 'hash', level: level.level } });
    await verifyRegion(fh, g, pool.for(region), region, expected, name, against, tick, o.signal);
    expected = fileDigests(fh, region.position, level.digests * SHA256_SIZE);
    against = 'the hash tree';
  }
  const data = { position: 0, blocks: layout.dataBlocks };
  await verifyRegion(fh, g, pool.for(data), data, expected, (i) => ({ what: `data block ${i}`, details: { kind: 'data' } }), against, tick, o.signal);
}
