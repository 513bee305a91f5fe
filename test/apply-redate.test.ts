/**
 * The re-dating child (src/tiu/apply/redate.ts) on a real directory with real sh and touch: odd
 * names, symlinks (their own time, dangling ones too), a missing path, an interrupted run.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { lstat, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { testSystem } from './helpers/env.ts';
import { startRedate } from '../src/tiu/apply/redate.ts';
import type { IndexEntry } from '../src/core/fileindex/types.ts';
import { TiuError } from '../src/core/errors.ts';

const sys = testSystem();
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-redate-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const entry = (path: string | Buffer, type: 'file' | 'symlink', mtime: number): IndexEntry => ({
  path: typeof path === 'string' ? path : path.toString('latin1'),
  type, mode: 0o644, uid: 0, gid: 0, mtime,
});

describe('startRedate', () => {
  it('sets the mtime (and atime) of every entry, names as bytes, symlinks not followed', async () => {
    const root = join(work, 'ok');
    await mkdir(join(root, 'd/sub'), { recursive: true });
    const names = ['plain', "it's", 'new\nline', '-dash', 'with space', '$(touch pwned)', 'd/sub/deep'];
    for (const n of names) await writeFile(join(root, n), n);
    const odd = Buffer.concat([Buffer.from(root + '/'), Buffer.from([0x66, 0xff])]);
    await writeFile(odd, 'odd');
    await writeFile(join(root, 'target'), 't');
    await utimes(join(root, 'target'), 1_000, 1_000);
    await symlink('target', join(root, 'link'));
    await symlink('nowhere', join(root, 'dangling'));
    const es = [
      ...names.map((n, i) => entry(n, 'file', 1_600_000_000 + (i % 2))),
      entry(Buffer.from([0x66, 0xff]), 'file', 1_650_000_000),
      entry('link', 'symlink', 1_500_000_000),
      entry('dangling', 'symlink', 1_500_000_001),
    ];
    const run = startRedate(sys, root, es);
    await run.done();
    for (const e of es) {
      const st = await lstat(Buffer.concat([Buffer.from(root + '/'), Buffer.from(e.path, 'latin1')]));
      expect([e.path, st.mtimeMs / 1000, st.atimeMs / 1000]).toEqual([e.path, e.mtime, e.mtime]);
    }
    // The link's target kept its own time; no name was run as a command.
    expect((await lstat(join(root, 'target'))).mtimeMs).toBe(1_000_000);
    await expect(lstat(join(root, 'pwned'))).rejects.toThrow(/ENOENT/);
  });

  it('a missing path fails with touch\'s message, and creates nothing', async () => {
    const root = join(work, 'missing');
    await mkdir(root);
    await writeFile(join(root, 'here'), 'x');
    const run = startRedate(sys, root, [entry('here', 'file', 1_600_000_000), entry('gone', 'file', 1_600_000_000)]);
    const err = await run.done().then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(TiuError);
    expect((err as TiuError).code).toBe('APPLY_FAILED');
    expect((err as Error).message).toMatch(/setting the times of 2 re-dated files failed: touch: .*gone.*No such file/);
    await expect(lstat(join(root, 'gone'))).rejects.toThrow(/ENOENT/);
  });

  it('stop() ends a running child and never throws', async () => {
    const root = join(work, 'stop');
    await mkdir(root);
    const es: IndexEntry[] = [];
    for (let i = 0; i < 3000; i++) es.push(entry(`f${i}`, 'file', 1_600_000_000 + (i % 300)));
    for (let i = 0; i < 3000; i++) await writeFile(join(root, `f${i}`), '');
    const run = startRedate(sys, root, es);
    await run.stop();
    await run.stop();
  });
});
