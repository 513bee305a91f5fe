/**
 * Geometry of a dm-verity hash tree (format version 1, no superblock). Pure: no I/O.
 *
 * Checked against `veritysetup format --no-superblock` of cryptsetup 2.6.1:
 * - Level 0 holds the digests of the data blocks, level 1 the digests of level 0's hash blocks,
 *   and so on up to a top level of exactly one hash block. The root hash is the digest of that
 *   top block and is not stored in the tree.
 * - On disk the top level comes first and level 0 last, each level a whole number of hash blocks;
 *   the last block of each level is padded with zeros after its digests.
 * - With a single data block there is no tree at all (size 0): the root hash is the digest of
 *   that data block.
 */
import { TiuError } from '../../core/errors.ts';

export const VERITY_BLOCK_SIZE = 4096;
export const SHA256_SIZE = 32;

export interface VerityLevel {
  /** 0 = the level holding the data blocks' digests; the highest number is the top (one block). */
  level: number;
  /** Hash blocks in this level. */
  blocks: number;
  /** Byte offset of the level within the hash tree region. */
  offset: number;
  /** Digests stored in this level (= blocks of the level below, or data blocks for level 0). */
  digests: number;
}

export interface VerityLayout {
  dataBlocks: number;
  hashBlockSize: number;
  /** Bytes per digest slot: the digest size rounded up to a power of two (format version 1). */
  slotSize: number;
  hashesPerBlock: number;
  /** Top level first, as stored on disk; empty when there is a single data block. */
  levels: VerityLevel[];
  /** Total size of the hash tree in bytes. */
  size: number;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Computes where each level of the hash tree over `dataBlocks` data blocks lives and how big the
 * tree is. Throws INTERNAL on impossible arguments (callers validate untrusted sizes first).
 */
export function verityLayout(dataBlocks: number, options: { hashBlockSize?: number; digestSize?: number } = {}): VerityLayout {
  const hashBlockSize = options.hashBlockSize ?? VERITY_BLOCK_SIZE;
  const digestSize = options.digestSize ?? SHA256_SIZE;
  if (!Number.isSafeInteger(dataBlocks) || dataBlocks < 1) {
    throw new TiuError('INTERNAL', `verity layout: ${dataBlocks} is not a positive number of data blocks`);
  }
  if (!isPowerOfTwo(hashBlockSize) || hashBlockSize < 512) {
    throw new TiuError('INTERNAL', `verity layout: hash block size ${hashBlockSize} is not a power of two of at least 512`);
  }
  // Format 1 stores each digest in a power-of-two slot, as the kernel indexes hashes with shifts.
  const slotSize = nextPowerOfTwo(digestSize);
  if (!Number.isSafeInteger(digestSize) || digestSize < 1 || slotSize * 2 > hashBlockSize) {
    throw new TiuError('INTERNAL', `verity layout: digest size ${digestSize} does not fit twice in a ${hashBlockSize}-byte hash block`);
  }
  const hashesPerBlock = hashBlockSize / slotSize;

  const bottomUp: { blocks: number; digests: number }[] = [];
  for (let below = dataBlocks; below > 1; ) {
    const blocks = Math.ceil(below / hashesPerBlock);
    bottomUp.push({ blocks, digests: below });
    below = blocks;
  }
  const levels: VerityLevel[] = [];
  let offset = 0;
  for (let level = bottomUp.length - 1; level >= 0; level--) {
    const l = bottomUp[level]!;
    levels.push({ level, blocks: l.blocks, offset, digests: l.digests });
    offset += l.blocks * hashBlockSize;
  }
  return { dataBlocks, hashBlockSize, slotSize, hashesPerBlock, levels, size: offset };
}
