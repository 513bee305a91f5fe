/**
 * Little-endian 32-bit reads and writes by element, for the device's hot loops (ELF prediction,
 * bspatch). A delta runs on V8's mid-tier compiler (see v8tuning.ts), which boxes the
 * floating-point results of Buffer's readUInt32LE/writeUInt32LE family as heap numbers: ~100 MB
 * of garbage for the 21 ELF files of a Debian update. Callers keep `at` within the buffer.
 */

export function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

export function i32(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24);
}

/** Writes the low 32 bits of `v` (an integer in [-2^31, 2^32)), as writeUInt32LE/writeInt32LE do in their ranges. */
export function put32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}
