/**
 * `tiu update` is idempotent (issue #19): the image the default snapshot already holds makes no
 * new snapshot and exits 0 (77 with --unchanged-exit-77); --reinstall forces one; `tiu extract`
 * stays the explicit apply. On a real loop-mounted btrfs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, type ArchiveSet } from './helpers/device.ts';
import { isUpToDate } from '../src/tiu/device/uptodate.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-idem-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

async function numbers(root: string): Promise<number[]> {
  const r = await cli(['status', '--root', root, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout).snapshots.map((s: { number: number }) => s.number);
}

describe('isUpToDate', () => {
  const m = { index: { path: 'usr/lib/tiu/image/index', sha256: 'a'.repeat(64), entries: 1 } } as never;
  const s = { number: 2, booted: false, finished: true, indexSha256: 'a'.repeat(64), sealed: true };
  it('needs the same signed index digest in a finished, sealed default snapshot', () => {
    expect(isUpToDate(s, m)).toBe(true);
    expect(isUpToDate(undefined, m)).toBe(false);
    expect(isUpToDate({ ...s, indexSha256: 'b'.repeat(64) }, m)).toBe(false);
    expect(isUpToDate({ ...s, indexSha256: undefined }, m)).toBe(false);
    expect(isUpToDate({ ...s, finished: false }, m)).toBe(false);
    expect(isUpToDate({ ...s, sealed: false }, m)).toBe(false);
  });
});

describe('tiu update of the installed image', () => {
  it('says already up to date, creates nothing, exits 0; --unchanged-exit-77; --reinstall makes a snapshot', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const args = ['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring];
    const first = await cli(args);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/snapshot 2: 2\.0/);
    expect(await numbers(dev.root)).toEqual([1, 2]);

    // The same image again (the default, not yet booted): nothing to do.
    const second = await cli(args);
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.stdout.trim()).toBe('already up to date: snapshot 2 holds test-x86_64 2.0; reboot to activate it (use --reinstall to make a new snapshot anyway)');
    expect(await numbers(dev.root)).toEqual([1, 2]);

    const json = await cli([...args, '--json']);
    expect(json.exitCode, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ status: 'unchanged', root: dev.root, number: 2, version: '2.0', pending: true });

    const s77 = await cli([...args, '--unchanged-exit-77']);
    expect(s77.exitCode).toBe(77);
    expect(await numbers(dev.root)).toEqual([1, 2]);

    // --reinstall: a new snapshot of the same image anyway.
    const forced = await cli([...args, '--reinstall', '--json']);
    expect(forced.exitCode, forced.stderr).toBe(0);
    const r = JSON.parse(forced.stdout);
    expect(r).toMatchObject({ status: 'updated', number: 3, base: 2, version: '2.0', madeDefault: true });
    expect(await numbers(dev.root)).toEqual([1, 2, 3]);

    // tiu extract stays the explicit apply: it always makes a snapshot.
    const ex = await cli(['extract', A.v2, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(ex.exitCode, ex.stderr).toBe(0);
    expect(await numbers(dev.root)).toEqual([1, 2, 3, 4]);

    // Another image is an update again (an older one: refused as a downgrade unless allowed).
    const refused = await cli(['update', '--source', A.v1, '--root', dev.root, '--keyring', A.keys.keyring, '--unchanged-exit-77']);
    expect(refused.stderr).toMatch(/\[DOWNGRADE\]/);
    expect(await numbers(dev.root)).toEqual([1, 2, 3, 4]);
    const back = await cli(['update', '--source', A.v1, '--root', dev.root, '--keyring', A.keys.keyring, '--unchanged-exit-77', '--allow-downgrade']);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(await numbers(dev.root)).toEqual([1, 2, 3, 4, 5]);
  });

  it('updates again when the default snapshot was changed after it was sealed', async () => {
    await using dev = await installedDevice(sys, A.v2, A.keyringPem);
    const args = ['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring];
    // Freshly installed v2: same image, booted.
    const same = await cli(args);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.stdout).toMatch(/^already up to date: snapshot 1 holds test-x86_64 2\.0 \(/);
    // A hand-made change (read-write, written, read-only again): the recorded index no longer
    // describes it, so the update repairs it into a new snapshot.
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'false']);
    await sys.run('touch', [join(snap1, 'usr/bin/tool')]);
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'true']);
    const again = await cli(args);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/snapshot 2: 2\.0/);
    expect(await numbers(dev.root)).toEqual([1, 2]);
  });
});
