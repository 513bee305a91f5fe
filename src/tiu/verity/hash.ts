/**
 * Salted block hashing as dm-verity format version 1 does it: digest = sha256(salt || block).
 *
 * Per-call overhead, not the copy of 4 KiB, is what separates Node from `openssl speed`, and
 * most of it is making the result: one-shot `crypto.hash` costs ~1-1.5 µs more per call when it
 * returns a Buffer than when it returns a 'binary' (latin1) string, a one-byte string V8 makes
 * cheaply, for a 4096-byte block that takes ~2.5 µs to hash. So the bulk path asks for a binary
 * string and writes its 32 characters straight into the digest list as latin1 (one byte per
 * character: exact for every byte value). Measured on this machine (Node 24, 4096-byte blocks,
 * one core): 1,410-1,490 MB/s, against 1,076 MB/s with Buffer results and 1,543-1,649 MB/s for
 * `openssl speed` (87-93%).
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
      const dst = Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.byteLength);
      for (let i = 0; i < count; i++) {
        scratch.set(src.subarray(i * blockSize, (i + 1) * blockSize), salt.length);
        dst.write(hash('sha256', scratch, 'binary'), outOffset + i * SHA256_SIZE, SHA256_SIZE, 'latin1');
      }
    },
  };
}
