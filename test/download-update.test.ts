/**
 * `tiu update --source URL` end to end against nginx on 127.0.0.1 (real loop btrfs device):
 * an unchanged source is not transferred again (conditional request, counted in nginx's access
 * log), the applied archive leaves the cache unless `[download] keep = yes`; and the top-level
 * guard: a forced internal error is one line, no stack, exit 70, after the transaction's cleanup.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, TIU, type ArchiveSet } from './helpers/device.ts';
import { execa } from 'execa';
import { startNginx, type Nginx } from './helpers/http-servers.ts';
import { leftovers } from './helpers/leaks.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;
let ngx: Nginx;
let www: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-dlu-'));
  A = await makeArchives(sys, work);
  www = join(work, 'www');
  await mkdir(www);
  await copyFile(A.v2, join(www, 'v2.tiu'));
  ngx = await startNginx(work, www);
}, 300_000);

afterAll(async () => {
  await ngx?.[Symbol.asyncDispose]();
  if (work) await rm(work, { recursive: true, force: true });
});

const snapshots = async (root: string) =>
  JSON.parse((await cli(['status', '--root', root, '--json'])).stdout).snapshots as { number: number; inProgress?: boolean }[];

describe('tiu update from a URL, twice', () => {
  it('the second run against the unchanged file transfers no archive bytes; the cache does not keep the applied archive', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const url = `${ngx.base}/v2.tiu`;
    const args = ['update', '--source', url, '--root', dev.root, '--keyring', A.keys.keyring];
    const first = await cli(args);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/snapshot 2: 2\.0/);
    const cache = join(dev.root, 'var/cache/tiu');
    // Applied: the archive is gone, its validators (.meta) stay.
    expect((await readdir(cache)).filter((f) => f.endsWith('v2.tiu'))).toEqual([]);
    expect((await readdir(cache)).filter((f) => f.endsWith('v2.tiu.meta')).length).toBe(1);

    const second = await cli(args);
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/already up to date: .* has not changed since it was applied/);
    const log = (await ngx.log()).filter((l) => l.request.includes('/v2.tiu'));
    expect(log.map((l) => l.status)).toEqual([200, 304]);
    expect(log[1]!.bytes).toBe(0);
    expect((await snapshots(dev.root)).map((s) => s.number)).toEqual([1, 2]);

    // The file changes (new mtime, so a new ETag): downloaded again; `[download] keep = yes` keeps it.
    // Its image is still the installed one (same signed index digest): nothing new is made.
    await utimes(join(www, 'v2.tiu'), new Date(), new Date(Date.now() + 5000));
    const conf = join(work, 'keep.conf');
    await writeFile(conf, '[download]\nkeep = yes\n');
    const third = await cli([...args, '--config', conf, '--json']);
    expect(third.exitCode, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout)).toMatchObject({ status: 'unchanged', number: 2, version: '2.0' });
    expect((await snapshots(dev.root)).map((s) => s.number)).toEqual([1, 2]);
    expect((await ngx.log()).filter((l) => l.request.includes('/v2.tiu')).map((l) => l.status)).toEqual([200, 304, 200]);
    expect((await readdir(cache)).filter((f) => f.endsWith('v2.tiu')).length).toBe(1);
    const fourth = await cli([...args, '--config', conf, '--json']);
    expect(JSON.parse(fourth.stdout)).toEqual({ status: 'unchanged', root: dev.root, source: url });
    expect(await leftovers([`${cache}/`])).toEqual({ loops: [], mounts: [] });
  });
});

describe('tiu update from a URL after a rollback', () => {
  it('the unchanged URL is applied again when the default snapshot no longer holds its image (and is up to date once it does)', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    await mkdir(join(www, 'rb'), { recursive: true });
    await copyFile(A.v2, join(www, 'rb/v2.tiu'));
    const url = `${ngx.base}/rb/v2.tiu`;
    const args = ['update', '--source', url, '--root', dev.root, '--keyring', A.keys.keyring];
    const first = await cli(args);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/snapshot 2: 2\.0/);
    const cache = join(dev.root, 'var/cache/tiu');
    const metaFile = (await readdir(cache)).find((f) => f.endsWith('v2.tiu.meta'))!;
    const meta = JSON.parse(await readFile(join(cache, metaFile), 'utf8')) as { applied: boolean; appliedIndexSha256: string };
    expect(meta.applied).toBe(true);
    expect(meta.appliedIndexSha256).toMatch(/^[0-9a-f]{64}$/);

    const rb = await cli(['rollback', '1', '--root', dev.root]);
    expect(rb.exitCode, rb.stderr).toBe(0);
    // Same URL, unchanged file (304): the default (1) holds v1, so v2 is fetched and applied again.
    const again = await cli(args);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/has not changed since it was applied, but snapshot 1 \(the default\) holds another image \(a rollback\?\): downloading it again/);
    expect(again.stdout).toMatch(/snapshot 3: 2\.0/);
    const log = (await ngx.log()).filter((l) => l.request.includes('/rb/v2.tiu'));
    expect(log.map((l) => l.status)).toEqual([200, 304, 200]);
    // Now the default holds it again: the next run is "up to date" after a 304, and makes nothing.
    const third = await cli(args);
    expect(third.exitCode, third.stderr).toBe(0);
    expect(third.stdout).toMatch(/already up to date: .* has not changed since it was applied/);
    expect((await snapshots(dev.root)).map((s) => s.number)).toEqual([1, 2, 3]);
    expect((await ngx.log()).filter((l) => l.request.includes('/rb/v2.tiu')).map((l) => l.status)).toEqual([200, 304, 200, 304]);
  });
});

describe('the top-level guard', () => {
  it('a forced internal error prints one line, no stack, exit 70 — wherever it happens', async () => {
    for (const place of ['command', 'uncaught', 'rejection']) {
      const r = await cli(['status', '--root', work], { env: { TIU_TEST_INTERNAL_ERROR: place } });
      expect(r.exitCode, place).toBe(70);
      expect(r.stderr, place).toBe(`tiu: internal error: forced internal error at '${place}' (TIU_TEST_INTERNAL_ERROR); run with --debug for the stack [INTERNAL]`);
    }
    const d = await cli(['--debug', 'status', '--root', work], { env: { TIU_TEST_INTERNAL_ERROR: 'uncaught' } });
    expect(d.exitCode).toBe(70);
    expect(d.stderr).toMatch(/TypeError: forced internal error.*\n\s+at /);
  });

  it('an uncaught exception during a transaction deletes the unfinished snapshot before exiting', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const r = await cli(['extract', A.v2, '--root', dev.root, '--keyring', A.keys.keyring], { env: { TIU_TEST_INTERNAL_ERROR: 'transaction' } });
    expect(r.exitCode).toBe(70);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('tiu: internal error'));
    expect(lines).toEqual(["tiu: internal error: forced internal error at 'transaction' (TIU_TEST_INTERNAL_ERROR); run with --debug for the stack [INTERNAL]"]);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr).toMatch(/discarded snapshot 2; the default is unchanged/);
    expect((await snapshots(dev.root)).map((s) => s.number)).toEqual([1]);
    // The archive's image was mounted when the error hit: the guard unmounted it (its loop gone).
    expect(await leftovers([A.v2])).toEqual({ loops: [], mounts: [] });
  });

  it('SIGTERM or SIGINT while an archive is mounted (no transaction yet): exit INTERRUPTED, no mount, no loop device left', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    for (const sig of ['SIGTERM', 'SIGINT'] as const) {
      const child = execa(process.execPath, [TIU, 'extract', A.v2, '--root', dev.root, '--keyring', A.keys.keyring], { reject: false, env: { TIU_TEST_PAUSE: 'mounted' }, timeout: 120_000 });
      let err = '';
      await new Promise<void>((resolve, reject) => {
        child.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('tiu-test: paused at mounted\n')) resolve();
        });
        void child.then(() => reject(new Error(`tiu ended before pausing: ${err}`)));
      });
      expect((await leftovers([A.v2])).mounts.length, 'mounted while paused').toBe(1);
      child.kill(sig);
      const r = await child;
      expect(r.exitCode, String(r.stderr)).toBe(51);
      expect(String(r.stderr)).toMatch(new RegExp(`^tiu: error: interrupted by ${sig} \\[INTERRUPTED\\]$`, 'm'));
      expect(await leftovers([A.v2]), sig).toEqual({ loops: [], mounts: [] });
    }
    expect((await snapshots(dev.root)).map((s) => s.number)).toEqual([1]);
  });
});
