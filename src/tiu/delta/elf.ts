/**
 * The `bsdiff-elf` method's reference prediction for x86-64 ELF files (docs/delta-format.md).
 * Pure: buffers in, buffers out.
 *
 * A security update recompiles a library: a few functions change, everything after them moves, and
 * every address that points across a move changes — rel32 calls and jumps, RIP-relative loads,
 * relocation offsets and addends, symbol values, the unwind tables. bsdiff matches the code
 * anyway, but each changed address costs diff bytes (most of the diff stream: 353 k of 4.7 M bytes
 * of libcrypto). So before diffing, the old file is rewritten into a *prediction* of the new one:
 * every address it holds is moved as the old->new address map says. The map travels in the delta
 * (a few hundred segments); the device computes the same prediction from its old file and the map
 * and bspatches against it. Nothing needs undoing: the prediction is only a better reference, it
 * is deterministic on both sides, and the rebuilt file is hashed against the signed index.
 *
 * Everything here is bounds-checked: any part of the old file that does not parse is left as it is
 * (a worse reference, never a wrong file).
 */
import { TiuError } from '../../core/errors.ts';
import { i32, put32, u32 } from './le.ts';

/** `[start, length, shift]`: addresses (or symbol indexes) in [start, start+length) move by shift. */
export type Segment = [number, number, number];

/** The old->new maps a prediction needs: virtual addresses, and dynamic symbol indexes. */
export interface ElfMap {
  addr: Segment[];
  sym: Segment[];
}

export interface Section {
  name: string;
  type: number;
  flags: number;
  addr: number;
  off: number;
  size: number;
  entsize: number;
}

export interface Elf {
  /** PT_LOAD segments: file offset, virtual address, file size. */
  loads: { off: number; va: number; size: number }[];
  sections: Section[];
}

const SHT_SYMTAB = 2;
const SHT_RELA = 4;
const SHT_NOBITS = 8;
const SHT_DYNSYM = 11;
const SHF_ALLOC = 2;
const SHF_EXECINSTR = 4;
const SHF_TLS = 0x400;
const R_X86_64_JUMP_SLOT = 7;
const R_X86_64_RELATIVE = 8;
/** bsdiff matches shorter than this do not say where code moved (they are chance matches). */
const MIN_MATCH = 64;
/** Most segments a map may have (a device decodes it in memory). */
const MAX_SEGMENTS = 1 << 20;

function num(b: Buffer, at: number): number | undefined {
  if (at < 0 || at + 8 > b.length) return undefined;
  // Two 32-bit halves instead of a BigInt (this runs for every relocation and symbol):
  // at most 2^53 - 1 exactly when the high half is at most 2^21 - 1.
  const hi = u32(b, at + 4);
  if (hi === 0) return u32(b, at);
  return hi <= 0x1fffff ? hi * 0x1_0000_0000 + u32(b, at) : undefined;
}

/** The load segments and sections of a little-endian ELF64 x86-64 file, or undefined. */
export function parseElf(b: Buffer): Elf | undefined {
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1 || b.readUInt16LE(18) !== 62) return undefined;
  const phoff = num(b, 0x20);
  const shoff = num(b, 0x28);
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const shstrndx = b.readUInt16LE(0x3e);
  if (phoff === undefined || shoff === undefined || phentsize < 56 || shentsize < 64) return undefined;
  if (phoff + phnum * phentsize > b.length || shoff + shnum * shentsize > b.length || shstrndx >= shnum) return undefined;
  const loads: Elf['loads'] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (b.readUInt32LE(o) !== 1) continue;
    const off = num(b, o + 8);
    const va = num(b, o + 16);
    const size = num(b, o + 32);
    if (off !== undefined && va !== undefined && size !== undefined && off + size <= b.length) loads.push({ off, va, size });
  }
  const raw = Array.from({ length: shnum }, (_, i) => shoff + i * shentsize);
  const strOff = num(b, raw[shstrndx]! + 24) ?? b.length;
  const sections: Section[] = [];
  for (const o of raw) {
    const nameAt = strOff + b.readUInt32LE(o);
    const end = nameAt < b.length ? b.indexOf(0, nameAt) : -1;
    const [addr, off, size, entsize] = [num(b, o + 16), num(b, o + 24), num(b, o + 32), num(b, o + 56)];
    if (end < 0 || addr === undefined || off === undefined || size === undefined || entsize === undefined) continue;
    const type = b.readUInt32LE(o + 4);
    // (a section's file bytes must lie in the file; NOBITS ones have none)
    if (type !== SHT_NOBITS && off + size > b.length) continue;
    sections.push({ name: b.toString('latin1', nameAt, end), type, flags: Number(b.readBigUInt64LE(o + 8) & 0xffffffffn), addr, off, size, entsize });
  }
  return { loads, sections };
}

