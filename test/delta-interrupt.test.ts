/**
 * `tiu delta` stopped by SIGTERM or SIGINT while it encodes (both images mounted): it ends with
 * INTERRUPTED and leaves no mount, no loop device on the archives, no output and no temp file.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { testSystem } from './helpers/env.ts';
import { makeArchives, TIU, type ArchiveSet } from './helpers/device.ts';
import { ERROR_CODES } from '../src/core/errors.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-delta-int-'));
  // A large incompressible file changed in v2 keeps the encoder busy for seconds.
  const big = randomBytes(12 * 1024 * 1024);
  A = await makeArchives(sys, work, {
    prepare: async (tree, v) => {
      if (v === 2) big[5_000_000] = big[5_000_000]! ^ 1;
      await writeFile(join(tree, 'usr/lib/big.bin'), big);
    },
  });
}, 600_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Loop devices backed by one of the two archives. */
async function loops(): Promise<string> {
  const out: string[] = [];
  for (const a of [A.v1, A.v2]) out.push((await sys.run('losetup', ['-j', a])).stdout.trim());
  return out.filter(Boolean).join('\n');
}

describe('tiu delta interrupted', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} while encoding: INTERRUPTED, no mounts, no loop devices, no output`, async () => {
      const out = join(work, `int-${signal}.tiud`);
      const child = execa(process.execPath, [TIU, 'delta', A.v1, A.v2, '-o', out, '--key', A.keys.signingKey, '--cert', A.keys.signingCert, '--keyring', A.keys.keyring], { reject: false });
      // Wait until both images are mounted (loop devices on both archives).
      let seen = '';
      for (let i = 0; i < 600 && seen.split('\n').length < 2; i++) {
        seen = await loops();
        if (seen.split('\n').length < 2) await new Promise((r) => setTimeout(r, 100));
      }
      expect(seen.split('\n'), 'both images were mounted before the signal').toHaveLength(2);
      // Our mounts: those whose source is one of these loop devices.
      const devs = seen.split('\n').map((l) => l.split(':')[0]!);
      const ours = async () => (await sys.run('findmnt', ['-rn', '-o', 'SOURCE,TARGET'])).stdout.split('\n').filter((l) => devs.includes(l.split(' ')[0]!));
      expect(await ours()).toHaveLength(2);
      child.kill(signal);
      const r = await child;
      expect(r.stderr).toMatch(new RegExp(`interrupted by ${signal}; no delta was written.*\\[INTERRUPTED\\]`));
      expect(r.exitCode).toBe(ERROR_CODES.INTERRUPTED.exit);
      expect(await loops()).toBe('');
      expect(await ours()).toEqual([]);
      expect((await readdir(work)).filter((f) => f.startsWith(`int-${signal}`) || f.startsWith(`.int-${signal}`))).toEqual([]);
    }, 300_000);
  }
});
