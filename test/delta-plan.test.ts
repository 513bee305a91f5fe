/**
 * The pure parts of deltas: the planner (what to send, what the device reuses by digest, what to
 * patch against) and the strict parsers of the format's envelope, header and framing.
 */
import { describe, it, expect } from 'vitest';
import { planDelta, oldSources, sourceLocation, PATCH_MAX_BYTES } from '../src/tiu/delta/plan.ts';
import {
  parseEnvelope, parseHeader, serializeHeader, inflateHeader, encodePreamble, decodePreamble, locateDeltaSignature, PREAMBLE_SIZE, DELTA_VERSION, type Header, type DeltaContent,
} from '../src/tiu/delta/format.ts';
import { TiuError } from '../src/core/errors.ts';
import type { IndexEntry } from '../src/core/fileindex/types.ts';

const d = (c: string) => c.repeat(64).slice(0, 64);
const file = (path: string, sha: string, size = 100): IndexEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, size, sha256: d(sha) });

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TiuError);
    return (e as TiuError).code;
  }
  throw new Error('did not throw');
}

describe('planDelta', () => {
  const old = [file('etc/conf', 'e'), file('usr/bin/a', '1'), file('usr/lib/libx.so.1.2', '2'), file('usr/share/doc', '3'), file('usr/big', '4', PATCH_MAX_BYTES + 1)];

  it('sends nothing for renamed, moved and copied contents; sends each new content once', () => {
    const neu = [file('usr/bin/a', '1'), file('usr/bin/renamed', '3'), file('usr/copy1', '5'), file('usr/copy2', '5'), file('usr/moved/conf', 'e')];
    const p = planDelta(old, neu);
    expect(p.needed.map((n) => [n.sha256, n.entry])).toEqual([[d('5'), 2]]);
    expect(p.reused).toBe(3);
    expect(p.reusedBytes).toBe(300);
  });

  it('patches against the same path, else the same name with other digits; not above the size limit', () => {
    const neu = [file('usr/bin/a', '6'), file('usr/lib/libx.so.1.3', '7'), file('usr/new', '8'), file('usr/big', '9', 10), file('etc/conf', 'a')];
    const p = planDelta(old, neu);
    const by = new Map(p.needed.map((n) => [n.path, n.base?.path]));
    expect(Object.fromEntries(by)).toEqual({ 'usr/bin/a': 'usr/bin/a', 'usr/lib/libx.so.1.3': 'usr/lib/libx.so.1.2', 'usr/new': undefined, 'usr/big': undefined, 'etc/conf': 'etc/conf' });
    expect(p.needed.map((n) => n.entry)).toEqual([0, 1, 2, 3, 4]);
    expect(p.needed.find((n) => n.path === 'usr/lib/libx.so.1.3')!.base!.entry).toBe(2);
  });

  it('prefers a source outside /etc, and reads old /etc files from the vendor copy', () => {
    const s = oldSources([file('etc/x', '1'), file('usr/x', '1'), file('etc/only', '2')]);
    expect(s.get(d('1'))!.path).toBe('usr/x');
    expect(s.get(d('2'))!.path).toBe('etc/only');
    expect(sourceLocation('etc/only')).toBe('usr/lib/tiu/vendor-etc/only');
    expect(sourceLocation('usr/etc/x')).toBe('usr/etc/x');
  });

  it('an identical image needs no content', () => {
    expect(planDelta(old, old).needed).toEqual([]);
  });
});