function offToVa(e: Elf, off: number): number | undefined {
  for (const l of e.loads) if (off >= l.off && off < l.off + l.size) return l.va + off - l.off;
  return undefined;
}

function vaToOff(e: Elf, va: number): number | undefined {
  // (an index loop: for-of allocated an iterator result per load segment on the device's tier)
  const loads = e.loads;
  for (let i = 0; i < loads.length; i++) {
    const l = loads[i]!;
    if (va >= l.va && va < l.va + l.size) return l.off + va - l.va;
  }
  return undefined;
}

/** Sorted, non-overlapping segments; adjacent ones with the same shift merged. */
function normalize(segs: Segment[]): Segment[] {
  const s = segs.filter((x) => x[1] > 0).sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  const out: Segment[] = [];
  for (const x of s) {
    const last = out[out.length - 1];
    if (last && x[0] < last[0] + last[1]) {
      // Overlap: the later start wins from there on (the earlier one keeps what precedes it).
      if (last[2] === x[2]) {
        last[1] = Math.max(last[1], x[0] + x[1] - last[0]);
        continue;
      }
      last[1] = x[0] - last[0];
      if (last[1] === 0) out.pop();
    }
    const prev = out[out.length - 1];
    if (prev && prev[2] === x[2] && prev[0] + prev[1] === x[0]) prev[1] += x[1];
    else out.push([x[0], x[1], x[2]]);
  }
  return out;
}

/**
 * Segments laid out for {@link lookupIn}: starts, ends and shifts in typed arrays (no pointer per
 * segment to follow), with the last hit remembered (code references mostly land near the
 * previous one).
 */
export interface SegmentTable {
  start: Float64Array;
  end: Float64Array;
  shift: Float64Array;
  last: number;
}

export function segmentTable(segs: readonly Segment[]): SegmentTable {
  const n = segs.length;
  const t: SegmentTable = { start: new Float64Array(n), end: new Float64Array(n), shift: new Float64Array(n), last: 0 };
  for (let i = 0; i < n; i++) {
    const s = segs[i]!;
    t.start[i] = s[0];
    t.end[i] = s[0] + s[1];
    t.shift[i] = s[2];
  }
  return t;
}

/** {@link lookup} on a table: the same answer (the segments do not overlap, so a hit is the hit). */
export function lookupIn(t: SegmentTable, v: number): number | undefined {
  const { start, end, shift } = t;
  let k = t.last;
  if (k < start.length && v >= start[k]! && v < end[k]!) return v + shift[k]!;
  let lo = 0;
  let hi = start.length - 1;
  while (lo <= hi) {
    k = (lo + hi) >> 1;
    if (v < start[k]!) hi = k - 1;
    else if (v >= end[k]!) lo = k + 1;
    else {
      t.last = k;
      return v + shift[k]!;
    }
  }
  return undefined;
}

/** Looks `v` up in sorted, non-overlapping segments: its moved value, or undefined. */
export function lookup(segs: readonly Segment[], v: number): number | undefined {
  let lo = 0;
  let hi = segs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const s = segs[mid]!;
    if (v < s[0]) hi = mid - 1;
    else if (v >= s[0] + s[1]) lo = mid + 1;
    else return v + s[2];
  }
  return undefined;
}

function dynsymNames(b: Buffer, e: Elf): string[] {
  const sym = e.sections.find((s) => s.type === SHT_DYNSYM);
  const str = sym && e.sections.find((s) => s.name === '.dynstr');
  if (!sym || !str) return [];
  const names: string[] = [];
  for (let o = sym.off; o + 24 <= sym.off + sym.size; o += 24) {
    const at = str.off + b.readUInt32LE(o);
    const end = at < str.off + str.size ? b.indexOf(0, at) : -1;
    names.push(end < 0 ? '' : b.toString('latin1', at, end));
  }
  return names;
}

/**
 * The map from the old file to the new one (maker side): where bsdiff's first pass matched at
 * least {@link MIN_MATCH} bytes (its control triples, 24 bytes each as bsdiff writes them), the
 * shift of that match; elsewhere the shift of the section that holds the address (by name); and
 * dynamic symbols by name. Undefined unless both are x86-64 ELF files.
 */
