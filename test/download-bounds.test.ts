/**
 * The bounds on downloads (issue #11): stall timeout, size cap with the partial file deleted,
 * one writer per `.part`, expected size/sha256, metadata fetches (fetchBytes), and the refusal
 * of non-http schemes, non-regular sources and bad --limit-rate values.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readdir, readFile, rm, writeFile, symlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { download, fetchBytes } from '../src/tiu/device/download.ts';
import { createLogger } from '../src/core/log.ts';
import { TiuError } from '../src/core/errors.ts';
import { parseRate } from '../src/tiu/commands/update.ts';
import { classifyCurlExit, curlArgs, parseHead, retryAfterSeconds } from '../src/tiu/download/curl.ts';
import { cli } from './helpers/device.ts';
import { parse } from 'ini';
import { applyIni, DEFAULT_CONFIG } from '../src/tiu/config.ts';
import { bigFile, startMisbehaving } from './helpers/http-servers.ts';

const log = createLogger('warn');
let work: string;
let file: { path: string; data: Buffer; sha256: string };

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-dlb-'));
  file = await bigFile(work, 'data.bin', 20 * 1024 * 1024);
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<TiuError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e, 'expected a failure').toBeInstanceOf(TiuError);
  return e as TiuError;
}

describe('download bounds', () => {
  it('a server trickling 1 byte every 2 s fails with DOWNLOAD_STALLED within the stall timeout', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const t0 = Date.now();
    const e = await failure(download({ url: `${s.base}/stall`, cacheDir, log, stallSeconds: 3 }));
    expect(e.code).toBe('DOWNLOAD_STALLED');
    expect(e.exitCode).toBe(41);
    expect(e.message).toMatch(/stalled.*for 3 s/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('--limit-rate holds from the first byte (curl 7.88 alone lets a small file through unthrottled)', async () => {
    const small = file.data.subarray(0, 2 * 1024 * 1024);
    await using s = await startMisbehaving(small);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const t0 = Date.now();
    const got = await download({ url: `${s.base}/file`, cacheDir, log, rateLimit: 1024 * 1024 });
    const took = Date.now() - t0;
    // 2 MiB at 1 MiB/s: 2 s at the least; curl's own --limit-rate took 0.1 s here.
    expect(took).toBeGreaterThanOrEqual(1900);
    expect((await readFile(got)).equals(small)).toBe(true);
  });

  it('the overall deadline ends a slow download with DOWNLOAD_TIMEOUT', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const t0 = Date.now();
    const e = await failure(download({ url: `${s.base}/file`, cacheDir, log, rateLimit: 1024 * 1024, deadlineSeconds: 2, retryDelayMs: 50 }));
    expect(e.code).toBe('DOWNLOAD_TIMEOUT');
    // Within the deadline and tiu's grace (curl blocked on the paced pipe overran it by 8 s).
    expect(Date.now() - t0).toBeLessThan(6_000);
  });

  it('endless data hits the size cap; the partial file is deleted', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const e = await failure(download({ url: `${s.base}/endless`, cacheDir, log, maxBytes: 5 * 1024 * 1024 }));
    expect(e.code).toBe('DOWNLOAD_TOO_LARGE');
    expect(e.exitCode).toBe(40);
    expect(e.message).toMatch(/larger than the 5242880 bytes accepted; the partial download was deleted/);
    expect((await readdir(cacheDir)).filter((f) => f.endsWith('.part') || !/\.(lock|meta)$/.test(f))).toEqual([]);
  });

  it('an announced length over the cap (or the expected size) is refused before the transfer', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    let e = await failure(download({ url: `${s.base}/file`, cacheDir, log, maxBytes: 1024 * 1024 }));
    expect(e.code).toBe('DOWNLOAD_TOO_LARGE');
    e = await failure(download({ url: `${s.base}/file`, cacheDir, log, expectedSize: 1000 }));
    expect(e.code).toBe('DOWNLOAD_TOO_LARGE');
    expect(s.m.requests.length).toBe(2); // refused, not retried
    expect((await readdir(cacheDir)).filter((f) => !/\.(lock|meta)$/.test(f))).toEqual([]);
  });

  it('a wrong sha256 or size deletes the download (DOWNLOAD_MISMATCH); the right ones pass', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    let e = await failure(download({ url: `${s.base}/file`, cacheDir, log, expectedSha256: '0'.repeat(64) }));
    expect(e.code).toBe('DOWNLOAD_MISMATCH');
    expect(e.exitCode).toBe(44);
    expect((await readdir(cacheDir)).filter((f) => !f.endsWith('.lock'))).toEqual([]);
    e = await failure(download({ url: `${s.base}/file`, cacheDir, log, expectedSize: file.data.length + 1 }));
    expect(e.code).toBe('DOWNLOAD_MISMATCH');
    const p = await download({ url: `${s.base}/file`, cacheDir, log, expectedSize: file.data.length, expectedSha256: file.sha256 });
    expect((await readFile(p)).equals(file.data)).toBe(true);
  });

  it('two concurrent downloads of one URL: each is correct or BUSY, never a corrupt file', async () => {
    await using s = await startMisbehaving(file.data);
    const cacheDir = await mkdtemp(join(work, 'c-'));
    const url = `${s.base}/file`;
    const one = () => download({ url, cacheDir, log, rateLimit: 40 * 1024 * 1024, conditional: false });
    const results = await Promise.allSettled([one(), one(), one()]);
    const ok = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<string>[];
    const failed = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(ok.length).toBeGreaterThanOrEqual(1);
    for (const f of failed) expect((f.reason as TiuError).code).toBe('BUSY');
    for (const r of ok) expect(createHash('sha256').update(await readFile(r.value)).digest('hex')).toBe(file.sha256);
    // Also across processes: a second tiu process on the same cache file.
    const script = `import { download } from ${JSON.stringify(new URL('../src/tiu/device/download.ts', import.meta.url).pathname)};
import { createLogger } from ${JSON.stringify(new URL('../src/core/log.ts', import.meta.url).pathname)};
try { const p = await download({ url: process.argv[1], cacheDir: process.argv[2], log: createLogger('warn'), rateLimit: 40 * 1024 * 1024, conditional: false }); console.log('ok ' + p); } catch (e) { console.log('err ' + e.code); }`;
    const runs = await Promise.all([0, 1].map(() => execa(process.execPath, ['--input-type=module', '-e', script, url, cacheDir], { reject: false })));
    const outs = runs.map((r) => String(r.stdout).trim());
    expect(outs.some((o) => o.startsWith('ok '))).toBe(true);
    for (const o of outs) expect(o).toMatch(/^(ok .*|err BUSY)$/);
    const final = outs.find((o) => o.startsWith('ok '))!.slice(3);
    expect(createHash('sha256').update(await readFile(final)).digest('hex')).toBe(file.sha256);
  });

  it('the download lock (in-process fd lock, and the flock helper fallback): BUSY while held, free once the holder is SIGKILLed', async () => {
    const lockTs = new URL('../src/tiu/download/lock.ts', import.meta.url).pathname;
    const sysTs = new URL('../src/core/system.ts', import.meta.url).pathname;
    const script = `import { lockDownload } from ${JSON.stringify(lockTs)};
import { createSystem } from ${JSON.stringify(sysTs)};
try { await lockDownload(createSystem(), process.argv[1], 'x'); console.log('held'); if (process.argv[2] === 'hold') await new Promise(() => setInterval(() => {}, 1000)); }
catch (e) { console.log('err ' + e.code); }`;
    for (const kind of ['fd', 'flock']) {
      const env = { TIU_NO_FD_LOCK: kind === 'flock' ? '1' : '0' };
      const lockFile = join(await mkdtemp(join(work, 'lock-')), 'x.lock');
      const attempt = async () => String((await execa(process.execPath, ['--input-type=module', '-e', script, lockFile, 'try'], { env })).stdout).trim();
      const holder = execa(process.execPath, ['--input-type=module', '-e', script, lockFile, 'hold'], { env, reject: false });
      await new Promise<void>((resolve) => holder.stdout!.on('data', (d: Buffer) => d.toString().includes('held') && resolve()));
      expect(await attempt(), kind).toBe('err BUSY');
      holder.kill('SIGKILL');
      await holder;
      // The kernel releases it with the process (the flock helper sees its stdin close).
      let got = '';
      for (let i = 0; i < 20 && got !== 'held'; i++) {
        got = await attempt();
        if (got !== 'held') await new Promise((r) => setTimeout(r, 100));
      }
      expect(got, kind).toBe('held');
    }
  });

  it('fetchBytes: bounded metadata over http and file://, 404 as INPUT_NOT_FOUND', async () => {
    await using s = await startMisbehaving(file.data);
    const small = Buffer.from('{"signed":{}}');
    await writeFile(join(work, 'meta.json'), small);
    expect((await fetchBytes(`file://${join(work, 'meta.json')}`, { maxBytes: 100 })).equals(small)).toBe(true);
    expect((await failure(fetchBytes(`file://${join(work, 'meta.json')}`, { maxBytes: 5 }))).code).toBe('DOWNLOAD_TOO_LARGE');
    await symlink(join(work, 'meta.json'), join(work, 'link.json'));
    expect((await failure(fetchBytes(`file://${join(work, 'link.json')}`, { maxBytes: 100 }))).code).toBe('INPUT_INVALID');
    expect((await failure(fetchBytes(`file://${work}`, { maxBytes: 100 }))).code).toBe('INPUT_INVALID');
    const got = await fetchBytes(`${s.base}/file`, { maxBytes: file.data.length, log });
    expect(got.equals(file.data)).toBe(true);
    expect((await failure(fetchBytes(`${s.base}/file`, { maxBytes: 1000, log }))).code).toBe('DOWNLOAD_TOO_LARGE');
    expect((await failure(fetchBytes(`${s.base}/endless`, { maxBytes: 1024 * 1024, log }))).code).toBe('DOWNLOAD_TOO_LARGE');
    expect((await failure(fetchBytes(`${s.base}/missing.json`, { maxBytes: 1000, log }))).code).toBe('INPUT_NOT_FOUND');
    expect((await failure(fetchBytes('ftp://127.0.0.1/x.json', { maxBytes: 1000, log }))).message).toMatch(/unsupported URL scheme 'ftp'/);
  });

  it('tiu update refuses a FIFO source, an ftp:// URL and --limit-rate fast, each in one line', async () => {
    const fifo = join(work, 'fifo.tiu');
    await execa('mkfifo', [fifo]);
    let r = await cli(['update', '--source', fifo, '--root', work], { timeoutMs: 20_000 });
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe(`tiu: error: update source ${fifo} is not a regular file; give an archive file or an https URL [INPUT_INVALID]`);
    r = await cli(['update', '--source', 'ftp://127.0.0.1/os.tiu', '--root', work]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^tiu: error: unsupported URL scheme 'ftp' in update source ftp:\/\/127\.0\.0\.1\/os\.tiu; tiu downloads over https or http.*\[USAGE\]$/);
    r = await cli(['update', '--source', 'http://127.0.0.1:1/os.tiu', '--limit-rate', 'fast', '--root', work]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--limit-rate must be a size like 500k or 2M, got 'fast'.*\[USAGE\]/);
    expect(parseRate('500k')).toBe(500 * 1024);
    expect(parseRate('2M')).toBe(2 * 1024 * 1024);
    expect(() => parseRate('0')).toThrow(/must be a size like 500k or 2M, got '0'/);
  });
});

describe('[download] settings', () => {
  it('parses keep, timeouts, retries, sizes; rejects nonsense', () => {
    const c = applyIni(DEFAULT_CONFIG, parse('[download]\nkeep = yes\nstall_timeout = 30\ntimeout = 600\nretries = 0\nmax_size = 2G\nlimit_rate = 500k\n'), 'f');
    expect(c.download).toEqual({ keep: true, stallTimeout: 30, timeout: 600, retries: 0, maxSize: 2 * 1024 ** 3, limitRate: 500 * 1024 });
    expect(DEFAULT_CONFIG.download.keep).toBe(false);
    expect(() => applyIni(DEFAULT_CONFIG, parse('[download]\nkeep = maybe\n'), 'f')).toThrow(/keep must be yes or no/);
    expect(() => applyIni(DEFAULT_CONFIG, parse('[download]\nstall_timeout = 0\n'), 'f')).toThrow(/at least 1/);
    expect(() => applyIni(DEFAULT_CONFIG, parse('[download]\nlimit_rate = fast\n'), 'f')).toThrow(/size like 500k/);
  });
});

describe('curl plumbing (pure)', () => {
  it('builds argv without a shell and parses heads, Retry-After and exit codes', () => {
    const f = curlArgs({ url: 'http://h/x', from: 10, stallSeconds: 5, maxSeconds: 100, toFile: { file: '/c/x.part', headers: '/c/x.headers' } });
    expect(f).toEqual(expect.arrayContaining(['--continue-at', '10', '--output', '/c/x.part', '--fail']));
    expect(f).not.toContain('Range: bytes=10-');
    const a = curlArgs({ url: 'http://h/x y', from: 10, ifRange: '"e1"', stallSeconds: 5, maxSeconds: 100, rateLimit: 1000 });
    expect(a.slice(-2)).toEqual(['--url', 'http://h/x y']);
    expect(a).toContain('Range: bytes=10-');
    expect(a).toContain('If-Range: "e1"');
    expect(a[a.indexOf('--speed-limit') + 1]).toBe('250');
    expect(parseHead('HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 5-9/10\r\nETag: "x"')?.headers.get('etag')).toBe('"x"');
    expect(parseHead('garbage')).toBeUndefined();
    expect(retryAfterSeconds('3')).toBe(3);
    expect(retryAfterSeconds('99999')).toBe(120);
    expect(retryAfterSeconds(new Date(Date.now() + 5000).toUTCString())).toBeGreaterThanOrEqual(4);
    expect(classifyCurlExit(28, 'curl: (28) Operation too slow. Less than 1024 bytes/sec').kind).toBe('stalled');
    expect(classifyCurlExit(28, 'curl: (28) Operation timed out after 2000 milliseconds').kind).toBe('deadline');
    expect(classifyCurlExit(56, 'curl: (56) Recv failure: Connection reset by peer').kind).toBe('transient');
    expect(classifyCurlExit(60, 'curl: (60) SSL certificate problem').kind).toBe('fatal');
  });
});
