/**
 * V8's code cache across runs (src/tiu/compile-cache.ts): one directory per install, and the
 * stale ones of earlier installs removed by the first run of a new one, so /var/cache/tiu does
 * not grow by a few MB with every update, forever.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execa } from 'execa';
import { join } from 'node:path';
import { lstat, lutimes, mkdir, mkdtemp, readdir, rm, symlink, utimes, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { COMPILE_CACHE_MAX_AGE_MS, compileCacheKey, pruneCompileCaches } from '../src/tiu/compile-cache.ts';
import { NODE } from './helpers/archive.ts';

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-ccache-'));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

const DAY = 24 * 3600 * 1000;
async function aged(p: string, ms: number): Promise<void> {
  const t = new Date(Date.now() - ms);
  await utimes(p, t, t);
}

describe('compile cache', () => {
  it('prunes only stale entries beside the kept one, never through a symlink', async () => {
    const root = join(work, 'cache');
    const outside = join(work, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'keep'), 'x');
    for (const [name, age] of [['old', 8 * DAY], ['recent', 1 * DAY], ['current', 30 * DAY]] as const) {
      await mkdir(join(root, name, 'v24'), { recursive: true });
      await writeFile(join(root, name, 'v24', 'entry'), 'cache');
      await aged(join(root, name), age);
    }
    await symlink(outside, join(root, 'link'));
    const tenDaysAgo = new Date(Date.now() - 10 * DAY);
    await lutimes(join(root, 'link'), tenDaysAgo, tenDaysAgo);
    const removed = pruneCompileCaches(root, 'current', Date.now() - COMPILE_CACHE_MAX_AGE_MS);
    expect(removed.sort()).toEqual(['link', 'old']);
    expect((await readdir(root)).sort()).toEqual(['current', 'recent']);
    expect(await readFile(join(outside, 'keep'), 'utf8')).toBe('x');
  });

  it('names the directory after the entry file: another file or a replaced one gets another', async () => {
    const a = join(work, 'a.mjs');
    const b = join(work, 'b.mjs');
    await writeFile(a, '');
    await writeFile(b, '');
    expect(compileCacheKey(a)).toMatch(/^tiu-[0-9a-z]+-[0-9a-z]+$/);
    expect(compileCacheKey(a)).toBe(compileCacheKey(a));
    expect(compileCacheKey(b)).not.toBe(compileCacheKey(a));
    await aged(a, DAY);
    expect(compileCacheKey(a)).not.toBe(compileCacheKey(b));
  });

  it.skipIf(process.getuid?.() !== 0)('as root, the CLI caches in one directory per install and removes a stale one on its first run', async () => {
    const root = join(work, 'cache');
    await mkdir(join(root, 'v24.0.0-x64-stale-0'), { recursive: true });
    await writeFile(join(root, 'v24.0.0-x64-stale-0', 'entry'), 'old cache');
    await aged(join(root, 'v24.0.0-x64-stale-0'), 9 * DAY);
    await mkdir(join(root, 'tiu-other-recent'));
    const run = () => execa(NODE, [join(import.meta.dirname, '../bin/tiu.js'), 'status', '--help'], { env: { TIU_COMPILE_CACHE: root, NODE_COMPILE_CACHE: '' } });
    expect((await run()).exitCode).toBe(0);
    const after = (await readdir(root)).sort();
    expect(after).toHaveLength(2);
    expect(after).toContain('tiu-other-recent');
    const mine = after.find((n) => n !== 'tiu-other-recent')!;
    expect(mine).toMatch(/^tiu-/);
    // Node keeps its entries in a subdirectory per Node version.
    expect((await readdir(join(root, mine))).length).toBeGreaterThan(0);
    expect((await lstat(join(root, mine))).isDirectory()).toBe(true);
    // The second run finds its directory and changes nothing beside it.
    await aged(join(root, 'tiu-other-recent'), 8 * DAY);
    expect((await run()).exitCode).toBe(0);
    expect((await readdir(root)).sort()).toEqual(after);
  });
});