export function buildElfMap(oldB: Buffer, newB: Buffer, ctrl: Buffer): ElfMap | undefined {
  const o = parseElf(oldB);
  const n = parseElf(newB);
  if (!o || !n) return undefined;
  const matched: Segment[] = [];
  let op = 0;
  let np = 0;
  for (let at = 0; at + 24 <= ctrl.length; at += 24) {
    const [x, y, z] = [0, 8, 16].map((k) => {
      const lo = ctrl.readUInt32LE(at + k);
      const hi = ctrl.readUInt32LE(at + k + 4);
      const mag = (hi & 0x7fffffff) * 2 ** 32 + lo;
      return hi >>> 31 ? -mag : mag;
    }) as [number, number, number];
    if (x >= MIN_MATCH) {
      const a = offToVa(o, op);
      const b = offToVa(n, np);
      if (a !== undefined && b !== undefined) matched.push([a, x, b - a]);
    }
    op += x + z;
    np += x + y;
  }
  const oldNames = dynsymNames(oldB, o);
  const newNames = dynsymNames(newB, n);
  // PLT entries and their GOT slots by symbol: the stubs all look alike, so bsdiff's matches
  // there say nothing (libcrypto: most of the call operands the prediction still missed).
  const slots = (b: Buffer, e: Elf, names: string[]) => {
    const m = new Map<string, { got: number; plt: number }>();
    for (const s of e.sections) {
      if (s.type !== SHT_RELA || s.entsize !== 24) continue;
      for (let at = s.off; at + 24 <= s.off + s.size; at += 24) {
        const got = num(b, at);
        const fo = got === undefined ? undefined : vaToOff(e, got);
        const lazy = fo === undefined ? undefined : num(b, fo);
        const name = names[b.readUInt32LE(at + 12)];
        // (the slot holds its PLT entry's push, 6 bytes in, until the first call)
        if (b.readUInt32LE(at + 8) === R_X86_64_JUMP_SLOT && name && lazy !== undefined && lazy >= 6 && !m.has(name)) m.set(name, { got: got!, plt: lazy - 6 });
      }
    }
    return m;
  };
  const newSlots = slots(newB, n, newNames);
  const plt: Segment[] = [];
  for (const [name, a] of slots(oldB, o, oldNames)) {
    const b = newSlots.get(name);
    if (b) plt.push([a.plt, 16, b.plt - a.plt], [a.got, 8, b.got - a.got]);
  }
  const pinned = normalize(plt);
  const exact = normalize([...pinned, ...matched.flatMap((m) => carve(m, pinned))]);
  // Section fallback, only where no match says otherwise.
  const fill: Segment[] = [];
  for (const s of o.sections) {
    const t = n.sections.find((x) => x.name === s.name);
    if (!t || !s.name || !(s.flags & SHF_ALLOC) || s.flags & SHF_TLS || s.addr === 0 || s.size === 0) continue;
    fill.push(...carve([s.addr, s.size, t.addr - s.addr], exact));
  }
  const newIndex = new Map<string, number>();
  newNames.forEach((name, i) => {
    if (!newIndex.has(name)) newIndex.set(name, i);
  });
  const sym: Segment[] = [];
  oldNames.forEach((name, i) => {
    const j = newIndex.get(name);
    if (j !== undefined) sym.push([i, 1, j - i]);
  });
  return { addr: normalize([...exact, ...fill]), sym: normalize(sym) };
}

/** The parts of `seg` that no segment of `taken` (sorted, disjoint) covers, with seg's shift. */
function carve(seg: Segment, taken: readonly Segment[]): Segment[] {
  const out: Segment[] = [];
  const end = seg[0] + seg[1];
  let cursor = seg[0];
  for (const m of taken) {
    if (m[0] + m[1] <= cursor) continue;
    if (m[0] >= end) break;
    if (m[0] > cursor) out.push([cursor, m[0] - cursor, seg[2]]);
    cursor = Math.max(cursor, m[0] + m[1]);
  }
  if (cursor < end) out.push([cursor, end - cursor, seg[2]]);
  return out;
}

