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
 * the old file, in bounded memory (256 KiB chunks); an old file on disk is never held whole (an
 * ELF prediction, made in memory, is patched from there).
 */
import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import { bufferPool } from '../../core/bufferpool.ts';
import { u32 } from './le.ts';

export const BSDIFF_MAGIC = 'BSDIFF40';
const CTRL_TRIPLE = 24;
/**
 * Window and output chunk size. The buffers are reused from one patched file to the next (a
 * delta patches hundreds of files, most of them small): a fresh set per file made ~2 GB of
 * short-lived buffers for a Debian update, which kept the garbage collector busy and the RSS
 * high with memory freed but not yet returned.
 */
const CHUNK = 256 * 1024;
/** Spare buffers kept: five per patch (three streams, the old file, the output) at four at once. */
const BUFFERS = bufferPool(CHUNK, 20);

/** Lets go of the spare buffers kept for the next patch (up to 5 MiB), once the apply step is over. */
export function releaseBspatchBuffers(): void {
  BUFFERS.drain();
}

/** Decodes bsdiff's 8-byte sign-magnitude little-endian integer. */
export function offtin(b: Buffer, at: number): number {
  if (at < 0 || at + 8 > b.length) throw new RangeError(`offtin: no 8 bytes at ${at} of ${b.length}`);
  // (by element, le.ts: Buffer's readUInt32LE boxes its result on the tier a delta runs on)
  const lo = u32(b, at);
  const hi = u32(b, at + 4);
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

function readFully(fd: number, buf: Buffer, length: number, position: number): void {
  for (let done = 0; done < length; ) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw corrupt('a bsdiff stream ended early');
    done += n;
  }
}

/**
 * out[o + k] += src[s + k] (mod 256) for k < n: bsdiff's "add old bytes to the diff bytes". Most
 * of a patched binary is such runs. Plain element accesses, four per step: V8's mid-tier compiler
 * (Maglev, which a delta runs on: see v8tuning.ts) makes them tight, whereas a DataView's
 * four-bytes-at-a-time version took it 5× as long (23 ms with TurboFan, 118 ms with Maglev, 36 ms
 * this way, for 20 MB in bsdiff-sized runs).
 */
export function addBytes(out: Uint8Array, o: number, src: Uint8Array, s: number, n: number): void {
  let k = 0;
  for (; k + 4 <= n; k += 4) {
    out[o + k] = out[o + k]! + src[s + k]!;
    out[o + k + 1] = out[o + k + 1]! + src[s + k + 1]!;
    out[o + k + 2] = out[o + k + 2]! + src[s + k + 2]!;
    out[o + k + 3] = out[o + k + 3]! + src[s + k + 3]!;
  }
  for (; k < n; k++) out[o + k] = out[o + k]! + src[s + k]!;
}

/**
 * Sequential reads of one slice through a buffer: bsdiff makes many short runs, and one
 * positional read per run would cost a system call each. Synchronous: the slices are files tiu
 * unpacked a moment ago, and a promise per control triple cost more than the patching.
 */
class SliceReader {
  private buf: Buffer;
  private bufStart = 0;
  private bufLen = 0;
  private pos = 0;
  private readonly fd: number;
  private readonly offset: number;
  private readonly length: number;
  constructor(fh: FileHandle, offset: number, length: number) {
    this.fd = fh.fd;
    this.offset = offset;
    this.length = length;
    this.buf = BUFFERS.take();
  }

  release(): void {
    BUFFERS.give(this.buf);
  }

  /** Copies the next `n` bytes into `out` at `at`. */
  read(out: Buffer, at: number, n: number): void {
    if (this.pos + n > this.length) throw corrupt('a bsdiff stream slice ended early');
    while (n > 0) {
      if (this.pos >= this.bufStart + this.bufLen) {
        this.bufStart = this.pos;
        this.bufLen = Math.min(this.buf.length, this.length - this.pos);
        readFully(this.fd, this.buf, this.bufLen, this.offset + this.pos);
      }
      const from = this.pos - this.bufStart;
      const k = Math.min(n, this.bufLen - from);
      this.buf.copy(out, at, from, from + k);
      this.pos += k;
      at += k;
      n -= k;
    }
  }
}

