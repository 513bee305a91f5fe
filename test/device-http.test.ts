/**
 * `tiu update --source http://…` against a real HTTP server on 127.0.0.1: download, resume
 * after a broken connection (HTTP Range), rate limit, HTTP errors, a tampered download.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { mkdtemp, readFile, rm, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { AddressInfo } from 'node:net';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, type ArchiveSet } from './helpers/device.ts';
import { parseRate } from '../src/tiu/commands/update.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;
let server: Server;
let base: string;
let body: Buffer;
const requests: { url: string; range?: string }[] = [];
/** When set, the next response for v2.tiu is cut after this many bytes. */
let cutAfter: number | undefined;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-http-'));
  A = await makeArchives(sys, work);
  body = await readFile(A.v2);
  const tampered = Buffer.from(body);
  tampered[100] = tampered[100]! ^ 0xff;
  server = createServer((req, res) => {
    requests.push({ url: req.url ?? '', range: req.headers.range });
    const data = req.url === '/v2.tiu' ? body : req.url === '/tampered.tiu' ? tampered : undefined;
    if (!data) {
      res.writeHead(404).end('not found');
      return;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) start = Number(m[1]);
    const slice = data.subarray(start);
    res.writeHead(m ? 206 : 200, { 'content-length': slice.length, ...(m ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}) });
    if (cutAfter !== undefined) {
      const n = cutAfter;
      cutAfter = undefined;
      res.write(slice.subarray(0, n), () => setTimeout(() => res.destroy(), 300));
      return;
    }
    res.end(slice);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, 300_000);

afterAll(async () => {
  server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('tiu update over HTTP', () => {
  it('downloads, resumes a broken download with a Range request, and updates', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    cutAfter = Math.floor(body.length / 3);
    requests.length = 0;
    // No automatic retry here (test/download-servers.test.ts covers those): the rerun resumes.
    const noRetry = join(work, 'no-retry.conf');
    await writeFile(noRetry, '[download]\nretries = 0\n');
    const keep = join(work, 'keep.conf');
    await writeFile(keep, '[download]\nkeep = yes\n');
    const first = await cli(['update', '--source', `${base}/v2.tiu`, '--root', dev.root, '--keyring', A.keys.keyring, '--config', noRetry]);
    expect(first.exitCode).toBe(38);
    expect(first.stderr).toMatch(/rerun to resume it \[DOWNLOAD_FAILED\]/);
    const partial = (await readdir(join(dev.root, 'var/cache/tiu'))).filter((f) => f.endsWith('.part'));
    expect(partial.length).toBe(1);
    const second = await cli(['update', '--source', `${base}/v2.tiu`, '--root', dev.root, '--keyring', A.keys.keyring, '--config', keep]);
    expect(second.exitCode, second.stderr).toBe(0);
    expect(requests.map((r) => r.range)).toEqual([undefined, `bytes=${Math.floor(body.length / 3)}-`]);
    expect(second.stdout).toMatch(/snapshot 2: 2\.0/);
    // The completed download is the exact archive (kept: [download] keep = yes).
    const done = (await readdir(join(dev.root, 'var/cache/tiu'))).filter((f) => f.endsWith('v2.tiu'));
    expect(done.length).toBe(1);
    expect((await readFile(join(dev.root, 'var/cache/tiu', done[0]!))).equals(body)).toBe(true);
  });

  it('honours --limit-rate', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const rate = Math.ceil(body.length / 2); // about 2 s for the whole archive
    const t0 = Date.now();
    const r = await cli(['update', '--source', `${base}/v2.tiu`, '--root', dev.root, '--keyring', A.keys.keyring, '--limit-rate', String(rate)]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(Date.now() - t0).toBeGreaterThan(1500);
    expect(parseRate('2M')).toBe(2 * 1024 * 1024);
    expect(() => parseRate('fast')).toThrow(/--limit-rate/);
  });

  it('reports HTTP errors and rejects a tampered download without changing anything', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    let r = await cli(['update', '--source', `${base}/missing.tiu`, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode).toBe(38);
    expect(r.stderr).toMatch(/HTTP 404.*check the URL \[DOWNLOAD_FAILED\]/);
    r = await cli(['update', '--source', `${base}/tampered.tiu`, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode).toBe(18);
    expect(r.stderr).toMatch(/\[ARCHIVE_VERITY\]/);
    r = await cli(['update', '--source', 'http://127.0.0.1:1/nothing.tiu', '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode).toBe(38);
    const st = JSON.parse((await cli(['status', '--root', dev.root, '--json'])).stdout);
    expect(st.snapshots.map((s: { number: number }) => s.number)).toEqual([1]);
  });
});