function putUint(out: number[], v: number): void {
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/** The map as it travels: per list, a count, then (gap from the previous end, length, zigzag shift) as LEB128 varints. */
export function encodeElfMap(m: ElfMap): Buffer {
  const out: number[] = [];
  for (const segs of [m.addr, m.sym]) {
    putUint(out, segs.length);
    let end = 0;
    for (const [start, len, shift] of segs) {
      putUint(out, start - end);
      putUint(out, len);
      putUint(out, shift >= 0 ? shift * 2 : -shift * 2 - 1);
      end = start + len;
    }
  }
  return Buffer.from(out);
}

function corrupt(message: string): TiuError {
  return new TiuError('DELTA_CORRUPT', message, { hint: 'use the full image' });
}

/** Inverse of {@link encodeElfMap}; DELTA_CORRUPT on anything malformed or out of bounds. */
export function decodeElfMap(b: Buffer): ElfMap {
  let at = 0;
  const uint = (): number => {
    let v = 0;
    for (let scale = 1; ; scale *= 0x80) {
      if (at >= b.length || scale > 2 ** 49) throw corrupt('the ELF address map in the delta is malformed');
      const c = b[at++]!;
      v += (c & 0x7f) * scale;
      if (c < 0x80) return v;
    }
  };
  const lists: Segment[][] = [];
  for (let k = 0; k < 2; k++) {
    const count = uint();
    if (count > MAX_SEGMENTS) throw corrupt('the ELF address map in the delta is too large');
    const segs: Segment[] = [];
    let end = 0;
    for (let i = 0; i < count; i++) {
      const start = end + uint();
      const len = uint();
      const z = uint();
      if (len === 0 || start + len > 2 ** 52 || z > 2 ** 53) throw corrupt('the ELF address map in the delta has an empty or out-of-range segment');
      segs.push([start, len, z % 2 === 0 ? z / 2 : -(z + 1) / 2]);
      end = start + len;
    }
    lists.push(segs);
  }
  if (at !== b.length) throw corrupt('the ELF address map in the delta has bytes past its end');
  return { addr: lists[0]!, sym: lists[1]! };
}

/** A 256-entry membership table for byte values (a lookup per code byte, not a Set's hash). */
function byteSet(values: readonly number[]): Uint8Array {
  const t = new Uint8Array(256);
  for (const v of values) t[v] = 1;
  return t;
}
/** One-byte opcodes whose ModRM byte may select a RIP-relative operand (mov, lea, cmp, add, ...). */
export const RIP_OPS = byteSet([0x8b, 0x8d, 0x89, 0x3b, 0x39, 0x03, 0x2b, 0x33, 0x0b, 0x23, 0x85, 0x63, 0xff, 0xc7, 0x81, 0x83, 0x80, 0xc6, 0x88, 0x8a, 0x3a, 0x38, 0x84, 0xf6, 0xf7, 0x87, 0x01, 0x29, 0x31, 0x09, 0x21, 0x13, 0x1b]);
/** The same after 0x0f (SSE moves, movzx/movsx, prefetch, ...). */
export const RIP_OPS_0F = byteSet([0x10, 0x11, 0x28, 0x29, 0x6f, 0x7f, 0xb6, 0xb7, 0xbe, 0xbf, 0x2e, 0x2f, 0x54, 0x57, 0x58, 0x59, 0x5c, 0x5e, 0xef, 0xd6, 0x7e, 0x6e, 0x12, 0x16, 0x13, 0x17, 0xdb, 0xeb, 0xfe, 0xd4, 0x38, 0x3a, 0x1f, 0x18, 0x0d]);

/**
 * First-byte classes of the code scan: 1 call/jmp rel32 (e8, e9), 2 the escape of a two-byte jcc
 * (0f 80..8f), 3 a ModRM byte with mod 00 and r/m 101 (RIP-relative). One table lookup per code
 * byte: most bytes are none of these.
 */
const CODE_CLASS = (() => {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) if ((c & 0xc7) === 0x05) t[c] = 3;
  t[0xe8] = t[0xe9] = 1;
  t[0x0f] = 2;
  return t;
})();

/**
 * Code: rel32 operands of call, jmp, jcc and RIP-relative ModRM operands, found by their opcode
 * bytes (no disassembly: a false hit is moved the same way on both sides, so it only costs a few
 * diff bytes). The operand's target T = end + rel32 becomes map(T) - map(end).
 *
 * The maker and every device must predict the very same bytes (a delta made by one version of
 * this function is applied by another): this loop is written for speed (the largest share of a
 * delta's apply time); test/delta-elf.test.ts keeps the plain first form and compares the two.
 */