describe('format parsers', () => {
  const h: Header = {
    targetSignature: { offset: 0, size: 10 },
    index: { method: 'zstd', offset: 10, size: 5 },
    bsdiff: { ctrl: { offset: 19, size: 1 }, diff: { offset: 20, size: 2 }, extra: { offset: 22, size: 1 } },
    contents: {
      offset: 15,
      items: [
        { entry: 3, method: 'zstd', length: 4 },
        { entry: 7, method: 'bsdiff', base: 2, ctrl: 24, diff: 10, extra: 0 },
      ],
    },
  };
  const parse = (x: unknown, area = 23) => parseHeader(Buffer.from(JSON.stringify(x)), area);

  it('round-trips a header through its stored (compressed) form', () => {
    expect(parseHeader(inflateHeader(serializeHeader(h)), 23)).toEqual(h);
  });

  it('rejects blobs out of bounds or overlapping, unsorted contents, patches without a base, mixed fields, unknown keys', () => {
    const [a, b] = h.contents.items as [DeltaContent, DeltaContent];
    const items = (...i: unknown[]) => ({ ...h, contents: { offset: 15, items: i } });
    expect(code(() => parse(h, 22))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...h, index: { ...h.index, offset: 9 } }))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...h, contents: { offset: 14, items: [a, b] } }))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...h, bsdiff: { ...h.bsdiff, diff: { offset: 19, size: 2 } } }))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(b, a)))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...a, entry: 3 })))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...b, base: undefined })))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...b, length: 1 })))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items({ ...a, ctrl: 24 }, b)))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...items(a, b), bsdiff: undefined }))).toBe('DELTA_FORMAT');
    // bsdiff-elf: the bsdiff slices and a length (its address map), nothing of gzip-patch.
    const elf = { ...b, method: 'bsdiff-elf' };
    expect(parse({ ...items({ ...a, length: 3 }, { ...elf, length: 1 }) }).contents.items[1]!.method).toBe('bsdiff-elf');
    expect(code(() => parse(items(a, elf)))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...elf, length: 1, ctrl: undefined })))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...elf, length: 1, gzipLevel: 9 })))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items(a, { ...elf, length: 1, base: undefined })))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...items(a, { ...elf, length: 1 }), bsdiff: undefined }))).toBe('DELTA_FORMAT');
    expect(code(() => parse(items({ ...a, entry: -1 })))).toBe('DELTA_FORMAT');
    expect(code(() => parse({ ...h, extra: 1 }))).toBe('DELTA_FORMAT');
    expect(code(() => parseHeader(Buffer.from([0xff, 0xfe]), 10))).toBe('DELTA_FORMAT');
    expect(code(() => inflateHeader(Buffer.from('not zstd')))).toBe('DELTA_FORMAT');
  });

  it('rejects a bad envelope', () => {
    const e = { format: 'tiu-delta', formatVersion: DELTA_VERSION, compatible: 'x', base: { version: '1', indexSha256: d('1') }, target: { version: '2', indexSha256: d('2') }, body: { size: 1, sha256: d('3') }, generator: 'tiu' };
    expect(parseEnvelope(Buffer.from(JSON.stringify(e))).target.version).toBe('2');
    expect(code(() => parseEnvelope(Buffer.from(JSON.stringify({ ...e, formatVersion: 1 }))))).toBe('DELTA_FORMAT');
    expect(code(() => parseEnvelope(Buffer.from(JSON.stringify({ ...e, formatVersion: 3 }))))).toBe('DELTA_FORMAT');
    expect(code(() => parseEnvelope(Buffer.from(JSON.stringify({ ...e, base: { version: '1', indexSha256: 'x' } }))))).toBe('DELTA_FORMAT');
    expect(code(() => parseEnvelope(Buffer.alloc(9000, 0x20)))).toBe('DELTA_FORMAT');
  });

  it('checks the framing: magic, version, header length, signature size', () => {
    expect(decodePreamble(encodePreamble(100), 200)).toBe(100);
    expect(code(() => decodePreamble(encodePreamble(100), 110))).toBe('DELTA_FORMAT');
    const v2 = encodePreamble(1);
    v2.writeUInt32BE(1, 8);
    expect(code(() => decodePreamble(v2, 100))).toBe('DELTA_FORMAT');
    // Format 3 (no bsdiff-elf) is refused by name, with advice.
    v2.writeUInt32BE(3, 8);
    expect(() => decodePreamble(v2, 100)).toThrow(/delta format version 3 is not supported \(this tiu reads 4\)/);
    expect(code(() => decodePreamble(Buffer.from('hsqs' + ' '.repeat(12)), 100))).toBe('DELTA_FORMAT');
    const t = (n: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(n);
      return b;
    };
    expect(locateDeltaSignature(1000, t(100n))).toEqual({ sigOffset: 892, sigSize: 100 });
    for (const n of [0n, 70_000n, 1000n, 2n ** 63n]) expect(code(() => locateDeltaSignature(1000, t(n)))).toBe('DELTA_FORMAT');
    expect(code(() => locateDeltaSignature(PREAMBLE_SIZE, t(1n)))).toBe('DELTA_FORMAT');
  });
});
