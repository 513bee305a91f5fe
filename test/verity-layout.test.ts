/** Pure tests of the dm-verity tree geometry (the on-disk comparison with veritysetup is in verity.test.ts). */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { verityLayout } from '../src/tiu/verity.ts';
import { TiuError } from '../src/core/errors.ts';
import { veritysetupVerifyArgs } from '../src/tiu/verity/external.ts';

describe('verityLayout', () => {
  it('has no tree for a single data block', () => {
    expect(verityLayout(1)).toMatchObject({ levels: [], size: 0, hashesPerBlock: 128, slotSize: 32 });
  });

  it('fits up to 128 data blocks in one hash block', () => {
    expect(verityLayout(2).levels).toEqual([{ level: 0, blocks: 1, offset: 0, digests: 2 }]);
    expect(verityLayout(128)).toMatchObject({ levels: [{ level: 0, blocks: 1, offset: 0, digests: 128 }], size: 4096 });
  });

  it('stores the top level first', () => {
    expect(verityLayout(129)).toMatchObject({
      levels: [
        { level: 1, blocks: 1, offset: 0, digests: 2 },
        { level: 0, blocks: 2, offset: 4096, digests: 129 },
      ],
      size: 3 * 4096,
    });
    expect(verityLayout(128 * 128 + 1).levels).toEqual([
      { level: 2, blocks: 1, offset: 0, digests: 2 },
      { level: 1, blocks: 2, offset: 4096, digests: 129 },
      { level: 0, blocks: 129, offset: 3 * 4096, digests: 16385 },
    ]);
  });

  it('follows the kernel rules for any size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 40 }), (n) => {
        const l = verityLayout(n);
        // dm-verity: levels = the smallest L with (n - 1) >> (7 * L) == 0.
        let kernelLevels = 0;
        while (BigInt(n - 1) >> BigInt(7 * kernelLevels) !== 0n) kernelLevels++;
        expect(l.levels.length).toBe(kernelLevels);
        let offset = 0;
        let below = n;
        for (const [i, lv] of l.levels.entries()) {
          expect(lv.level).toBe(l.levels.length - 1 - i);
          expect(lv.offset).toBe(offset);
          offset += lv.blocks * 4096;
        }
        for (const lv of [...l.levels].reverse()) {
          expect(lv.digests).toBe(below);
          expect(lv.blocks).toBe(Math.ceil(below / 128));
          below = lv.blocks;
        }
        expect(below).toBe(1);
        expect(l.size).toBe(offset);
      }),
      { numRuns: 2000 },
    );
  });

  it('uses power-of-two digest slots for other digest and block sizes', () => {
    // sha1 (20 bytes) in 32-byte slots, as veritysetup's format 1 does.
    expect(verityLayout(1000, { digestSize: 20 })).toMatchObject({ slotSize: 32, hashesPerBlock: 128, size: 9 * 4096 });
    expect(verityLayout(1000, { hashBlockSize: 1024 })).toMatchObject({ hashesPerBlock: 32, size: (32 + 1) * 1024 });
  });

  it('rejects impossible arguments', () => {
    for (const n of [0, -1, 1.5, Number.NaN, 2 ** 53]) expect(() => verityLayout(n)).toThrow(TiuError);
    expect(() => verityLayout(10, { hashBlockSize: 3000 })).toThrow(/power of two/);
    expect(() => verityLayout(10, { hashBlockSize: 512, digestSize: 300 })).toThrow(/does not fit/);
  });
});

describe('veritysetupVerifyArgs', () => {
  const p = { dataSize: 12116 * 4096, hashOffset: 12116 * 4096, salt: 'ab'.repeat(32), rootHash: 'cd'.repeat(32) };

  it('gives the geometry of a tiu archive: data and tree in one file, format 1, no superblock', () => {
    expect(veritysetupVerifyArgs('/proc/1/fd/3', p)).toEqual([
      'verify', '--no-superblock', '--format=1', '--hash=sha256', '--data-block-size=4096', '--hash-block-size=4096',
      '--data-blocks=12116', `--hash-offset=${12116 * 4096}`, `--salt=${'ab'.repeat(32)}`, '--', '/proc/1/fd/3', '/proc/1/fd/3', 'cd'.repeat(32),
    ]);
  });

  it("passes an empty salt as veritysetup's '-'", () => {
    expect(veritysetupVerifyArgs('f', { ...p, salt: '' })).toContain('--salt=-');
  });

  it('refuses values that are not hex (they come from a manifest)', () => {
    expect(() => veritysetupVerifyArgs('f', { ...p, rootHash: '--help' })).toThrow(/root hash/);
    expect(() => veritysetupVerifyArgs('f', { ...p, salt: 'zz' })).toThrow(/salt/);
  });
});
