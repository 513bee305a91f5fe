/**
 * bsdiff patches split into their three streams, and a streaming bspatch.
 *
 * A BSDIFF40 file (Debian's `bsdiff`) is a 32-byte header and three bzip2 blocks: control
 * (triples x, y, z of 8-byte sign-magnitude integers: add x diff bytes to x old bytes, copy y
 * extra bytes, move the old position by z), diff and extra. A delta carries the three streams of
 * all its bsdiff files concatenated, each stream compressed once across files (as OSTree's xz
 * parts do): the diff streams of many binaries share a lot, per-file bzip2 does not see it.
 *
 * {@link bspatchStream} rebuilds one file from its slices of the three streams and random reads of
 * the old file, in bounded memory (1 MiB chunks); the old file is never held whole.
 */
import type { FileHandle } from 'node:fs/promises';
import { TiuError } from '../errors.ts';

export const BSDIFF_MAGIC = 'BSDIFF40';
const CTRL_TRIPLE = 24;
const CHUNK = 1024 * 1024;

/** Decodes bsdiff's 8-byte sign-magnitude little-endian integer. */
export function offtin(b: Buffer, at: number): number {
  const lo = b.readUInt32LE(at);
  const hi = b.readUInt32LE(at + 4);
  const mag = (hi & 0x7fffffff) * 0x1_0000_0000 + lo;
  if (mag > Number.MAX_SAFE_INTEGER) throw corrupt('a bsdiff control value is out of range');
  return hi & 0x80000000 ? -mag : mag;
}

function corrupt(message: string): TiuError {
  return new TiuError('DELTA_CORRUPT', message, { hint: 'the delta is damaged; use the full image' });
}

/** The three compressed blocks of a BSDIFF40 file and the new file's size. */
export function splitBsdiff40(p: Buffer): { newSize: number; ctrl: Buffer; diff: Buffer; extra: Buffer } {
  if (p.length < 32 || p.subarray(0, 8).toString('latin1') !== BSDIFF_MAGIC) throw new Error('not a BSDIFF40 patch');
  const cl = offtin(p, 8);
  const dl = offtin(p, 16);
  const newSize = offtin(p, 24);
  if (cl < 0 || dl < 0 || newSize < 0 || 32 + cl + dl > p.length) throw new Error('malformed BSDIFF40 header');
  return { newSize, ctrl: p.subarray(32, 32 + cl), diff: p.subarray(32 + cl, 32 + cl + dl), extra: p.subarray(32 + cl + dl) };
}

/** Where one file's slices lie in the three decompressed streams. */
export interface BsdiffSlices {
  ctrl: { fh: FileHandle; offset: number; length: number };
  diff: { fh: FileHandle; offset: number; length: number };
  extra: { fh: FileHandle; offset: number; length: number };
}

async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  for (let done = 0; done < length; ) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw corrupt('a bsdiff stream ended early');
    done += bytesRead;
  }
}

/**
 * Yields the new file built from `old` (random reads; bytes outside it count as zero, as in
 * bspatch) and the file's slices of the three streams. Throws DELTA_CORRUPT unless the control
 * triples consume exactly the slices and produce exactly `newSize` bytes.
 */
export async function* bspatchStream(old: FileHandle, oldSize: number, s: BsdiffSlices, newSize: number): AsyncGenerator<Uint8Array> {
  if (s.ctrl.length % CTRL_TRIPLE !== 0) throw corrupt('a bsdiff control slice is not whole triples');
  const ctrl = Buffer.alloc(Math.min(s.ctrl.length, CHUNK - (CHUNK % CTRL_TRIPLE)));
  let ctrlDone = 0;
  let ctrlHave = 0;
  let ctrlAt = 0;
  let newPos = 0;
  let oldPos = 0;
  let diffPos = 0;
  let extraPos = 0;
  const oldBuf = Buffer.alloc(Math.min(CHUNK, Math.max(1, newSize)));
  while (ctrlDone < s.ctrl.length) {
    if (ctrlAt === ctrlHave) {
      ctrlHave = Math.min(ctrl.length, s.ctrl.length - ctrlDone);
      await readFully(s.ctrl.fh, ctrl, ctrlHave, s.ctrl.offset + ctrlDone);
      ctrlAt = 0;
    }
    const x = offtin(ctrl, ctrlAt);
    const y = offtin(ctrl, ctrlAt + 8);
    const z = offtin(ctrl, ctrlAt + 16);
    ctrlAt += CTRL_TRIPLE;
    ctrlDone += CTRL_TRIPLE;
    if (x < 0 || y < 0 || newPos + x + y > newSize || diffPos + x > s.diff.length || extraPos + y > s.extra.length) throw corrupt('a bsdiff control triple is out of bounds');
    for (let left = x; left > 0; ) {
      const n = Math.min(CHUNK, left);
      const out = Buffer.allocUnsafe(n);
      await readFully(s.diff.fh, out, n, s.diff.offset + diffPos);
      // The old bytes under this run (those outside the old file add nothing).
      const from = Math.max(0, oldPos);
      const to = Math.min(oldSize, oldPos + n);
      if (to > from) {
        await readFully(old, oldBuf, to - from, from);
        for (let i = from; i < to; i++) out[i - oldPos] = (out[i - oldPos]! + oldBuf[i - from]!) & 0xff;
      }
      yield out;
      diffPos += n;
      oldPos += n;
      left -= n;
    }
    for (let left = y; left > 0; ) {
      const n = Math.min(CHUNK, left);
      const out = Buffer.allocUnsafe(n);
      await readFully(s.extra.fh, out, n, s.extra.offset + extraPos);
      yield out;
      extraPos += n;
      left -= n;
    }
    newPos += x + y;
    oldPos += z;
  }
  if (newPos !== newSize || diffPos !== s.diff.length || extraPos !== s.extra.length) throw corrupt('a bsdiff patch does not produce the file it describes');
}