export function predictCode(b: Buffer, s: Section, M: (v: number) => number | undefined): void {
  const start = s.off;
  const end = s.off + s.size;
  // The address just past an operand at file offset p is p + toVa.
  const toVa = s.addr - s.off + 4;
  const cls = CODE_CLASS;
  for (let i = start; i + 5 < end; ) {
    const k = cls[b[i]!]!;
    if (k === 0) {
      i++;
      continue;
    }
    let p: number;
    if (k === 1) p = i + 1;
    else if (k === 2) {
      const n = b[i + 1]!;
      if (n < 0x80 || n > 0x8f) {
        i++;
        continue;
      }
      p = i + 2;
    } else {
      const q = i > start ? b[i - 1]! : -1;
      if (!(q >= 0 && (RIP_OPS[q] === 1 || (i - 2 >= start && b[i - 2] === 0x0f && RIP_OPS_0F[q] === 1)))) {
        i++;
        continue;
      }
      p = i + 1;
    }
    if (p + 4 <= end) {
      const d = i32(b, p);
      const from = p + toVa;
      const mt = M(from + d);
      const mp = M(from);
      if (mt !== undefined && mp !== undefined) {
        const nd = mt - mp;
        if (nd !== d && nd >= -(2 ** 31) && nd < 2 ** 31) {
          b[p] = nd & 0xff;
          b[p + 1] = (nd >> 8) & 0xff;
          b[p + 2] = (nd >> 16) & 0xff;
          b[p + 3] = (nd >> 24) & 0xff;
        }
        i = p + 4;
        continue;
      }
    }
    i++;
  }
}

/** Fewest consecutive entries taken for a jump table. */
const MIN_TABLE = 3;

/**
 * Switch tables in .rodata: GCC's PIC tables are int32 entries `target - table`, all targets in
 * code. A run of at least {@link MIN_TABLE} 4-byte-aligned values that each land in an executable
 * section, counted from the run's first entry, is taken as a table; each entry becomes
 * `M(table + entry) - M(table)`.
 */
export function predictJumpTables(b: Buffer, e: Elf, M: (v: number) => number | undefined): void {
  const code = e.sections.filter((s) => s.type !== SHT_NOBITS && s.flags & SHF_EXECINSTR).map((s) => [s.addr, s.addr + s.size] as const);
  const lo = Math.min(...code.map((c) => c[0]));
  const hi = Math.max(...code.map((c) => c[1]));
  // (most values are not addresses at all: one range check first; then the sections, from a
  // typed array: no closure per call)
  const ranges = Float64Array.from(code.flat());
  const inCode = (v: number) => {
    if (v < lo || v >= hi) return false;
    for (let r = 0; r < ranges.length; r += 2) if (v >= ranges[r]! && v < ranges[r + 1]!) return true;
    return false;
  };
  for (const s of e.sections) {
    if (s.name !== '.rodata' || s.type === SHT_NOBITS) continue;
    const end = s.off + s.size;
    for (let o = s.off + ((4 - (s.addr % 4)) % 4); o + 4 <= end; ) {
      // (most words are no address at all: the range check here, before inCode or M is asked)
      const v0 = s.addr + (o - s.off) + i32(b, o);
      if (v0 < lo || v0 >= hi) {
        o += 4;
        continue;
      }
      const table = s.addr + (o - s.off);
      let n = 0;
      while (o + 4 * (n + 1) <= end && inCode(table + i32(b, o + 4 * n))) n++;
      if (n < MIN_TABLE) {
        o += 4;
        continue;
      }
      const mt = M(table);
      for (let k = 0; k < n && mt !== undefined; k++) {
        const at = o + 4 * k;
        const t = M(table + i32(b, at));
        if (t !== undefined && t - mt >= -(2 ** 31) && t - mt < 2 ** 31) put32(b, at, t - mt);
      }
      o += 4 * n;
    }
  }
}

/** Writes `v` (0 <= v <= 2^53 - 1, as M and num give) as a little-endian u64, in two halves. */
function writeU64(b: Buffer, at: number, v: number): void {
  put32(b, at, v % 0x1_0000_0000);
  put32(b, at + 4, Math.floor(v / 0x1_0000_0000));
}

/**
 * Rewrites an x86-64 ELF file, in place, into the prediction of its new version under `m`: code
 * references, RELA entries (offset, addend, symbol index) and the pointers they fill in, symbol
 * values, .eh_frame_hdr's table and .eh_frame's FDE start addresses. Returns `b`. A file that is
 * not x86-64 ELF is returned unchanged.
 */
