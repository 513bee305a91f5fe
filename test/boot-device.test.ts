/**
 * Boot integration end to end on a loop-mounted btrfs device, through the real CLI: install
 * and update generate initrds inside the snapshots (fake dracut in the image, real chroot), the
 * bootloader follows the btrfs default (systemd-boot entries on a bind-mounted "ESP", GRUB files
 * with grubenv), and `tiu health-check` marks snapshots good or bad, rolls back, and decides
 * between reboot and emergency (TIU_HEALTH_DRY=1 prints those instead of running them).
 * "Rebooting" = remounting the system from the btrfs default subvolume.
 */
import { describe, expect, it } from 'vitest';
import { chmod, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { tempDir, testSystem } from './helpers/env.ts';
import { cli, installedDevice, type InstalledDevice } from './helpers/device.ts';
import { unmountBelow } from './helpers/btrfs.ts';
import { makeBootArchives, KVER } from './helpers/boot.ts';
import { mountSystem } from '../src/snapshot/layout.ts';
import { openSnapshotStore } from '../src/snapshot/store.ts';
import { parseEntry, parseEntryName, predictBoot, rankOf } from '../src/tiu/boot/bls.ts';
import { parseHealthState } from '../src/tiu/boot/health.ts';
import { grubCanWrite } from '../src/tiu/boot/grub2.ts';

const sys = testSystem();

async function configRoot(dir: string): Promise<string> {
  const root = join(dir, 'config');
  await mkdir(join(root, 'etc/tiu'), { recursive: true });
  return root;
}

/** "Reboot": unmount the running system and mount what the btrfs default says, plus the ESP. */
async function reboot(dev: InstalledDevice, espDir: string): Promise<void> {
  await unmountBelow(sys, dev.root);
  await mountSystem(sys, dev.loopDev, dev.root);
  await sys.run('mount', ['--bind', espDir, join(dev.root, 'efi')]);
}

async function snapshots(root: string) {
  const store = await openSnapshotStore(sys, root, { snapper: 'no' });
  return { list: await store.list(), def: await store.getDefault(), booted: await store.getMounted() };
}

async function healthOf(root: string, n: number): Promise<string | undefined> {
  return (await snapshots(root)).list.find((s) => s.num === n)?.userdata['tiu-health'];
}

async function addPlugin(root: string, name: string, body: string): Promise<void> {
  await mkdir(join(root, 'etc/tiu/health.d'), { recursive: true });
  await writeFile(join(root, 'etc/tiu/health.d', name), body);
  await chmod(join(root, 'etc/tiu/health.d', name), 0o755);
}

async function ranked(esp: string) {
  const out = [];
  for (const file of (await readdir(join(esp, 'loader/entries'))).sort()) {
    const n = parseEntryName(file);
    if (!n) continue;
    const text = await readFile(join(esp, 'loader/entries', file), 'utf8');
    out.push({ num: n.num, file, tries: n.tries, rank: rankOf(parseEntry(text).get('version')?.[0])!, text });
  }
  return out;
}

describe('boot integration on a device (systemd-boot)', () => {
  it('initrds at install and update, entries follow the default, health check rolls back once, then emergency', async () => {
    await using d = await tempDir();
    const a = await makeBootArchives(sys, d.path);
    await writeFile(join(d.path, 'keyring.pem'), a.keyringPem);
    await using dev = await installedDevice(sys, a.v1, a.keyringPem);
    const R = dev.root;
    const env = { TIU_CONFIG_ROOT: await configRoot(d.path), TIU_HEALTH_DRY: '1' };
    const esp = join(d.path, 'esp');
    await mkdir(join(esp, 'EFI/systemd'), { recursive: true });
    await writeFile(join(esp, 'EFI/systemd/systemd-bootx64.efi'), 'not really systemd-boot');
    await sys.run('mount', ['--bind', esp, join(R, 'efi')]);

    // Install ran dracut inside snapshot 1 (chrooted: "/" was the snapshot's own subvolume).
    const initrd1 = await readFile(join(R, `boot/initramfs-${KVER}.img`), 'utf8');
    expect(initrd1).toContain(`fake-initrd kver=${KVER} force=yes`);
    expect(initrd1).toMatch(/^mount \/ \/@\/\.snapshots\/1\/snapshot$/m);

    // The installer's step after installing the boot loader binary.
    let r = await cli(['health-check', '--sync-only', '--root', R], { env });
    expect(r.stderr).not.toMatch(/error|warning/);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/systemd-boot .*1 entries added, 0 removed, default snapshot 1$/);
    expect((await ranked(esp)).map((e) => [e.file, e.rank])).toEqual([['tiu-1.conf', 'default']]);
    expect(await readFile(join(esp, 'tiu/1/initrd'), 'utf8')).toBe(initrd1);
    expect(await readFile(join(esp, 'tiu/1/vmlinuz'), 'utf8')).toContain('fake kernel v1');
    expect(await readFile(join(esp, 'loader/loader.conf'), 'utf8')).toBe('default tiu-*\n');
    const uuid = (await sys.run('btrfs', ['filesystem', 'show', R])).stdout.match(/uuid: (\S+)/)![1];
    expect(parseEntry((await ranked(esp))[0]!.text).get('options')).toEqual([`root=UUID=${uuid} rootflags=subvol=@/.snapshots/1/snapshot rw console=ttyS0 quiet`]);

    // First boot of snapshot 1: healthy.
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('health-check: snapshot 1 is healthy');
    expect(r.stdout).toMatch(/ok {3}read-only root/);
    expect(await healthOf(R, 1)).toBe('good');

    // Update: snapshot 2 gets its own initrd (dracut in snapshot 2), an entry on trial, 1 is the fallback.
    r = await cli(['extract', a.v2, '--root', R, '--keyring', join(d.path, 'keyring.pem')], { env });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.exitCode).toBe(0);
    expect((await snapshots(R)).def).toBe(2);
    const initrd2 = await readFile(join(R, `.snapshots/2/snapshot/boot/initramfs-${KVER}.img`), 'utf8');
    expect(initrd2).toMatch(/^mount \/ \/@\/\.snapshots\/2\/snapshot$/m);
    expect(await readFile(join(esp, 'tiu/2/initrd'), 'utf8')).toBe(initrd2);
    expect(await readFile(join(esp, 'tiu/2/vmlinuz'), 'utf8')).toContain('fake kernel v2');
    expect((await ranked(esp)).map((e) => [e.file, e.rank])).toEqual([['tiu-1.conf', 'fallback'], ['tiu-2+3.conf', 'default']]);
    expect(predictBoot(await ranked(esp))?.num).toBe(2);

    // Boot snapshot 2; it fails its first health check: bad, rolled back to 1, one reboot.
    await reboot(dev, esp);
    expect((await snapshots(R)).booted).toBe(2);
    await addPlugin(R, '50-app', '#!/bin/sh\necho "app did not start" >&2\nexit 1\n');
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('FAIL plugin 50-app: exit 1: app did not start');
    expect(r.stdout).toContain('health-check: dry run: would run: systemctl --no-block reboot');
    expect(r.stdout).not.toContain('emergency.target');
    expect(await healthOf(R, 2)).toBe('bad');
    expect((await snapshots(R)).def).toBe(1);
    const state = parseHealthState(await readFile(join(R, 'var/lib/tiu/health.state'), 'utf8'));
    expect([state.rolledBackFrom, state.rolledBackTo]).toEqual([2, 1]);
    expect((await ranked(esp)).map((e) => [e.file, e.rank])).toEqual([['tiu-1.conf', 'default'], ['tiu-2+0.conf', 'other']]);
    expect(predictBoot(await ranked(esp))?.num).toBe(1);

    // Back in snapshot 1, which fails too: no second reboot, emergency instead; 1 stays good.
    await reboot(dev, esp);
    expect((await snapshots(R)).booted).toBe(1);
    await addPlugin(R, '50-app', '#!/bin/sh\nexit 1\n');
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('would run: systemctl --no-block isolate emergency.target');
    expect(r.stdout).not.toContain('systemctl --no-block reboot');
    expect(r.stdout).toMatch(/already rolled back to snapshot 1.*not rebooting again/);
    expect(await healthOf(R, 1)).toBe('good');
    expect((await snapshots(R)).def).toBe(1);

    // Fixed: healthy again, the state file goes.
    await rm(join(R, 'etc/tiu/health.d/50-app'));
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    await expect(stat(join(R, 'var/lib/tiu/health.state'))).rejects.toThrow();

    // Another update, with tiu.health.reboot=0 on the kernel command line: rolled back, no reboot.
    r = await cli(['extract', a.v2, '--root', R, '--keyring', join(d.path, 'keyring.pem')], { env });
    expect(r.exitCode).toBe(0);
    expect((await snapshots(R)).def).toBe(3);
    expect((await ranked(esp)).map((e) => [e.file, e.rank])).toEqual([['tiu-1.conf', 'fallback'], ['tiu-2+0.conf', 'other'], ['tiu-3+3.conf', 'default']]);
    await reboot(dev, esp);
    await addPlugin(R, '50-app', '#!/bin/sh\nexit 1\n');
    r = await cli(['health-check', '--root', R], { env: { ...env, TIU_KERNEL_CMDLINE: 'root=UUID=x quiet tiu.health.reboot=0' } });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toContain('not rebooting (tiu.health.reboot=0)');
    expect(r.stdout).not.toContain('would run');
    expect(await healthOf(R, 3)).toBe('bad');
    expect((await snapshots(R)).def).toBe(1);

    // Cleanup of snapshot 2 removes its entry and kernel copy at the next sync.
    await reboot(dev, esp);
    r = await cli(['cleanup', '--root', R, '--keep', '0'], { env });
    expect(r.exitCode).toBe(0);
    r = await cli(['health-check', '--sync-only', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    const left = (await snapshots(R)).list.map((s) => s.num);
    expect((await ranked(esp)).map((e) => e.num)).toEqual(left);
    expect((await readdir(join(esp, 'tiu'))).map(Number).sort()).toEqual(left);
  });
});

describe('boot integration on a device (GRUB)', () => {
  it('grub-mkconfig runs in the new snapshot and is unpinned; grubenv carries default and trial; a fallback marks the default bad', async () => {
    await using d = await tempDir();
    const a = await makeBootArchives(sys, d.path, { grub: true });
    await writeFile(join(d.path, 'keyring.pem'), a.keyringPem);
    await using dev = await installedDevice(sys, a.v1, a.keyringPem);
    const R = dev.root;
    const env = { TIU_CONFIG_ROOT: await configRoot(d.path), TIU_HEALTH_DRY: '1' };
    // GRUB installed with --boot-directory on the ESP: $prefix = /efi/grub (not btrfs: GRUB can count).
    const esp = join(d.path, 'esp');
    await mkdir(join(esp, 'grub/i386-pc'), { recursive: true });
    await sys.run('mount', ['--bind', esp, join(R, 'efi')]);
    const G = join(R, 'efi/grub');
    expect(await grubCanWrite(G)).toBe(true);
    expect(await grubCanWrite(join(R, '.snapshots'))).toBe(false);
    const env1 = async () => Object.fromEntries((await execa('grub-editenv', [join(G, 'grubenv'), 'list'])).stdout.split('\n').filter(Boolean).map((l) => l.split('=') as [string, string]));

    let r = await cli(['health-check', '--sync-only', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^grub2 .*1 entries added/);
    expect(await env1()).toEqual({ tiu_default: '1', tiu_boot_try: '', tiu_fallback: '', tiu_tries: '' });
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(0);

    r = await cli(['extract', a.v2, '--root', R, '--keyring', join(d.path, 'keyring.pem')], { env });
    expect(r.exitCode).toBe(0);
    // The distribution's grub.cfg of snapshot 2, generated inside it, no longer pins the subvolume.
    const cfg2 = await readFile(join(R, '.snapshots/2/snapshot/boot/grub/grub.cfg'), 'utf8');
    expect(cfg2).toContain('linux /@/.snapshots/2/snapshot/boot/vmlinuz-6.1.0-tiu root=UUID=x ro ${tiu_rootflags} quiet');
    expect(cfg2).not.toContain('rootflags=subvol=');
    expect(cfg2).toContain('os-prober disabled: true');
    expect(await env1()).toEqual({ tiu_default: '2', tiu_boot_try: '2', tiu_fallback: '1', tiu_tries: '3' });
    const snaps = await readFile(join(G, 'tiu-snapshots.cfg'), 'utf8');
    expect(snaps).toContain(`initrd '/@/.snapshots/2/snapshot/boot/initramfs-${KVER}.img'`);
    await writeFile(join(d.path, 'all.cfg'), snaps + (await readFile(join(G, 'grub.cfg'), 'utf8')) + cfg2);
    expect((await execa('grub-script-check', [join(d.path, 'all.cfg')], { reject: false })).exitCode).toBe(0);

    // Snapshot 2 boots and is healthy: the trial ends.
    await reboot(dev, esp);
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    expect(await healthOf(R, 2)).toBe('good');
    expect(await env1()).toMatchObject({ tiu_default: '2', tiu_boot_try: '' });

    // Snapshot 3 never reaches userspace: GRUB used its tries (tiu_tries=0) and booted snapshot 2.
    r = await cli(['extract', a.v2, '--root', R, '--keyring', join(d.path, 'keyring.pem')], { env });
    expect(r.exitCode).toBe(0);
    expect(await env1()).toMatchObject({ tiu_default: '3', tiu_boot_try: '3', tiu_fallback: '2', tiu_tries: '3' });
    await execa('grub-editenv', [join(G, 'grubenv'), 'set', 'tiu_tries=0']);
    expect((await snapshots(R)).booted).toBe(2);
    r = await cli(['health-check', '--root', R], { env });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('snapshot 3 did not boot');
    expect(await healthOf(R, 3)).toBe('bad');
    expect((await snapshots(R)).def).toBe(2);
    expect(await env1()).toMatchObject({ tiu_default: '2', tiu_boot_try: '', tiu_tries: '' });
  });
});
