/**
 * `tiu verify --system` on a real loop-mounted btrfs device: a clean snapshot passes; a flipped
 * byte, a chmod, a changed xattr, a new file in /usr, a removed file and a retargeted symlink are
 * each found and named; /etc and /var are left alone; the evidence itself (signature, index) is
 * checked first. Runs the real CLI as root.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { chmod, mkdtemp, open, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, type ArchiveSet, type InstalledDevice } from './helpers/device.ts';
import { generateDevKeys } from '../src/tiu/sign/keygen.ts';
import { verifyScope } from '../src/tiu/device/verify-scope.ts';
import { DEFAULT_EXCLUDES } from '../src/tiu/config.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-vsys-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

type Result = { ok: boolean; snapshot: number; counts: Record<string, number>; differences: { path: string; kind: string; fields: string[] }[] };

async function verify(dev: InstalledDevice, extra: string[] = []) {
  const r = await cli(['verify', '--system', '--root', dev.root, '--keyring', A.keys.keyring, '--json', ...extra]);
  return { ...r, result: r.stdout ? (JSON.parse(r.stdout) as Result) : undefined };
}

/** Makes the (read-only) snapshot writable for `f`, as an attacker with root could. */
async function tamper(dev: InstalledDevice, f: (snap: string) => Promise<void>): Promise<void> {
  const snap = join(dev.root, '.snapshots/1/snapshot');
  await sys.run('btrfs', ['property', 'set', '-ts', snap, 'ro', 'false']);
  try {
    await f(snap);
  } finally {
    await sys.run('btrfs', ['property', 'set', '-ts', snap, 'ro', 'true']);
  }
}

describe('verifyScope (pure)', () => {
  it('leaves out /etc, excluded contents and tiu state; tolerates only tiu-made directories as extras', () => {
    const s = verifyScope(DEFAULT_EXCLUDES);
    expect(s.compared('usr/bin/tool')).toBe(true);
    expect(s.compared('etc')).toBe(false);
    expect(s.compared('etc/passwd')).toBe(false);
    expect(s.compared('etcetera')).toBe(true);
    expect(s.compared('var')).toBe(true);
    expect(s.compared('var/lib/x')).toBe(false);
    expect(s.compared('usr/lib/tiu/image/index.jsonl')).toBe(false);
    expect(s.compared('usr/lib/tiu/vendor-etc/passwd')).toBe(false);
    expect(s.toleratedExtra('usr/local')).toBe(true);
    expect(s.toleratedExtra('usr/lib/tiu/image')).toBe(true);
    expect(s.toleratedExtra('usr/bin')).toBe(false);
  });
});

