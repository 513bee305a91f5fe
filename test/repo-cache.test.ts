/**
 * The device's repository metadata cache under concurrency: one refresh at a time per cache
 * (a lock on `<cache>/.lock`, of the same kind as the transaction lock: src/snapshot/lock.ts's
 * tryLockFile), a second one waits and then fails BUSY without touching the cache; a symlink
 * planted as the lock file is refused. Real locks; the repository is read over file://.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { init, publish, refresh } from '../src/tiu/repo/ops.ts';
import { refreshRepository } from '../src/tiu/repo/client.ts';
import { tryLockFile } from '../src/snapshot/lock.ts';
import { createLogger } from '../src/core/log.ts';
import type { Manifest } from '../src/tiu/archive/manifest.ts';
import { testSystem } from './helpers/env.ts';

const sys = testSystem();
const log = createLogger('warn');
let dir: string;
let repo: string;
let keys: string;
let cache: string;

const client = (o: { lockWaitMs?: number } = {}) =>
  refreshRepository({ url: `file://${repo}`, trustedRootFile: join(repo, 'metadata/1.root.json'), cacheDir: cache, log, compatible: 'dev', sys, ...o });

async function cacheFiles(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of (await readdir(cache)).sort()) if (f.endsWith('.json')) out[f] = await readFile(join(cache, f), 'utf8');
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tiu-repo-cache-'));
  repo = join(dir, 'repo');
  keys = join(dir, 'keys');
  cache = join(dir, 'cache');
  await init(repo, keys);
  await writeFile(join(dir, 'a.tiu'), 'a');
  const manifest = { compatible: 'dev', version: '1.0', index: { sha256: '1'.padStart(64, '0'), path: 'x', size: 1, entries: 1 } } as unknown as Manifest;
  await publish({ dir: repo, keysDir: keys, archive: join(dir, 'a.tiu'), manifest, channel: 'stable', phased: 100 });
  await client();
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('repository metadata cache lock', () => {
  it('a refresh while another holds the cache waits, then fails BUSY and changes nothing', async () => {
    await refresh({ dir: repo, keysDir: keys });
    const before = await cacheFiles();
    const other = await tryLockFile(sys, join(cache, '.lock'), 'test');
    expect(other).toBeDefined();
    try {
      const t0 = Date.now();
      const err = await client({ lockWaitMs: 600 }).then(() => undefined, (e) => e);
      expect(err).toMatchObject({ code: 'BUSY' });
      expect(err.message).toMatch(/another tiu is refreshing the metadata of file:\/\//);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(600);
      expect(await cacheFiles()).toEqual(before);
    } finally {
      await other!.release();
    }
    // Released: the waiting refresh goes through and takes the new timestamp.
    const r = await client({ lockWaitMs: 600 });
    expect(r.timestampVersion).toBe(JSON.parse(before['timestamp.json']!).signed.version + 1);
  });

  it('a refresh that waits gets the lock as soon as the holder releases it', async () => {
    const other = (await tryLockFile(sys, join(cache, '.lock'), 'test'))!;
    const pending = client({ lockWaitMs: 10_000 });
    setTimeout(() => void other.release(), 500);
    await expect(pending).resolves.toMatchObject({ images: [expect.objectContaining({ version: '1.0' })] });
  });

  it('a symlink planted as the lock file is refused (PATH_UNSAFE), not followed', async () => {
    const c2 = join(dir, 'cache2');
    await client();
    await rm(c2, { recursive: true, force: true });
    await import('node:fs/promises').then((fs) => fs.mkdir(c2));
    await symlink(join(dir, 'elsewhere'), join(c2, '.lock'));
    await expect(refreshRepository({ url: `file://${repo}`, trustedRootFile: join(repo, 'metadata/1.root.json'), cacheDir: c2, log, compatible: 'dev', sys })).rejects.toMatchObject({ code: 'PATH_UNSAFE' });
    expect((await readdir(c2)).sort()).toEqual(['.lock']);
  });
});
