/**
 * The `bsdiff-elf` reference prediction (src/tiu/delta/elf.ts) on real x86-64 ELF files of the
 * Debian fixture update: Debian's bsdiff against the predicted old file, applied by tiu's
 * streaming bspatch to the device's own prediction, rebuilds the new file exactly, and its diff
 * stream is much smaller than plain bsdiff's. The map's decoder is strict (DELTA_CORRUPT).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { bspatchStream, splitBsdiff40 } from '../src/tiu/delta/bsdiff.ts';
import { buildElfMap, decodeElfMap, encodeElfMap, lookup, lookupIn, parseElf, predictCode, predictElf, predictJumpTables, RIP_OPS, RIP_OPS_0F, segmentTable, type Elf, type ElfMap, type Section, type Segment } from '../src/tiu/delta/elf.ts';
import { debianTree } from './helpers/archive.ts';
import { errorCodeOf } from './helpers/env.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-delta-elf-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const bunzip = async (b: Buffer) => Buffer.from((await execa('bzip2', ['-dc'], { input: b, encoding: 'buffer' })).stdout);
const xzSize = async (b: Buffer) => (await execa('xz', ['-q', '-T1', '-9e', '-c'], { input: b, encoding: 'buffer' })).stdout.length;

/** Debian's bsdiff of two buffers: its three raw streams. */
async function bsdiff(oldB: Buffer, newB: Buffer, name: string) {
  const [o, n, p] = ['old', 'new', 'patch'].map((k) => join(work, `${name}.${k}`)) as [string, string, string];
  await writeFile(o, oldB);
  await writeFile(n, newB);
  await execa('bsdiff', [o, n, p]);
  const parts = splitBsdiff40(await readFile(p));
  return { ctrl: await bunzip(parts.ctrl), diff: await bunzip(parts.diff), extra: await bunzip(parts.extra) };
}

/** tiu's bspatch of `raw` onto `oldB` (streams and old file from disk, as on the device). */
async function bspatch(oldB: Buffer, raw: { ctrl: Buffer; diff: Buffer; extra: Buffer }, newSize: number, name: string): Promise<Buffer> {
  const fhs = {} as Record<'ctrl' | 'diff' | 'extra' | 'old', Awaited<ReturnType<typeof open>>>;
  try {
    for (const [k, b] of [['ctrl', raw.ctrl], ['diff', raw.diff], ['extra', raw.extra], ['old', oldB]] as const) {
      const f = join(work, `${name}-s-${k}`);
      await writeFile(f, b);
      fhs[k] = await open(f, 'r');
    }
    const slice = (k: 'ctrl' | 'diff' | 'extra') => ({ fh: fhs[k], offset: 0, length: raw[k].length });
    const out: Buffer[] = [];
    for await (const c of bspatchStream(fhs.old, oldB.length, { ctrl: slice('ctrl'), diff: slice('diff'), extra: slice('extra') }, newSize)) out.push(Buffer.from(c));
    return Buffer.concat(out);
  } finally {
    for (const fh of Object.values(fhs)) await fh.close();
  }
}