describe('tiu verify --system on loop btrfs', () => {
  it('passes a clean snapshot, then finds and names each kind of change', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const clean = await verify(dev);
    expect(clean.exitCode, clean.stderr).toBe(0);
    expect(clean.result!.ok).toBe(true);
    expect(clean.result!.snapshot).toBe(1);
    expect(clean.result!.differences).toEqual([]);
    const text = await cli(['verify', '--system', '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(text.exitCode, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^snapshot 1: OK \(test-x86_64 1\.0, signed by /);

    // Outside the compared scope: the writable /etc and the data subvolumes.
    await writeFile(join(dev.root, 'etc/hostname'), 'changed\n');
    await writeFile(join(dev.root, 'var/new-state'), 'data');
    expect((await verify(dev)).exitCode).toBe(0);

    const expected: { path: string; kind: string; fields: string[] }[] = [];
    const step = async (what: string, f: (snap: string) => Promise<void>, d: { path: string; kind: string; fields: string[] }) => {
      await tamper(dev, f);
      expected.push(d);
      const r = await verify(dev);
      expect(r.exitCode, `${what}: ${r.stderr}`).toBe(100);
      expect(r.stderr).toMatch(/\[SYSTEM_MODIFIED\]/);
      const sorted = [...expected].sort((a, b) => (a.path < b.path ? -1 : 1));
      expect(r.result!.differences.map((x) => x).sort((a, b) => (a.path < b.path ? -1 : 1)), what).toEqual(sorted);
    };
    await step('flipped byte', async (s) => {
      const fh = await open(join(s, 'usr/share/t/unchanged.bin'), 'r+');
      await fh.write(Buffer.from([8]), 0, 1, 150_000); // 7 -> 8; size and mtime kept
      await fh.close();
      await sys.run('touch', ['-d', '@1600000000', join(s, 'usr/share/t/unchanged.bin')]);
    }, { path: '/usr/share/t/unchanged.bin', kind: 'modified', fields: ['sha256'] });
    await step('chmod', (s) => chmod(join(s, 'usr/bin/tool'), 0o4755), { path: '/usr/bin/tool', kind: 'modified', fields: ['mode'] });
    await step('xattr', async (s) => {
      await sys.run('setfattr', ['-n', 'user.tiu', '-v', 'evil', join(s, 'usr/share/t/xattr')]);
    }, { path: '/usr/share/t/xattr', kind: 'modified', fields: ['xattrs'] });
    await step('new file in /usr', async (s) => {
      await writeFile(join(s, 'usr/bin/backdoor'), '#!/bin/sh\n', { mode: 0o755 });
      await sys.run('touch', ['-d', '@1600000000', join(s, 'usr/bin')]);
    }, { path: '/usr/bin/backdoor', kind: 'extra', fields: [] });
    await step('removed file', async (s) => {
      await unlink(join(s, 'usr/share/t/mode'));
      await sys.run('touch', ['-d', '@1600000000', join(s, 'usr/share/t')]);
    }, { path: '/usr/share/t/mode', kind: 'missing', fields: [] });
    // A symlink pointing out of the snapshot is compared as a link, never followed.
    await step('retargeted symlink', async (s) => {
      await unlink(join(s, 'usr/bin/tool-link'));
      await symlink('/etc/shadow', join(s, 'usr/bin/tool-link'));
      await sys.run('touch', ['-h', '-d', '@1600000000', join(s, 'usr/bin/tool-link')]);
      await sys.run('touch', ['-d', '@1600000000', join(s, 'usr/bin')]);
    }, { path: '/usr/bin/tool-link', kind: 'modified', fields: ['target'] });

    const human = await cli(['verify', '--system', '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(human.exitCode).toBe(100);
    expect(human.stdout).toContain('extra     /usr/bin/backdoor');
    expect(human.stdout).toContain('modified (mode) /usr/bin/tool');
    expect(human.stderr).toMatch(/snapshot 1 differs from its signed image 1\.0: 4 modified, 1 missing, 1 extra/);
  }, 300_000);

  it('passes a snapshot made by an update (v1 -> v2) and records the signature there too', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const x = await cli(['extract', A.v2, '--root', dev.root, '--keyring', A.keys.keyring, '--no-default']);
    expect(x.exitCode, x.stderr).toBe(0);
    const r = await verify(dev, ['--snapshot', '2']);
    expect(r.exitCode, r.stderr + JSON.stringify(r.result?.differences)).toBe(0);
    expect(r.result).toMatchObject({ ok: true, snapshot: 2, version: '2.0' });
  }, 300_000);

  it('checks the evidence first: wrong keyring, tampered index, no recorded signature, unknown snapshot', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const other = await generateDevKeys({ outDir: join(work, 'other-keys') });
    const wrong = await cli(['verify', '--system', '--root', dev.root, '--keyring', other.keyring]);
    expect(wrong.exitCode, wrong.stderr).toBe(13);
    expect(wrong.stderr).toMatch(/does not chain to the keyring.*\[ARCHIVE_UNTRUSTED\]/);

    const none = await verify(dev, ['--snapshot', '7']);
    expect(none.exitCode).toBe(33);

    // An index edited to hide a change: its digest no longer matches the signed manifest.
    await tamper(dev, async (s) => {
      const p = join(s, 'usr/lib/tiu/image/index.jsonl');
      const text = await readFile(p, 'utf8');
      await writeFile(p, text.replace('"path":"usr/bin/tool","type":"file","mode":493', '"path":"usr/bin/tool","type":"file","mode":2541'));
      expect(await readFile(p, 'utf8')).not.toBe(text);
    });
    const idx = await verify(dev);
    expect(idx.exitCode, idx.stderr).toBe(19);
    expect(idx.stderr).toMatch(/recorded index does not match the signed manifest.*\[ARCHIVE_INDEX\]/);

    await tamper(dev, (s) => unlink(join(s, 'usr/lib/tiu/image/manifest.cms')));
    const unsigned = await verify(dev);
    expect(unsigned.exitCode, unsigned.stderr).toBe(101);
    expect(unsigned.stderr).toMatch(/no recorded manifest signature.*\[SYSTEM_UNVERIFIABLE\]/);
  }, 300_000);

  it('refuses an archive together with --system, and --snapshot without it', async () => {
    expect((await cli(['verify', A.v1, '--system'])).exitCode).toBe(2);
    expect((await cli(['verify', A.v1, '--snapshot', '1', '--keyring', A.keys.keyring])).exitCode).toBe(2);
    const archive = await cli(['verify', A.v1, '--json', '--keyring', A.keys.keyring]);
    expect(archive.exitCode, archive.stderr).toBe(0);
    expect(JSON.parse(archive.stdout)).toMatchObject({ ok: true });
    expect((await cli(['verify'])).exitCode).toBe(2);
  });
});
