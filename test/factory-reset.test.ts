/**
 * `tiu factory-reset` on a real loop-mounted btrfs device: user data gone after the "boot"
 * (the new default mounted by its own fstab, then `tiu health-check` as at boot), the image
 * intact (`tiu verify --system`), the old data subvolumes deleted only by the healthy boot's
 * step; kept when the reset is killed at any stage or when the reset boot fails its health
 * check. Plus the pure parts (fstab mapping, marker parsing). Runs the real CLI as root.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { access, mkdir, mkdtemp, readdir, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execa } from 'execa';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, TIU, type ArchiveSet, type InstalledDevice } from './helpers/device.ts';
import { unmountBelow } from './helpers/btrfs.ts';
import { acquireLock } from '../src/snapshot/lock.ts';
import { decideFinish, fstabSubvolumes, parseMarker, planReset, remapFstab } from '../src/tiu/device/reset-plan.ts';
import { renderFstab } from '../src/snapshot/layout.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;
let env: Record<string, string>;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-reset-'));
  A = await makeArchives(sys, work);
  const conf = join(work, 'conf');
  await mkdir(join(conf, 'etc/tiu'), { recursive: true });
  await writeFile(join(conf, 'etc/tiu/tiu.conf'), '[device]\nbootloader = none\n');
  env = { TIU_CONFIG_ROOT: conf, TIU_HEALTH_DRY: '1', TIU_KERNEL_CMDLINE: 'quiet' };
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const exists = (p: string) => access(p).then(() => true, () => false);
const UUID = '0b3f5a6e-1c2d-4e5f-8a9b-0c1d2e3f4a5b';

describe('reset plan (pure)', () => {
  it('maps the data mount points to a fresh data set and keeps every other fstab line', () => {
    const fstab = renderFstab(UUID) + 'UUID=1234-ABCD /boot/efi vfat umask=0077 0 2\n';
    const m = planReset({ snapshot: 7, base: 3, baseFstab: fstab, keepSnapshots: false });
    expect(m.old).toEqual({ var: '@/var', home: '@/home', root: '@/root', opt: '@/opt', srv: '@/srv', 'usr/local': '@/usr/local' });
    expect(m.new.var).toBe('@/.tiu-data/7/var');
    const out = remapFstab(fstab, m.new);
    expect(fstabSubvolumes(out)).toMatchObject({ '.snapshots': '@/.snapshots', var: '@/.tiu-data/7/var', 'usr/local': '@/.tiu-data/7/usr/local', 'boot/grub2/x86_64-efi': '@/boot/grub2/x86_64-efi' });
    expect(out).toContain(`UUID=${UUID} /var btrfs subvol=/@/.tiu-data/7/var,x-initrd.mount 0 0`);
    expect(out).toContain('UUID=1234-ABCD /boot/efi vfat umask=0077 0 2');
    expect(parseMarker(JSON.stringify(m))).toEqual(m);
  });

  it('refuses an fstab without the layout, and damaged or hostile markers', () => {
    expect(() => planReset({ snapshot: 2, base: 1, baseFstab: `UUID=${UUID} / btrfs defaults 0 0\n`, keepSnapshots: false })).toThrow(/mounts no btrfs subvolume at \/var/);
    expect(() => planReset({ snapshot: 2, base: 1, baseFstab: renderFstab(UUID).replace('subvol=/@/home', 'subvol=/@/../x'), keepSnapshots: false })).toThrow(/RESET_FAILED|not a path below @|contains/);
    const good = planReset({ snapshot: 2, base: 1, baseFstab: renderFstab(UUID), keepSnapshots: true });
    const bad = (f: (m: any) => void) => {
      const m = JSON.parse(JSON.stringify(good));
      f(m);
      return () => parseMarker(JSON.stringify(m));
    };
    expect(bad((m) => (m.old.var = '@/.snapshots'))).toThrow(/snapshots subvolume/);
    expect(bad((m) => (m.old.home = '/etc'))).toThrow(/not a path below @/);
    expect(bad((m) => (m.new.var = '@/.tiu-data/9/var'))).toThrow(/not in the reset snapshot's data set/);
    expect(bad((m) => (m.extra = 1))).toThrow(/unknown field/);
    expect(bad((m) => (m.snapshot = 0))).toThrow(/not a snapshot number/);
    expect(() => parseMarker('x'.repeat(20_000))).toThrow(/16 KiB/);
  });

  it('finishes only on the reset snapshot, booted and marked good', () => {
    const marker = planReset({ snapshot: 4, base: 3, baseFstab: renderFstab(UUID), keepSnapshots: false });
    expect(decideFinish({ booted: 4, marker, health: 'good', status: 'pending' })).toBe('finish');
    expect(decideFinish({ booted: 4, marker, health: undefined, status: 'pending' })).toBe('wait');
    expect(decideFinish({ booted: 4, marker, health: 'bad', status: 'pending' })).toBe('wait');
    expect(decideFinish({ booted: 3, marker, health: 'good', status: 'pending' })).toBe('wait');
    expect(decideFinish({ booted: 4, marker, health: 'good', status: 'done' })).toBe('done');
  });
});

/** Puts user data everywhere a reset must erase it. */
async function addUserData(R: string): Promise<void> {
  await mkdir(join(R, 'home/alice'), { recursive: true });
  await writeFile(join(R, 'home/alice/notes'), 'private');
  await writeFile(join(R, 'var/app.db'), 'state');
  await writeFile(join(R, 'root/.secret'), 'root secret');
  await writeFile(join(R, 'srv/site'), 'site');
  await writeFile(join(R, 'opt/tool'), 'tool');
  await writeFile(join(R, 'usr/local/bin-x'), 'local');
  await writeFile(join(R, 'etc/passwd'), (await readFile(join(R, 'etc/passwd'), 'utf8')) + 'alice:x:1000:1000::/home/alice:/bin/sh\n');
  await writeFile(join(R, 'etc/hostname'), 'alices-box\n');
}

