/**
 * Memory stays flat while hashing a large image: a 512 MiB sparse file (zero blocks) is hashed
 * and verified with the resident set growing by well under 64 MiB. Runs in its own file so
 * other tests do not disturb the RSS measurement; prints the throughput.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { open, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { computeHashTree, verifyHashTree } from '../src/tiu/verity.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const sys = testSystem();
const MiB = 1024 * 1024;
const SIZE = 512 * MiB;

describe('verity on a 512 MiB sparse image', () => {
  it('computes the same tree as veritysetup and verifies with bounded memory', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'image');
    await sys.run('truncate', ['-s', String(SIZE), file]);
    const salt = randomBytes(32);

    const hashFile = join(d.path, 'hash');
    await writeFile(hashFile, '');
    const vs = await sys.run('veritysetup', ['format', '--no-superblock', `--salt=${salt.toString('hex')}`, file, hashFile]);
    const expectedRoot = /Root hash:\s+([0-9a-f]{64})/.exec(vs.stdout)?.[1];

    const fh = await open(file, 'r+');
    try {
      // Warm up module loading and the worker code path on a small region before measuring.
      await verifyHashTree(fh, { dataSize: 4096, hashOffset: 4096, hashSize: 0, salt, rootHash: (await computeHashTree(fh, { dataSize: 4096, hashOffset: SIZE, salt })).rootHash });

      const runs: { label: string; mibps: number; growth: number }[] = [];
      const measure = async <T>(label: string, fn: (sample: () => void) => Promise<T>): Promise<T> => {
        const before = process.memoryUsage.rss();
        let peak = before;
        const sample = () => { peak = Math.max(peak, process.memoryUsage.rss()); };
        const t0 = performance.now();
        const result = await fn(sample);
        const seconds = (performance.now() - t0) / 1000;
        sample();
        runs.push({ label, mibps: SIZE / MiB / seconds, growth: (peak - before) / MiB });
        return result;
      };

      const { rootHash, hashSize } = await measure('compute (default workers)', (sample) =>
        computeHashTree(fh, { dataSize: SIZE, hashOffset: SIZE, salt, onProgress: sample }));
      expect(rootHash.toString('hex')).toBe(expectedRoot);
      expect((await readFile(hashFile)).equals(await readTree(fh, SIZE, hashSize))).toBe(true);

      for (const workers of [undefined, 0]) {
        await measure(`verify (workers ${workers ?? 'default'})`, (sample) =>
          verifyHashTree(fh, { dataSize: SIZE, hashOffset: SIZE, hashSize, salt, rootHash, workers, onProgress: sample }));
      }
      for (const r of runs) console.log(`verity 512 MiB ${r.label}: ${r.mibps.toFixed(0)} MiB/s, RSS growth ${r.growth.toFixed(1)} MiB`);
      for (const r of runs) expect(r.growth, r.label).toBeLessThan(64);
      // The device side (verify, default: no workers) stays flat: within 24 MiB of where it started
      // (0-14 MiB measured on an idle machine, 17 once under a load average of 20: the GC's timing
      // inside a test worker; issue #14's 16 MiB is for the CLI in the bench).
      for (const r of runs.filter((x) => x.label.startsWith('verify'))) expect(r.growth, r.label).toBeLessThan(24);

      // The tree really is checked on this path: one changed byte in the middle is found.
      await fh.write(Buffer.from([1]), 0, 1, SIZE / 2 + 7);
      await expect(verifyHashTree(fh, { dataSize: SIZE, hashOffset: SIZE, hashSize, salt, rootHash }))
        .rejects.toThrow(`verity: data block ${SIZE / 2 / 4096} (byte offset ${SIZE / 2}) does not match the hash tree`);
    } finally {
      await fh.close();
    }
  });
});

async function readTree(fh: import('node:fs/promises').FileHandle, at: number, size: number): Promise<Buffer> {
  const buf = Buffer.alloc(size);
  const { bytesRead } = await fh.read(buf, 0, size, at);
  expect(bytesRead).toBe(size);
  return buf;
}
