/**
 * The download transport's process handling (issue #18): the System seam's streaming spawn
 * (src/core/system.ts spawnPlain, a plain child_process spawn used for curl), curl missing, an
 * aborted download, and a progress callback that fails while curl runs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { download } from '../src/tiu/device/download.ts';
import { createSystem, processAlive } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { TiuError } from '../src/core/errors.ts';
import { bigFile, startMisbehaving } from './helpers/http-servers.ts';

const log = createLogger('warn');
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-dlt-'));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<unknown> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e, 'expected a failure').toBeDefined();
  return e;
}

describe('streaming spawn (System seam, stream mode)', () => {
  const sys = createSystem(log);

  it('reports the exit code and stderr, discards stdout when asked, and never rejects', async () => {
    const c = sys.spawn('sh', ['-c', 'echo out; echo err >&2; exit 3'], { stream: true, discardStdout: true });
    expect(c.stdout).toBeNull();
    let err = '';
    c.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    const r = await c;
    expect(r.exitCode).toBe(3);
    expect(r.isCanceled).toBe(false);
    expect(err).toBe('err\n');

    const d = sys.spawn('sh', ['-c', 'printf abc'], { stream: true });
    let out = '';
    d.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    expect((await d).exitCode).toBe(0);
    expect(out).toBe('abc');
  });

  it('a missing command resolves with code ENOENT (no exception, no exit code)', async () => {
    const r = await sys.spawn('tiu-no-such-command', [], { stream: true });
    expect(r.exitCode).toBeUndefined();
    expect(r.code ?? r.cause?.code).toBe('ENOENT');
  });

  it('an abort kills the child and resolves with isCanceled', async () => {
    const ac = new AbortController();
    const c = sys.spawn('sleep', ['30'], { stream: true, signal: ac.signal });
    const pid = c.pid!;
    expect(processAlive(pid)).toBe(true);
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 100);
    const r = await c;
    expect(r.isCanceled).toBe(true);
    expect(r.exitCode).toBeUndefined();
    expect(r.signal).toBe('SIGTERM');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(processAlive(pid)).toBe(false);
  });
});

describe('download() and its curl child', () => {
  it('curl not installed: TOOL_MISSING in one line naming the package', async () => {
    const empty = await mkdtemp(join(work, 'path-'));
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const saved = process.env.PATH;
    process.env.PATH = empty;
    let e: unknown;
    try {
      e = await failure(download({ url: 'http://127.0.0.1:9/x.tiu', cacheDir, log, retries: 0 }));
    } finally {
      process.env.PATH = saved;
    }
    expect(e).toBeInstanceOf(TiuError);
    expect((e as TiuError).code).toBe('TOOL_MISSING');
    expect((e as TiuError).message).toBe("required tool 'curl' is not installed");
    expect((e as TiuError).hint).toMatch(/apt-get install curl/);
  });

  it('an abort during the transfer: INTERRUPTED as soon as curl is gone, the .part kept for a resume', async () => {
    const f = await bigFile(work, 'a.bin', 4 * 1024 * 1024);
    await using s = await startMisbehaving(f.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const ac = new AbortController();
    let t0 = 0;
    const p = download({ url: `${s.base}/file`, cacheDir, log, rateLimit: 512 * 1024, signal: ac.signal, onProgress: (done) => {
      if (done > 256 * 1024 && !t0) {
        t0 = Date.now();
        ac.abort();
      }
    } });
    const e = await failure(p);
    expect(t0, 'the download made progress before the abort').toBeGreaterThan(0);
    expect(e).toBeInstanceOf(TiuError);
    expect((e as TiuError).code).toBe('INTERRUPTED');
    // 4 MiB at 512 KiB/s would take 8 s: returning early means curl was stopped, not waited for.
    expect(Date.now() - t0).toBeLessThan(3000);
    const files = await readdir(cacheDir);
    expect(files.some((n) => n.endsWith('.part')), files.join(' ')).toBe(true);
    expect(files.filter((n) => !/\.(part|lock|meta|headers)$/.test(n))).toEqual([]);
  });

  it('a progress callback that throws while curl runs fails the download with its error, at once (no unhandled rejection)', async () => {
    const f = await bigFile(work, 'p.bin', 4 * 1024 * 1024);
    await using s = await startMisbehaving(f.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const t0 = Date.now();
    const e = await failure(download({ url: `${s.base}/file`, cacheDir, log, rateLimit: 1024 * 1024, onProgress: (done) => {
      if (done > 0) throw new Error('progress display broke');
    } }));
    expect((e as Error).message).toBe('progress display broke');
    // 4 MiB at 1 MiB/s is 4 s; the failing poll stops curl well before.
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});