describe('bsdiff-elf', () => {
  it('rebuilds real Debian ELF files exactly (libapt-pkg, perl) with a much smaller diff stream than bsdiff alone', async () => {
    for (const path of ['usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0', 'usr/bin/perl']) {
      const oldB = await readFile(join(debianTree('v1'), path));
      const newB = await readFile(join(debianTree('v2'), path));
      expect(oldB.equals(newB), path).toBe(false);
      const name = path.replaceAll('/', '_');
      const plain = await bsdiff(oldB, newB, `${name}-plain`);
      const map = buildElfMap(oldB, newB, plain.ctrl)!;
      expect(map.addr.length, path).toBeGreaterThan(10);
      // The map travels encoded; the device decodes it and predicts from its own old file.
      const sent = decodeElfMap(encodeElfMap(map));
      expect(sent).toEqual(map);
      const makerPrediction = predictElf(Buffer.from(oldB), map);
      const raw = await bsdiff(makerPrediction, newB, `${name}-elf`);
      const devicePrediction = predictElf(Buffer.from(oldB), sent);
      expect(devicePrediction.equals(makerPrediction)).toBe(true);
      const rebuilt = await bspatch(devicePrediction, raw, newB.length, name);
      expect(rebuilt.equals(newB), path).toBe(true);
      const [before, after] = [await xzSize(plain.diff), await xzSize(raw.diff)];
      console.log(`${path}: bsdiff diff stream ${before} B (xz), with the ELF prediction ${after} B; map ${encodeElfMap(map).length} B`);
      expect(after * 2).toBeLessThan(before);
      // The plain patch does not fit the prediction: the map is what the patch is made for.
      await expect(bspatch(devicePrediction, plain, newB.length, `${name}-mismatch`).then((b) => b.equals(newB))).resolves.toBe(false);
    }
  }, 120_000);

  it('leaves files it cannot parse as they are, and never throws on a damaged ELF', () => {
    const map: ElfMap = { addr: [[0, 1 << 30, 4096]], sym: [[1, 100, 1]] };
    const text = Buffer.from('#!/bin/sh\necho hello\n');
    expect(predictElf(Buffer.from(text), map).equals(text)).toBe(true);
    expect(parseElf(text)).toBeUndefined();
    // An ELF header whose tables point past the end, and random bytes behind a valid header.
    const elf = Buffer.alloc(4096, 0xe8);
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(elf);
    elf.writeUInt16LE(62, 18);
    elf.writeBigUInt64LE(0xffffffffn, 0x20);
    expect(predictElf(Buffer.from(elf), map).equals(elf)).toBe(true);
    elf.writeBigUInt64LE(64n, 0x20);
    elf.writeBigUInt64LE(200n, 0x28);
    elf.writeUInt16LE(56, 0x36);
    elf.writeUInt16LE(3, 0x38);
    elf.writeUInt16LE(64, 0x3a);
    elf.writeUInt16LE(20, 0x3c);
    elf.writeUInt16LE(2, 0x3e);
    for (let seed = 1; seed < 200; seed++) {
      const b = Buffer.from(elf);
      for (let i = 64; i < b.length; i += 7) b[i] = (i * seed * 2654435761) >>> 24;
      expect(() => predictElf(b, map)).not.toThrow();
    }
  });

  it('never throws on a real library with damaged headers, tables or map (the rebuilt file is hashed anyway)', async () => {
    const oldB = await readFile(join(debianTree('v1'), 'usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0'));
    const newB = await readFile(join(debianTree('v2'), 'usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0'));
    const map = buildElfMap(oldB, newB, (await bsdiff(oldB, newB, 'fuzz')).ctrl)!;
    const shoff = Number(oldB.readBigUInt64LE(0x28));
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    let predicted = 0;
    for (let round = 0; round < 40; round++) {
      const b = Buffer.from(oldB);
      // Damage the program headers, the section header table and, every fifth round, the ELF header.
      for (let k = 0; k < 3; k++) b[k ? shoff + rnd(b.length - shoff) : 0x40 + rnd(0x1c0)] = rnd(256);
      if (round % 5 === 4) b[rnd(0x40)] = rnd(256);
      const m: ElfMap = round % 4 === 3 ? { addr: map.addr.map(([s, l, sh]) => [s, l, sh - 2 ** 40]), sym: [[0, 2 ** 32, 2 ** 33]] } : map;
      const before = Buffer.from(b);
      expect(() => predictElf(b, m)).not.toThrow();
      if (!b.equals(before)) predicted++;
    }
    // (most damaged files still parse in part: the prediction ran on them, not only the header check)
    expect(predicted).toBeGreaterThan(20);
    console.log(`predicted on ${predicted} of 40 damaged files`);
  }, 60_000);

  it('the typed-array lookup with its last-hit cache answers exactly as the plain binary search', () => {
    // Deterministic pseudo-random segments with gaps, and values in order, backwards and at random
    // (inside, at both edges, in gaps, before and after all).
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    const segs: Segment[] = [];
    for (let at = 0x1000, i = 0; i < 500; i++) {
      at += rnd(3) === 0 ? 0 : 1 + rnd(64);
      const len = 1 + rnd(200);
      segs.push([at, len, rnd(2000) - 1000]);
      at += len;
    }
    const t = segmentTable(segs);
    const last = segs[segs.length - 1]!;
    const values: number[] = [0, 0x0fff, last[0] + last[1], last[0] + last[1] + 5];
    for (const [a, l] of segs) values.push(a - 1, a, a + (l >> 1), a + l - 1, a + l);
    for (let i = 0; i < 2000; i++) values.push(rnd(last[0] + last[1] + 100));
    let hits = 0;
    for (const v of [...values, ...values.slice().reverse()]) {
      expect(lookupIn(t, v), `value ${v}`).toBe(lookup(segs, v));
      if (lookup(segs, v) !== undefined) hits++;
    }
    expect(hits).toBeGreaterThan(1000);
    expect(lookupIn(segmentTable([]), 5)).toBeUndefined();
  });

  it('the fast code and jump-table scans predict exactly what their plain first forms do (real programs, random code)', async () => {
    // Deltas made by one version are applied by another: the prediction must never change. These
    // are the scans as first written (readInt32LE, one comparison chain per byte).
    type Lookup = (v: number) => number | undefined;
    const plainCode = (b: Buffer, s: Section, M: Lookup) => {
      const end = s.off + s.size;
      for (let i = s.off; i + 5 < end; ) {
        const c = b[i]!;
        let p = -1;
        if (c === 0xe8 || c === 0xe9) p = i + 1;
        else if (c === 0x0f && b[i + 1]! >= 0x80 && b[i + 1]! <= 0x8f) p = i + 2;
        else if ((c & 0xc7) === 0x05 && i > s.off && (RIP_OPS[b[i - 1]!] === 1 || (i - 2 >= s.off && b[i - 2] === 0x0f && RIP_OPS_0F[b[i - 1]!] === 1))) p = i + 1;
        if (p >= 0 && p + 4 <= end) {
          const d = b.readInt32LE(p);
          const from = s.addr + (p - s.off) + 4;
          const [mt, mp] = [M(from + d), M(from)];
          if (mt !== undefined && mp !== undefined) {
            const nd = mt - mp;
            if (nd !== d && nd >= -(2 ** 31) && nd < 2 ** 31) b.writeInt32LE(nd, p);
            i = p + 4;
            continue;
          }
        }
        i++;
      }
    };
    const plainTables = (b: Buffer, e: Elf, M: Lookup) => {
      const code = e.sections.filter((s) => s.type !== 8 && s.flags & 4).map((s) => [s.addr, s.addr + s.size] as const);
      const lo = Math.min(...code.map((c) => c[0]));
      const hi = Math.max(...code.map((c) => c[1]));
      const inCode = (v: number) => v >= lo && v < hi && code.some(([a, z]) => v >= a && v < z);
      for (const s of e.sections) {
        if (s.name !== '.rodata' || s.type === 8) continue;
        const end = s.off + s.size;
        for (let o = s.off + ((4 - (s.addr % 4)) % 4); o + 4 <= end; ) {
          const table = s.addr + (o - s.off);
          let n = 0;
          while (o + 4 * (n + 1) <= end && inCode(table + b.readInt32LE(o + 4 * n))) n++;
          if (n < 3) {
            o += 4;
            continue;
          }
          const mt = M(table);
          for (let k = 0; k < n && mt !== undefined; k++) {
            const t = M(table + b.readInt32LE(o + 4 * k));
            if (t !== undefined && t - mt >= -(2 ** 31) && t - mt < 2 ** 31) b.writeInt32LE(t - mt, o + 4 * k);
          }
          o += 4 * n;
        }
      }
    };
    let seed = 99;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    /** Segments over [0, top): gaps, and shifts small, large and (now and then) out of rel32 range. */
    const randomMap = (top: number): Lookup => {
      const segs: Segment[] = [];
      for (let at = 0; at < top; ) {
        const len = 1 + rnd(Math.max(2, top >> 6));
        if (rnd(5) > 0) segs.push([at, len, rnd(10) === 0 ? 2 ** 32 + rnd(4096) : rnd(1 << 16) - (1 << 15)]);
        at += len + (rnd(3) === 0 ? rnd(256) : 0);
      }
      const t = segmentTable(segs);
      return (v) => {
        const r = lookupIn(t, v);
        return r !== undefined && r >= 0 && r <= Number.MAX_SAFE_INTEGER ? r : undefined;
      };
    };
    let candidates = 0;
    const same = (b: Buffer, s: Section, M: Lookup, what: string) => {
      const [x, y] = [Buffer.from(b), Buffer.from(b)];
      predictCode(x, s, M);
      plainCode(y, s, M);
      expect(x.equals(y), what).toBe(true);
      if (!x.equals(b)) candidates++;
    };
    for (const path of ['usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0.0', 'usr/bin/perl', 'usr/lib/x86_64-linux-gnu/libc.so.6']) {
      const b = await readFile(join(debianTree('v1'), path));
      const e = parseElf(b)!;
      const top = Math.max(...e.sections.map((s) => s.addr + s.size));
      for (let round = 0; round < 2; round++) {
        const M = randomMap(top);
        for (const s of e.sections) if (s.type !== 8 && s.flags & 4) same(b, s, M, `${path} ${s.name}`);
        const [x, y] = [Buffer.from(b), Buffer.from(b)];
        predictJumpTables(x, e, M);
        plainTables(y, e, M);
        expect(x.equals(y), `${path} jump tables`).toBe(true);
        expect(x.equals(b), `${path}: some jump table entries moved`).toBe(false);
      }
    }
    // Random code dense in opcodes, sections starting at 0 and ending inside an operand.
    const ops = [0xe8, 0xe9, 0x0f, 0x85, 0x05, 0x0d, 0x8b, 0x8d, 0x10, 0x3d, 0xff];
    for (let round = 0; round < 200; round++) {
      const b = Buffer.alloc(64 + rnd(2048));
      for (let i = 0; i < b.length; i++) b[i] = rnd(3) === 0 ? ops[rnd(ops.length)]! : rnd(256);
      const off = rnd(2) ? 0 : rnd(32);
      const s: Section = { name: '.text', type: 1, flags: 6, addr: rnd(1 << 20), off, size: b.length - off - rnd(6), entsize: 0 };
      same(b, s, randomMap(s.addr + b.length + 4096), `random code ${round}`);
    }
    // (and the maps did move many operands: the comparison is not between two untouched copies)
    expect(candidates).toBeGreaterThan(60);
  }, 60_000);

  it('decodes only well-formed maps: truncated, trailing bytes, empty segments, too many segments are DELTA_CORRUPT', () => {
    const map: ElfMap = { addr: [[0x1000, 0x2000, 16], [0x4000, 0x10, -4096]], sym: [[3, 7, 1]] };
    const enc = encodeElfMap(map);
    expect(decodeElfMap(enc)).toEqual(map);
    expect(lookup(map.addr, 0x1000)).toBe(0x1010);
    expect(lookup(map.addr, 0x2fff)).toBe(0x300f);
    expect(lookup(map.addr, 0x3000)).toBeUndefined();
    expect(lookup(map.addr, 0x4005)).toBe(0x4005 - 4096);
    expect(errorCodeOf(() => decodeElfMap(enc.subarray(0, enc.length - 1)))).toBe('DELTA_CORRUPT');
    expect(errorCodeOf(() => decodeElfMap(Buffer.concat([enc, Buffer.from([0])])))).toBe('DELTA_CORRUPT');
    expect(errorCodeOf(() => decodeElfMap(Buffer.from([1, 0, 0, 0, 0])))).toBe('DELTA_CORRUPT'); // a zero-length segment
    expect(errorCodeOf(() => decodeElfMap(Buffer.from([0xff, 0xff, 0xff, 0x7f])))).toBe('DELTA_CORRUPT'); // 268 M segments
    expect(errorCodeOf(() => decodeElfMap(Buffer.from([1, ...Array(9).fill(0xff), 1, 1, 0, 0])))).toBe('DELTA_CORRUPT'); // an endless varint
  });
});
