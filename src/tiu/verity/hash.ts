/**
 * Salted block hashing as dm-verity format version 1 does it: digest = sha256(salt || block).
 *
 * Measured on this machine (Node 24, 4096-byte blocks, one core): one-shot `crypto.hash` over a
 * reused salt||block buffer 1179 MB/s; `createHash().update(salt).update(block).digest()`
 * 1083 MB/s; `copy()` of a pre-salted hash state 1055 MB/s. The one-shot wins: per-call
 * overhead (~0.7 µs), not the copy of 4 KiB, is what separates Node from `openssl speed`.
 */
import { hash } from 'node:crypto';
import { SHA256_SIZE } from './layout.ts';

export interface BlockHasher {
  /** Digest of one block (must be exactly blockSize bytes). */
  digest(block: Uint8Array): Buffer;
  /** Hashes every block of `src` (a multiple of blockSize) into `out`, 32 bytes each, from `outOffset`. */
  digestAll(src: Uint8Array, out: Uint8Array, outOffset?: number): void;
}

export function createBlockHasher(salt: Uint8Array, blockSize: number): BlockHasher {
  // One buffer reused for every block: the salt stays in front, each block is copied behind it.
  const scratch = Buffer.alloc(salt.length + blockSize);
  scratch.set(salt, 0);
  const digest = (block: Uint8Array): Buffer => {
    scratch.set(block, salt.length);
    return hash('sha256', scratch, 'buffer');
  };
  return {
    digest(block) {
      if (block.length !== blockSize) throw new RangeError(`block of ${block.length} bytes, expected ${blockSize}`);
      return digest(block);
    },
    digestAll(src, out, outOffset = 0) {
      const count = src.length / blockSize;
      if (!Number.isInteger(count) || outOffset + count * SHA256_SIZE > out.length) {
        throw new RangeError(`cannot hash ${src.length} bytes into ${out.length - outOffset} bytes of digests`);
      }
      for (let i = 0; i < count; i++) {
        out.set(digest(src.subarray(i * blockSize, (i + 1) * blockSize)), outOffset + i * SHA256_SIZE);
      }
    },
  };
}