/** How far before a needed position a reloaded window starts. */
const BACKOFF = 64 * 1024;

/** Random reads of the old file through a window (bsdiff's old position mostly moves forward). */
class WindowReader {
  private buf: Buffer;
  private start = 0;
  private len = 0;
  private readonly fd: number;
  private readonly size: number;
  constructor(fh: FileHandle, size: number) {
    this.fd = fh.fd;
    this.size = size;
    this.buf = BUFFERS.take();
  }

  release(): void {
    BUFFERS.give(this.buf);
  }

  /** Adds old bytes [pos, pos+n) ∩ [0, size) onto out[at…] (positions outside add nothing, as in bspatch). */
  addInto(out: Buffer, at: number, pos: number, n: number): void {
    let i = Math.max(0, pos);
    const end = Math.min(this.size, pos + n);
    while (i < end) {
      if (i < this.start || i >= this.start + this.len) {
        // A little before i: bsdiff often steps back a few bytes, which would reload the window.
        this.start = Math.max(0, i - BACKOFF);
        this.len = Math.min(this.buf.length, this.size - this.start);
        readFully(this.fd, this.buf, this.len, this.start);
      }
      const stop = Math.min(end, this.start + this.len);
      addBytes(out, at + i - pos, this.buf, i - this.start, stop - i);
      i = stop;
    }
  }
}

/** The old file already in memory (an ELF prediction): added from directly, no reads. */
class MemoryOld {
  private readonly b: Uint8Array;
  constructor(b: Uint8Array) {
    this.b = b;
  }

  release(): void {}

  /** As {@link WindowReader.addInto}. */
  addInto(out: Buffer, at: number, pos: number, n: number): void {
    const start = Math.max(0, pos);
    const end = Math.min(this.b.length, pos + n);
    if (end > start) addBytes(out, at + start - pos, this.b, start, end - start);
  }
}

/**
 * Yields the new file built from `old` (a file read by window, or bytes in memory; bytes outside
 * it count as zero, as in bspatch) and the file's slices of the three streams. Each chunk is valid until the next one is
 * asked for (one buffer is reused): copy it to keep it. Throws DELTA_CORRUPT unless the control
 * triples consume exactly the slices and produce exactly `newSize` bytes. The patching itself is
 * synchronous (one output chunk at a time), the consumer's writes are not.
 */
export async function* bspatchStream(old: FileHandle | Uint8Array, oldSize: number, s: BsdiffSlices, newSize: number): AsyncGenerator<Uint8Array> {
  if (s.ctrl.length % CTRL_TRIPLE !== 0) throw corrupt('a bsdiff control slice is not whole triples');
  const ctrl = new SliceReader(s.ctrl.fh, s.ctrl.offset, s.ctrl.length);
  const diff = new SliceReader(s.diff.fh, s.diff.offset, s.diff.length);
  const extra = new SliceReader(s.extra.fh, s.extra.offset, s.extra.length);
  const oldFile = old instanceof Uint8Array ? new MemoryOld(old.subarray(0, Math.min(oldSize, old.length))) : new WindowReader(old, oldSize);
  // Output is gathered into chunks (short runs are many), one buffer reused: the consumer is done
  // with a chunk before it asks for the next.
  const out = BUFFERS.take();
  try {
    for (const chunk of patch(ctrl, diff, extra, oldFile, out, s, newSize)) yield chunk;
  } finally {
    for (const r of [ctrl, diff, extra, oldFile]) r.release();
    BUFFERS.give(out);
  }
}

