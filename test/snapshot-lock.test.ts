/**
 * The per-root transaction lock: real locks (in-process open-file-description locks, and the
 * flock(1) helper where the binding is not used), real child processes, a real SIGKILL.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { access, mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { acquireLock, lockFileFor } from '../src/snapshot/lock.ts';
import { TiuError } from '../src/core/errors.ts';
import { tempDir, testSystem } from './helpers/env.ts';

const LOCK_MODULE = new URL('../src/snapshot/lock.ts', import.meta.url).pathname;
const SYSTEM_MODULE = new URL('../src/core/system.ts', import.meta.url).pathname;
const LOG_MODULE = new URL('../src/core/log.ts', import.meta.url).pathname;

let runDir: string;
const previous = process.env.TIU_RUN_DIR;
beforeAll(async () => {
  runDir = await mkdtemp(join(tmpdir(), 'tiu-run-'));
  process.env.TIU_RUN_DIR = join(runDir, 'run', 'tiu');
});
afterAll(async () => {
  if (previous === undefined) delete process.env.TIU_RUN_DIR;
  else process.env.TIU_RUN_DIR = previous;
  await rm(runDir, { recursive: true, force: true });
});

async function busy(root: string): Promise<TiuError | undefined> {
  try {
    const lock = await acquireLock(testSystem(), root);
    await lock[Symbol.asyncDispose]();
    return undefined;
  } catch (e) {
    if (e instanceof TiuError) return e;
    throw e;
  }
}

/** Starts a separate node process that takes the lock on `root`, prints LOCKED and waits forever. */
async function lockInChild(root: string, env: Record<string, string> = {}) {
  const code = [
    `import { acquireLock } from ${JSON.stringify(LOCK_MODULE)};`,
    `import { createSystem } from ${JSON.stringify(SYSTEM_MODULE)};`,
    `import { createLogger } from ${JSON.stringify(LOG_MODULE)};`,
    `await acquireLock(createSystem(createLogger(process.env.TIU_TEST_DEBUG ? 'debug' : 'warn')), process.argv[1]);`,
    `process.stdout.write('LOCKED\\n');`,
    `setInterval(() => {}, 1000);`,
  ].join('\n');
  const child = testSystem().spawn(process.execPath, ['--input-type=module', '-e', code, root], { env: { TIU_RUN_DIR: process.env.TIU_RUN_DIR, ...env } });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`child did not take the lock within 20 s: ${out} ${err}`));
    }, 20_000);
    let err = '';
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('LOCKED\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.then((r) => reject(new Error(`child exited early: ${String((r as { stderr?: unknown }).stderr)}`)), reject);
  });
  // Wrapped: the execa child is a thenable, returning it bare would wait for its exit.
  return { child };
}

/** Takes and releases the lock on `root` in a separate node process: 'ok', or the TiuError code. */
async function tryInChild(root: string, env: Record<string, string>): Promise<string> {
  const code = [
    `import { acquireLock } from ${JSON.stringify(LOCK_MODULE)};`,
    `import { createSystem } from ${JSON.stringify(SYSTEM_MODULE)};`,
    `import { createLogger } from ${JSON.stringify(LOG_MODULE)};`,
    `try { const l = await acquireLock(createSystem(createLogger('warn')), process.argv[1]); await l[Symbol.asyncDispose](); console.log('ok'); }`,
    `catch (e) { console.log(e.code ?? e.message); }`,
  ].join('\n');
  const r = await testSystem().run(process.execPath, ['--input-type=module', '-e', code, root], { env: { TIU_RUN_DIR: process.env.TIU_RUN_DIR!, ...env } });
  return r.stdout.trim();
}

describe('transaction lock', () => {
  it('is exclusive per root, fails fast with BUSY naming the holder, and is released on dispose', async () => {
    await using d = await tempDir();
    const sys = testSystem();
    const lock = await acquireLock(sys, d.path);
    const t0 = Date.now();
    const e = await busy(d.path);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(e?.code).toBe('BUSY');
    expect(e?.message).toBe(`another tiu transaction is running on ${d.path} (pid ${process.pid})`);
    expect(e?.hint).toMatch(/^wait for it to finish/);
    // The lock and info files are where documented.
    const expected = join(process.env.TIU_RUN_DIR!, `${createHash('sha256').update(d.path).digest('hex').slice(0, 16)}.lock`);
    expect(lockFileFor(d.path)).toBe(expected);
    await access(expected);
    const info = JSON.parse(await readFile(expected.replace(/\.lock$/, '.info'), 'utf8')) as { pid: number; root: string };
    expect(info).toMatchObject({ pid: process.pid, root: d.path });

    await lock[Symbol.asyncDispose]();
    await expect(access(expected.replace(/\.lock$/, '.info'))).rejects.toThrow();
    // Free again, at once and repeatedly.
    expect(await busy(d.path)).toBeUndefined();
    expect(await busy(d.path)).toBeUndefined();
  });

  it('locks the real path: a symlink to the root is the same root, another root is independent', async () => {
    await using d = await tempDir();
    const a = join(d.path, 'a');
    const b = join(d.path, 'b');
    await mkdir(a);
    await mkdir(b);
    await symlink(a, join(d.path, 'link'));
    await using _lock = await acquireLock(testSystem(), a);
    expect((await busy(join(d.path, 'link')))?.code).toBe('BUSY');
    expect(await busy(b)).toBeUndefined();
    expect((await busy(join(d.path, 'missing')))?.code).toBe('INPUT_NOT_FOUND');
  });

  it('is released when the holding process is killed with SIGKILL', async () => {
    await using d = await tempDir();
    const { child } = await lockInChild(d.path);
    const held = await busy(d.path);
    expect(held?.code).toBe('BUSY');
    expect(held?.message).toContain(`(pid ${child.pid})`);

    child.kill('SIGKILL');
    await child.catch(() => {});
    // The helper sees EOF on its stdin and exits; give it a moment.
    let free = false;
    for (let i = 0; i < 50 && !free; i++) {
      free = (await busy(d.path)) === undefined;
      if (!free) await sleep(100);
    }
    expect(free).toBe(true);
    // And it can be held again.
    await using _lock = await acquireLock(testSystem(), d.path);
    expect((await busy(d.path))?.code).toBe('BUSY');
  });

  it('is taken in-process (no helper program), and with the flock(1) helper where the binding is not used (TIU_NO_FD_LOCK=1); each kind excludes its own', async () => {
    await using d = await tempDir();
    // A PATH without flock: the in-process lock needs no program; the helper then cannot start.
    const noTools = { PATH: '/nonexistent' };
    expect(await tryInChild(d.path, noTools)).toBe('ok');
    expect(await tryInChild(d.path, { ...noTools, TIU_NO_FD_LOCK: '1' })).toBe('TOOL_MISSING');
    for (const env of [{ TIU_NO_FD_LOCK: '0' }, { TIU_NO_FD_LOCK: '1' }]) {
      const { child } = await lockInChild(d.path, env);
      try {
        expect(await tryInChild(d.path, env)).toBe('BUSY');
      } finally {
        child.kill('SIGKILL');
        await child.catch(() => {});
      }
      let free = false;
      for (let i = 0; i < 50 && !free; i++) {
        free = (await tryInChild(d.path, env)) === 'ok';
        if (!free) await sleep(100);
      }
      expect(free).toBe(true);
    }
  }, 60_000);
});