/** "Reboots" the device: unmounts R and mounts the default snapshot with what its own fstab says. */
async function boot(dev: InstalledDevice): Promise<void> {
  await unmountBelow(sys, dev.root);
  await sys.run('mount', ['-t', 'btrfs', dev.loopDev, dev.root]);
  const fstab = fstabSubvolumes(await readFile(join(dev.root, 'etc/fstab'), 'utf8'));
  for (const [mp, subvol] of Object.entries(fstab)) {
    if (!(await exists(join(dev.mount, subvol)))) throw new Error(`fstab mounts ${subvol}, which does not exist`);
    await sys.run('mount', ['-t', 'btrfs', '-o', `subvol=/${subvol}`, dev.loopDev, join(dev.root, mp)]);
  }
}

async function status(R: string) {
  const r = await cli(['status', '--root', R, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout).snapshots as { number: number; default: boolean; booted: boolean; inProgress: boolean; health: string }[];
}

function device(): Promise<InstalledDevice> {
  return installedDevice(sys, A.v1, A.keyringPem);
}

const oldData = (dev: { mount: string }) => ['@/home/alice/notes', '@/var/app.db', '@/root/.secret', '@/srv/site', '@/opt/tool', '@/usr/local/bin-x'].map((p) => join(dev.mount, p));

describe('tiu factory-reset on loop btrfs', () => {
  it('refuses without a terminal and --yes, and while another transaction holds the lock; changes nothing', async () => {
    await using dev = await device();
    await addUserData(dev.root);
    const r = await cli(['factory-reset', '--root', dev.root], { env });
    expect(r.exitCode, r.stderr).toBe(102);
    expect(r.stderr).toMatch(/no terminal to ask on.*--yes.*\[RESET_REFUSED\]/);
    {
      await using _lock = await acquireLock(sys, dev.root);
      const busy = await cli(['factory-reset', '--yes', '--root', dev.root], { env });
      expect(busy.exitCode, busy.stderr).toBe(32);
      expect(busy.stderr).toMatch(/\[BUSY\]/);
    }
    expect((await status(dev.root)).map((s) => s.number)).toEqual([1]);
    for (const p of oldData(dev)) expect(await exists(p), p).toBe(true);
    expect(await exists(join(dev.mount, '@/.tiu-data'))).toBe(false);
  }, 300_000);

  it('resets: user data gone after the boot, image intact, old data deleted only by the healthy boot step', async () => {
    await using dev = await device();
    await addUserData(dev.root);
    const r = await cli(['factory-reset', '--yes', '--json', '--root', dev.root], { env });
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ snapshot: 2, base: 1, version: '1.0', keepSnapshots: false });
    // The reset snapshot keeps the image's vendor /etc copy (the next merge's base, the next reset's source).
    expect(await readFile(join(dev.root, '.snapshots/2/snapshot/usr/lib/tiu/vendor-etc/hostname'), 'utf8')).toBe('tiu-test\n');
    expect((await status(dev.root)).find((s) => s.default)!.number).toBe(2);
    // Nothing erased yet: the running system still has its data.
    for (const p of oldData(dev)) expect(await exists(p), p).toBe(true);
    expect(await readFile(join(dev.root, 'home/alice/notes'), 'utf8')).toBe('private');
    const again = await cli(['factory-reset', '--yes', '--root', dev.root], { env });
    expect(again.exitCode).toBe(102);
    expect(again.stderr).toMatch(/already pending \(snapshot 2\); reboot/);

    await boot(dev);
    const R = dev.root;
    for (const d of ['home', 'var', 'root', 'srv', 'opt', 'usr/local']) expect(await readdir(join(R, d)), d).toEqual([]);
    expect(await readFile(join(R, 'etc/hostname'), 'utf8')).toBe('tiu-test\n');
    expect(await readFile(join(R, 'etc/passwd'), 'utf8')).toBe('root:x:0:0:root:/root:/bin/sh\n');
    expect(await readFile(join(R, 'etc/passwd'), 'utf8')).not.toContain('alice');
    expect(await readFile(join(A.dir, 'tree-v1/etc/ssh/sshd_config'), 'utf8')).toBe(await readFile(join(R, 'etc/ssh/sshd_config'), 'utf8'));
    // The image is intact: the snapshot still equals its signed index.
    const v = await cli(['verify', '--system', '--root', R, '--keyring', A.keys.keyring]);
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    // Still there until the boot is declared healthy.
    for (const p of oldData(dev)) expect(await exists(p), p).toBe(true);
    expect((await status(R)).map((s) => s.number)).toEqual([1, 2]);

    const h = await cli(['health-check', '--root', R], { env });
    expect(h.exitCode, h.stdout + h.stderr).toBe(0);
    expect(h.stdout).toMatch(/factory reset of snapshot 2 finished: 6 old data subvolumes deleted, snapshots 1 deleted/);
    for (const p of ['@/var', '@/home', '@/root', '@/srv', '@/opt', '@/usr/local']) expect(await exists(join(dev.mount, p)), p).toBe(false);
    expect((await status(R)).map((s) => [s.number, s.health])).toEqual([[2, 'good']]);
    // Idempotent: the next boot's run has nothing to do; the fresh data is in use.
    const h2 = await cli(['health-check', '--root', R], { env });
    expect(h2.exitCode).toBe(0);
    expect(h2.stdout).not.toContain('factory reset');
    await writeFile(join(R, 'home/new-user-file'), 'x');
    expect(await exists(join(dev.mount, '@/.tiu-data/2/home/new-user-file'))).toBe(true);

    // The device keeps working: a second reset replaces the data set of the first.
    const r3 = await cli(['factory-reset', '--yes', '--keep-snapshots', '--root', R], { env });
    expect(r3.exitCode, r3.stderr).toBe(0);
    await boot(dev);
    const h3 = await cli(['health-check', '--root', R], { env });
    expect(h3.exitCode, h3.stdout + h3.stderr).toBe(0);
    expect(h3.stdout).toMatch(/factory reset of snapshot 3 finished: 6 old data subvolumes deleted, snapshots 2 kept \(now mounting the new data\)/);
    expect(await readdir(join(dev.mount, '@/.tiu-data'))).toEqual(['3']);
    expect(fstabSubvolumes(await readFile(join(R, '.snapshots/2/snapshot/etc/fstab'), 'utf8')).home).toBe('@/.tiu-data/3/home');
  }, 300_000);

  it('killed at every stage: the old device stays, and the next reset cleans up the leftovers', async () => {
    await using dev = await device();
    await addUserData(dev.root);
    for (const stage of ['snapshot', 'etc', 'data', 'fstab', 'boot', 'switch']) {
      const r = await execa(process.execPath, [TIU, 'factory-reset', '--yes', '--root', dev.root], { reject: false, env: { ...process.env, ...env, TIU_TEST_RESET_KILL_AT: stage } });
      expect(r.signal, `${stage}: ${r.stderr}`).toBe('SIGKILL');
      const st = await status(dev.root);
      expect(st.find((s) => s.default)!.number, stage).toBe(1);
      for (const p of oldData(dev)) expect(await exists(p), `${stage}: ${p}`).toBe(true);
      expect(await readFile(join(dev.root, 'etc/hostname'), 'utf8')).toBe('alices-box\n');
    }
    // A kill after the switch: the reset is in place and happens at the next boot.
    const late = await execa(process.execPath, [TIU, 'factory-reset', '--yes', '--root', dev.root], { reject: false, env: { ...process.env, ...env, TIU_TEST_RESET_KILL_AT: 'activate' } });
    expect(late.signal).toBe('SIGKILL');
    const st = await status(dev.root);
    const reset = st.find((s) => s.default)!;
    expect(reset.number).toBeGreaterThan(1);
    expect(reset.inProgress).toBe(false);
    // Only that reset's data set is left: the interrupted ones were removed by the next run.
    expect(await readdir(join(dev.mount, '@/.tiu-data'))).toEqual([String(reset.number)]);
    for (const p of oldData(dev)) expect(await exists(p), p).toBe(true);
  }, 600_000);

  it('a reset boot that fails its health check rolls back to the old device with its data', async () => {
    await using dev = await device();
    await addUserData(dev.root);
    expect((await cli(['factory-reset', '--yes', '--root', dev.root], { env })).exitCode).toBe(0);
    await boot(dev);
    const R = dev.root;
    await mkdir(join(R, 'etc/tiu/health.d'), { recursive: true });
    await writeFile(join(R, 'etc/tiu/health.d/fail'), '#!/bin/sh\necho broken >&2\nexit 1\n');
    await chmod(join(R, 'etc/tiu/health.d/fail'), 0o755);
    const h = await cli(['health-check', '--root', R], { env });
    expect(h.exitCode, h.stdout + h.stderr).toBe(1);
    expect(h.stdout).not.toContain('factory reset');
    expect((await status(R)).find((s) => s.default)!.number).toBe(1);
    for (const p of oldData(dev)) expect(await exists(p), p).toBe(true);
    await boot(dev);
    expect(await readFile(join(R, 'home/alice/notes'), 'utf8')).toBe('private');
    expect(await readFile(join(R, 'etc/hostname'), 'utf8')).toBe('alices-box\n');
  }, 300_000);
});
