/**
 * The archive's byte layout (see docs/archive-format.md). Pure: no I/O.
 *
 *   [0, dataSize)                    squashfs image, zero-padded to a multiple of 4096 (verity data)
 *   [hashOffset, hashOffset+hashSize) dm-verity hash tree, no superblock (hashOffset = dataSize)
 *   [sigOffset, sigOffset+sigSize)   CMS SignedData (DER) with the manifest embedded
 *   [fileSize-8, fileSize)           sigSize as unsigned 64-bit big-endian
 */
import { TiuError } from '../../core/errors.ts';
import { readSuperblock, SUPERBLOCK_SIZE } from '../../squashfs/superblock.ts';
import { verityLayout } from '../verity/layout.ts';

export const TRAILER_SIZE = 8;
export const MAX_SIGNATURE_SIZE = 64 * 1024;
export const BLOCK = 4096;

export interface SignatureLocation {
  sigOffset: number;
  sigSize: number;
}

/** Reads the trailer and locates the signature, rejecting every impossible value. */
export function locateSignature(fileSize: number, trailer: Buffer): SignatureLocation {
  if (fileSize < BLOCK + TRAILER_SIZE) {
    throw new TiuError('ARCHIVE_TRUNCATED', `archive is only ${fileSize} bytes, too small to be a tiu archive`, { hint: 'the file is truncated or not an archive; download it again' });
  }
  if (trailer.length !== TRAILER_SIZE) throw new TiuError('ARCHIVE_TRUNCATED', 'archive trailer could not be read', { hint: 'download the archive again' });
  const size = trailer.readBigUInt64BE(0);
  if (size === 0n) throw new TiuError('ARCHIVE_FORMAT', 'archive trailer gives a signature size of 0: the archive is not signed', { hint: 'use an archive made by tiu create' });
  if (size > BigInt(MAX_SIGNATURE_SIZE)) {
    throw new TiuError('ARCHIVE_FORMAT', `archive trailer gives a signature size of ${size} bytes, more than the ${MAX_SIGNATURE_SIZE} allowed`, { hint: 'the file is corrupt or not a tiu archive' });
  }
  const sigSize = Number(size);
  if (sigSize > fileSize - TRAILER_SIZE) {
    throw new TiuError('ARCHIVE_TRUNCATED', `archive trailer points ${sigSize} bytes back, outside the ${fileSize}-byte file`, { hint: 'the file is truncated or corrupt; download it again' });
  }
  const sigOffset = fileSize - TRAILER_SIZE - sigSize;
  if (sigOffset % BLOCK !== 0 || sigOffset < BLOCK) {
    throw new TiuError('ARCHIVE_TRUNCATED', `archive signature starts at byte ${sigOffset}, which is not 4096-aligned after the image`, { hint: 'the file is truncated or corrupt; download it again' });
  }
  return { sigOffset, sigSize };
}

export function encodeTrailer(sigSize: number): Buffer {
  const b = Buffer.alloc(TRAILER_SIZE);
  b.writeBigUInt64BE(BigInt(sigSize));
  return b;
}

export function padTo(n: number, block = BLOCK): number {
  return Math.ceil(n / block) * block;
}

/**
 * The smallest size a complete archive starting with `head` (its first bytes) can have: the
 * squashfs image (its superblock's bytes_used, padded), the verity tree over it, a signature of
 * at least one byte and the trailer. Undefined when `head` is no valid squashfs superblock.
 * Lets a reader say "truncated" instead of reporting whatever image bytes ended up where the
 * trailer should be. Pure.
 */
export function minimumArchiveSize(head: Buffer): number | undefined {
  if (head.length < SUPERBLOCK_SIZE) return undefined;
  let bytesUsed: number;
  try {
    bytesUsed = readSuperblock(head).bytesUsed;
  } catch {
    return undefined;
  }
  const dataSize = padTo(bytesUsed);
  return dataSize + verityLayout(dataSize / BLOCK).size + 1 + TRAILER_SIZE;
}

/** ARCHIVE_TRUNCATED when a file of `fileSize` bytes is shorter than `head` says it must be. */
export function checkTruncated(fileSize: number, head: Buffer): void {
  const min = minimumArchiveSize(head);
  if (min !== undefined && fileSize < min) {
    throw new TiuError('ARCHIVE_TRUNCATED', `archive is truncated (${fileSize} of at least ${min} bytes)`, { hint: 'download it again' });
  }
}