export function predictElf(b: Buffer, m: ElfMap): Buffer {
  const e = parseElf(b);
  if (!e) return b;
  const addr = segmentTable(m.addr);
  const syms = segmentTable(m.sym);
  const M = (v: number) => {
    const r = lookupIn(addr, v);
    return r !== undefined && r >= 0 && r <= Number.MAX_SAFE_INTEGER ? r : undefined;
  };
  for (const s of e.sections) if (s.type !== SHT_NOBITS && s.flags & SHF_EXECINSTR) predictCode(b, s, M);
  for (const s of e.sections) {
    if (s.type !== SHT_RELA || s.entsize !== 24) continue;
    for (let o = s.off; o + 24 <= s.off + s.size; o += 24) {
      const ro = num(b, o);
      const type = u32(b, o + 8);
      const sym = u32(b, o + 12);
      const addend = num(b, o + 16);
      const ns = sym ? lookupIn(syms, sym) : undefined;
      if (ns !== undefined && ns >= 0 && ns <= 0xffffffff) put32(b, o + 12, ns);
      const fo = ro === undefined ? undefined : vaToOff(e, ro);
      if (type === R_X86_64_RELATIVE && addend !== undefined) {
        const na = M(addend);
        if (na !== undefined) {
          // (the linker also writes the addend in place)
          if (fo !== undefined && num(b, fo) === addend) writeU64(b, fo, na);
          writeU64(b, o + 16, na);
        }
      } else if (type === R_X86_64_JUMP_SLOT && fo !== undefined) {
        const v = num(b, fo);
        const nv = v === undefined ? undefined : M(v);
        if (nv !== undefined) writeU64(b, fo, nv);
      }
      const nro = ro === undefined ? undefined : M(ro);
      if (nro !== undefined) writeU64(b, o, nro);
    }
  }
  for (const s of e.sections) {
    if (s.type !== SHT_DYNSYM && s.type !== SHT_SYMTAB) continue;
    for (let o = s.off; o + 24 <= s.off + s.size; o += 24) {
      const shndx = b[o + 6]! | (b[o + 7]! << 8);
      const v = num(b, o + 8);
      const nv = shndx !== 0 && shndx < 0xff00 && v !== undefined ? M(v) : undefined;
      if (nv !== undefined) writeU64(b, o + 8, nv);
    }
  }
  predictJumpTables(b, e, M);
  const hdr = e.sections.find((s) => s.name === '.eh_frame_hdr');
  const nh = hdr && M(hdr.addr);
  if (hdr && nh !== undefined && hdr.size >= 12 && b[hdr.off + 3] === 0x3b) {
    // (table entries: datarel sdata4 pairs of function start and FDE address)
    const count = Math.min(u32(b, hdr.off + 8) * 2, Math.floor((hdr.size - 12) / 4));
    for (let k = 0; k < count; k++) {
      const at = hdr.off + 12 + 4 * k;
      const mv = M(hdr.addr + i32(b, at));
      if (mv !== undefined && mv - nh >= -(2 ** 31) && mv - nh < 2 ** 31) put32(b, at, mv - nh);
    }
  }
  const eh = e.sections.find((s) => s.name === '.eh_frame');
  if (eh) {
    // FDEs: the CIE pointer (distance back to its CIE, which moves when FDEs come and go) and
    // pc_begin as pcrel sdata4 (what GCC emits on x86-64); a wrong guess only costs bytes.
    for (let o = eh.off; o + 12 <= eh.off + eh.size; ) {
      const len = u32(b, o);
      if (len === 0 || len === 0xffffffff) break;
      const cie = u32(b, o + 4);
      if (cie !== 0) {
        const here = eh.addr + (o + 4 - eh.off);
        const [mh, mc] = [M(here), M(here - cie)];
        if (mh !== undefined && mc !== undefined && mh - mc > 0 && mh - mc < 2 ** 32) put32(b, o + 4, mh - mc);
        const at = here + 4;
        const mt = M(at + i32(b, o + 8));
        const mp = M(at);
        if (mt !== undefined && mp !== undefined && mt - mp >= -(2 ** 31) && mt - mp < 2 ** 31) put32(b, o + 8, mt - mp);
      }
      o += 4 + len;
    }
  }
  return b;
}
