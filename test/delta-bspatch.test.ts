/**
 * The streaming bspatch against Debian's bsdiff: patches made by the real tool, split into their
 * three streams (as `tiu delta` groups them), rebuild the new file exactly; damaged streams give
 * DELTA_CORRUPT, never a wrong file.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { addBytes, bspatchStream, splitBsdiff40, offtin, encodeCtrl, decodeCtrl } from '../src/tiu/delta/bsdiff.ts';
import { TiuError } from '../src/core/errors.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-bspatch-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const bunzip = async (b: Buffer) => (await execa('bzip2', ['-dc'], { input: b, encoding: 'buffer' })).stdout as unknown as Buffer;

/** Makes a patch with Debian's bsdiff and returns its three raw streams written to files. */
async function streams(oldB: Buffer, newB: Buffer, name: string) {
  const o = join(work, `${name}.old`);
  const n = join(work, `${name}.new`);
  const p = join(work, `${name}.patch`);
  await writeFile(o, oldB);
  await writeFile(n, newB);
  await execa('bsdiff', [o, n, p]);
  const parts = splitBsdiff40(await readFile(p));
  expect(parts.newSize).toBe(newB.length);
  const raw = { ctrl: await bunzip(parts.ctrl), diff: await bunzip(parts.diff), extra: await bunzip(parts.extra) };
  return { o, raw };
}

async function patch(oldPath: string, raw: { ctrl: Buffer; diff: Buffer; extra: Buffer }, newSize: number, pad = 7, inMemory = false): Promise<Buffer> {
  // Each stream sits after `pad` bytes of another file's slice, as in a grouped stream.
  const fhs = {} as Record<'ctrl' | 'diff' | 'extra', Awaited<ReturnType<typeof open>>>;
  for (const k of ['ctrl', 'diff', 'extra'] as const) {
    const f = join(work, `s-${k}`);
    await writeFile(f, Buffer.concat([Buffer.alloc(pad, 0x55), raw[k], Buffer.alloc(pad, 0x66)]));
    fhs[k] = await open(f, 'r');
  }
  const old = await open(oldPath, 'r');
  try {
    const out: Buffer[] = [];
    const slices = {
      ctrl: { fh: fhs.ctrl, offset: pad, length: raw.ctrl.length },
      diff: { fh: fhs.diff, offset: pad, length: raw.diff.length },
      extra: { fh: fhs.extra, offset: pad, length: raw.extra.length },
    };
    // The old file by window from disk, or whole in memory (as an ELF prediction is patched).
    const src = inMemory ? await readFile(oldPath) : old;
    for await (const c of bspatchStream(src, (await old.stat()).size, slices, newSize)) out.push(Buffer.from(c));
    return Buffer.concat(out);
  } finally {
    await old.close();
    for (const fh of Object.values(fhs)) await fh.close();
  }
}