function* patch(ctrl: SliceReader, diff: SliceReader, extra: SliceReader, oldFile: WindowReader | MemoryOld, out: Buffer, s: BsdiffSlices, newSize: number): Generator<Uint8Array> {
  const triple = Buffer.alloc(CTRL_TRIPLE);
  let outLen = 0;
  let newPos = 0;
  let oldPos = 0;
  let diffPos = 0;
  let extraPos = 0;
  for (let done = 0; done < s.ctrl.length; done += CTRL_TRIPLE) {
    ctrl.read(triple, 0, CTRL_TRIPLE);
    const x = offtin(triple, 0);
    const y = offtin(triple, 8);
    const z = offtin(triple, 16);
    if (x < 0 || y < 0 || newPos + x + y > newSize || diffPos + x > s.diff.length || extraPos + y > s.extra.length) throw corrupt('a bsdiff control triple is out of bounds');
    // x diff bytes (added to old bytes), then y extra bytes, in output chunks.
    for (let left = x + y; left > 0; ) {
      if (outLen === out.length) {
        yield out;
        outLen = 0;
      }
      const inDiff = left > y;
      const n = Math.min(inDiff ? left - y : left, out.length - outLen);
      if (inDiff) {
        diff.read(out, outLen, n);
        oldFile.addInto(out, outLen, oldPos, n);
        diffPos += n;
        oldPos += n;
      } else {
        extra.read(out, outLen, n);
        extraPos += n;
      }
      outLen += n;
      newPos += n;
      left -= n;
    }
    oldPos += z;
  }
  if (outLen > 0) yield out.subarray(0, outLen);
  if (newPos !== newSize || diffPos !== s.diff.length || extraPos !== s.extra.length) throw corrupt('a bsdiff patch does not produce the file it describes');
}

/** Most control bytes (24 per triple) a delta's control stream may unpack to: it is decoded in memory. */
export const MAX_CTRL_BYTES = 64 * 1024 * 1024;

function putVarint(out: number[], v: bigint): void {
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

/**
 * The control stream as it travels: the triples' x, y and z as three columns of LEB128 varints
 * (sign folded into the lowest bit), so that xz sees like numbers together and no run of sign
 * and high zero bytes (about 15 % smaller than the raw 24-byte triples once compressed).
 */
export function encodeCtrl(raw: Buffer): Buffer {
  if (raw.length % CTRL_TRIPLE !== 0) throw new Error('bsdiff control stream is not whole triples');
  const cols: number[][] = [[], [], []];
  for (let at = 0; at < raw.length; at += CTRL_TRIPLE) {
    for (let k = 0; k < 3; k++) {
      const lo = BigInt(raw.readUInt32LE(at + 8 * k));
      const hi = BigInt(raw.readUInt32LE(at + 8 * k + 4));
      const mag = ((hi & 0x7fffffffn) << 32n) | lo;
      putVarint(cols[k]!, (mag << 1n) | (hi >> 31n));
    }
  }
  return Buffer.from([...cols[0]!, ...cols[1]!, ...cols[2]!]);
}

/** Inverse of {@link encodeCtrl} for `triples` triples; DELTA_CORRUPT unless `enc` is exactly that. */
export function decodeCtrl(enc: Buffer, triples: number): Buffer {
  if (triples * CTRL_TRIPLE > MAX_CTRL_BYTES) throw corrupt('the bsdiff control stream is too large');
  const raw = Buffer.alloc(triples * CTRL_TRIPLE);
  let at = 0;
  for (let k = 0; k < 3; k++) {
    for (let t = 0; t < triples; t++) {
      let v = 0n;
      let shift = 0n;
      for (;;) {
        if (at >= enc.length || shift > 63n) throw corrupt('the bsdiff control stream is malformed');
        const b = enc[at++]!;
        v |= BigInt(b & 0x7f) << shift;
        shift += 7n;
        if (b < 0x80) break;
      }
      const mag = v >> 1n;
      if (mag > 0x7fffffff_ffffffffn) throw corrupt('a bsdiff control value is out of range');
      const o = t * CTRL_TRIPLE + 8 * k;
      raw.writeUInt32LE(Number(mag & 0xffffffffn), o);
      raw.writeUInt32LE((Number(mag >> 32n) | (Number(v & 1n) << 31)) >>> 0, o + 4);
    }
  }
  if (at !== enc.length) throw corrupt('the bsdiff control stream has bytes past its triples');
  return raw;
}
