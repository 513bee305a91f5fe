/**
 * The download transport against real servers on 127.0.0.1, each serving a ≥ 20 MB file,
 * 30 downloads in a row each: Python's http.server (closes after the body), nginx
 * (keep-alive, Range), and a Node server that drops the connection mid-body, answers 503
 * twice, or ignores Range. Every download must complete with the right sha256 (issue #18:
 * Node's fetch crashed the process here).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, mkdir, readFile, rm, readdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { download } from '../src/tiu/device/download.ts';
import { createLogger } from '../src/core/log.ts';
import { bigFile, startMisbehaving, startNginx, startPython } from './helpers/http-servers.ts';

const SIZE = 20 * 1024 * 1024;
const ROUNDS = 30;
const log = createLogger('warn');
let work: string;
let www: string;
let file: { path: string; data: Buffer; sha256: string };

const sha = async (p: string) => createHash('sha256').update(await readFile(p)).digest('hex');

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-dl-'));
  www = join(work, 'www');
  await mkdir(www);
  file = await bigFile(www, 'big.tiu', SIZE);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Downloads `url` ROUNDS times into a fresh cache; every result must be the exact file. */
async function rounds(url: string, extra: Partial<Parameters<typeof download>[0]> = {}, before?: () => void): Promise<void> {
  const cacheDir = await mkdtemp(join(work, 'cache-'));
  for (let i = 0; i < ROUNDS; i++) {
    before?.();
    const p = await download({ url, cacheDir, log, conditional: false, retryDelayMs: 50, ...extra });
    expect(await sha(p), `round ${i + 1}`).toBe(file.sha256);
  }
  // No leftovers: only the file, its validators and its lock.
  expect((await readdir(cacheDir)).filter((f) => f.endsWith('.part'))).toEqual([]);
  await rm(cacheDir, { recursive: true, force: true });
}

describe('30 downloads in a row from real servers', () => {
  it("Python's http.server (closes the connection after the body)", async () => {
    await using py = await startPython(www);
    await rounds(`${py.base}/big.tiu`);
  });

  it('the same with --limit-rate: a slow reader against the closing server', async () => {
    await using py = await startPython(www);
    const t0 = Date.now();
    await rounds(`${py.base}/big.tiu`, { rateLimit: 200 * 1024 * 1024 });
    // 30 × 21 MiB at 200 MiB/s is at least ~3 s: the limit was applied.
    expect(Date.now() - t0).toBeGreaterThan(2500);
  });

  it('nginx (keep-alive, Range, ETag)', async () => {
    await using ngx = await startNginx(work, www);
    await rounds(`${ngx.base}/big.tiu`);
    const lines = (await ngx.log()).filter((l) => l.request.includes('big.tiu'));
    expect(lines.length).toBe(ROUNDS);
    expect(lines.every((l) => l.status === 200 && l.bytes === SIZE)).toBe(true);
  });

  it('a server that drops the connection in the middle of the body: the retry resumes with Range', async () => {
    await using s = await startMisbehaving(file.data);
    await rounds(`${s.base}/file`, {}, () => {
      s.m.dropNext = 1;
    });
    const ranged = s.m.requests.filter((r) => r.range);
    expect(ranged.length).toBe(ROUNDS);
    expect(ranged.every((r) => r.status === 206 && r.range === `bytes=${Math.floor(SIZE * 0.4)}-`)).toBe(true);
  });

  it('a server that answers 503 twice before serving (Retry-After honoured)', async () => {
    await using s = await startMisbehaving(file.data);
    await rounds(`${s.base}/file`, {}, () => {
      s.m.busyNext = 2;
    });
    expect(s.m.requests.filter((r) => r.status === 503).length).toBe(2 * ROUNDS);
    // Retry-After: 1 makes the client wait at least 2 × 1 s.
    s.m.busyNext = 2;
    s.m.retryAfter = '1';
    const cacheDir = await mkdtemp(join(work, 'cache-'));
    const t0 = Date.now();
    const p = await download({ url: `${s.base}/file`, cacheDir, log, retryDelayMs: 50 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(await sha(p)).toBe(file.sha256);
  });

  it('a server that ignores Range (200 instead of 206) after a drop: restarts cleanly', async () => {
    await using s = await startMisbehaving(file.data);
    s.m.ignoreRange = true;
    await rounds(`${s.base}/file`, {}, () => {
      s.m.dropNext = 1;
    });
    // Each round: the cut request, then a Range request answered 200 with the whole file.
    expect(s.m.requests.filter((r) => r.range).length).toBe(ROUNDS);
    expect(s.m.requests.every((r) => r.status === 200)).toBe(true);
  });
});