describe('bspatchStream', () => {
  it('rebuilds files exactly from the split streams of Debian bsdiff patches (edits, inserts, growth, shrink, a tiny old file)', async () => {
    const base = randomBytes(1024 * 1024 + 123);
    const edited = Buffer.from(base);
    for (let i = 0; i < edited.length; i += 4099) edited[i] = (edited[i]! + 3) & 0xff;
    const cases: [string, Buffer, Buffer][] = [
      ['edits', base, edited],
      ['insert', base, Buffer.concat([base.subarray(0, 1000), randomBytes(5000), base.subarray(1000, 600_000), base.subarray(800_000)])],
      ['grow', base.subarray(0, 100_000), Buffer.concat([base.subarray(0, 100_000), randomBytes(1_000_000)])],
      ['shrink', base, base.subarray(50_000, 60_000)],
      ['tiny-old', Buffer.from('x'), randomBytes(4000)],
    ];
    for (const [name, o, n] of cases) {
      const s = await streams(o, n, name);
      const got = await patch(s.o, s.raw, n.length);
      expect(got.equals(n), name).toBe(true);
      const fromMemory = await patch(s.o, s.raw, n.length, 7, true);
      expect(fromMemory.equals(n), `${name} (old file in memory)`).toBe(true);
    }
  });

  it('damaged streams or a wrong size give DELTA_CORRUPT', async () => {
    const o = randomBytes(200_000);
    const n = Buffer.concat([o.subarray(0, 150_000), randomBytes(10_000), o.subarray(150_000)]);
    const s = await streams(o, n, 'bad');
    const expectCorrupt = async (raw: typeof s.raw, size = n.length) => {
      for (const inMemory of [false, true]) {
        const e = await patch(s.o, raw, size, 7, inMemory).then(() => undefined, (x: unknown) => x);
        expect(e).toBeInstanceOf(TiuError);
        expect((e as TiuError).code).toBe('DELTA_CORRUPT');
      }
    };
    await expectCorrupt(s.raw, n.length + 1);
    await expectCorrupt(s.raw, n.length - 1);
    await expectCorrupt({ ...s.raw, ctrl: s.raw.ctrl.subarray(0, s.raw.ctrl.length - 1) });
    await expectCorrupt({ ...s.raw, extra: s.raw.extra.subarray(1) });
    const bigX = Buffer.from(s.raw.ctrl);
    bigX.writeUInt32LE(0xffffff, 0);
    await expectCorrupt({ ...s.raw, ctrl: bigX });
  });

  it('adds old bytes four per step exactly as one at a time (every offset alignment, lengths around the unrolled loop)', () => {
    const src = randomBytes(4096 + 64);
    for (const n of [0, 1, 3, 15, 16, 17, 31, 64, 1000, 4096]) {
      for (let o = 0; o < 8; o++) {
        for (let s = 0; s < 8; s++) {
          const base = randomBytes(n + 16);
          // (carries in every bit position: 0xff + 0x01, 0x80 + 0x80, ...)
          if (n > 8) base.fill(0xff, o, o + 4);
          const fast = Buffer.from(base);
          const slow = Buffer.from(base);
          addBytes(fast, o, src, s, n);
          for (let k = 0; k < n; k++) slow[o + k] = (slow[o + k]! + src[s + k]!) & 0xff;
          expect(fast.equals(slow), `n=${n} o=${o} s=${s}`).toBe(true);
        }
      }
    }
  });

  it('decodes sign-magnitude control values', () => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(5, 0);
    expect(offtin(b, 0)).toBe(5);
    b.writeUInt32LE(0x80000000, 4);
    expect(offtin(b, 0)).toBe(-5);
  });
});

describe('control stream columns', () => {
  /** bsdiff's 8-byte sign-magnitude integer. */
  const offtout = (v: number, negZero = false) => {
    const b = Buffer.alloc(8);
    const m = Math.abs(v);
    b.writeUInt32LE(m % 2 ** 32, 0);
    b.writeUInt32LE((Math.floor(m / 2 ** 32) | (v < 0 || negZero ? 0x80000000 : 0)) >>> 0, 4);
    return b;
  };
  it('round-trips every triple byte for byte (negative, -0, 2^53-1), and is smaller', () => {
    const values = [0, 1, 127, 128, -1, -300, 2 ** 40, -(2 ** 53 - 1), 2 ** 53 - 1, 65536];
    const raw = Buffer.concat([...values.flatMap((v, i) => [offtout(v), offtout(values[(i + 3) % values.length]!), offtout(-v)]), offtout(0, true), offtout(5), offtout(0)]);
    const enc = encodeCtrl(raw);
    expect(decodeCtrl(enc, raw.length / 24).equals(raw)).toBe(true);
    const typical = Buffer.concat(Array.from({ length: 1000 }, (_, i) => Buffer.concat([offtout(i * 37), offtout(i % 5), offtout(-(i % 13))])));
    expect(encodeCtrl(typical).length * 3).toBeLessThan(typical.length);
  });
  it('refuses a stream that is not exactly its triples (DELTA_CORRUPT)', () => {
    const enc = encodeCtrl(Buffer.concat([offtout(3), offtout(4), offtout(-5)]));
    for (const [b, n] of [[enc, 2], [enc.subarray(0, 2), 1], [Buffer.concat([enc, Buffer.from([0])]), 1], [Buffer.alloc(12, 0xff), 1]] as const) {
      try {
        decodeCtrl(b, n);
        throw new Error('did not throw');
      } catch (e) {
        expect(e).toBeInstanceOf(TiuError);
        expect((e as TiuError).code).toBe('DELTA_CORRUPT');
      }
    }
  });
});
