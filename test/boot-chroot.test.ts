/**
 * Tools run inside a snapshot (chroot in a private mount namespace) on a minimal root tree with
 * a real shell: the mounts exist only in the namespace, / is a mount point there, /run is
 * fresh; a fake dracut shows what regenerateInitrds runs and where the initrd ends up.
 */
import { describe, expect, it } from 'vitest';
import { chmod, mkdir, readFile, writeFile, rm, stat, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { tempDir, testSystem } from './helpers/env.ts';
import { chrootArgv, runInSnapshot } from '../src/tiu/boot/chroot.ts';
import { regenerateInitrds } from '../src/tiu/boot/initrd.ts';
import { TiuError } from '../src/core/errors.ts';
import { FAKE_DRACUT, makeMiniRoot } from './helpers/boot.ts';

const sys = testSystem();

async function hostMountsBelow(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').map((l) => l.split(' ')[4] ?? '').filter((mp) => mp === dir || mp.startsWith(`${dir}/`));
}

describe('running tools inside a snapshot', () => {
  it('chroots in a private namespace: / is a mount point, /dev /proc /sys from the host, /run fresh, nothing on the host', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'snap');
    await makeMiniRoot(root);
    await writeFile(join(root, 'usr/bin/dracut'), FAKE_DRACUT);
    await chmod(join(root, 'usr/bin/dracut'), 0o755);
    await writeFile('/run/tiu-boot-test-marker', 'host /run must not be visible');
    try {
      await runInSnapshot(sys, root, ['dracut', '--force', '--kver', '6.1.0-test']);
    } finally {
      await rm('/run/tiu-boot-test-marker', { force: true });
    }
    const seen = await readFile(join(root, 'boot/initramfs-6.1.0-test.img'), 'utf8');
    expect(seen).toContain('fake-initrd kver=6.1.0-test force=yes out=/boot/initramfs-6.1.0-test.img');
    // "/" inside is the bind mount of the snapshot onto itself (grub-probe needs a mount there).
    expect(seen).toMatch(new RegExp(`^mount / ${root.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    for (const mp of ['/dev', '/proc', '/sys', '/run', '/tmp']) expect(seen).toMatch(new RegExp(`^mount ${mp} `, 'm'));
    expect(seen).toContain('run=empty');
    expect(seen).toContain('dev=ok');
    expect(seen).toContain('sys=ok');
    expect(seen).toContain('tmpdir=/tmp');
    expect(seen).toContain('path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
    // Nothing below the snapshot is mounted in the host's namespace.
    expect(await hostMountsBelow(root)).toEqual([]);
    // Missing mount point directories were created, owned by the snapshot.
    expect((await stat(join(root, 'proc'))).isDirectory()).toBe(true);
  });

  it('nothing leaks to the host while the tool runs, and all of it goes when the process is killed', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'snap');
    await makeMiniRoot(root);
    for (const m of ['dev', 'proc', 'sys', 'run', 'tmp']) await mkdir(join(root, m));
    // The same argv tiu uses, started here so the test can SIGKILL it as if tiu died.
    const child = execa('unshare', chrootArgv(root, ['sh', '-c', 'echo started > /boot/started; while read x; do :; done']), { reject: false, stdin: 'pipe' });
    try {
      for (let i = 0; i < 100 && !(await stat(join(root, 'boot/started')).catch(() => undefined)); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await readFile(join(root, 'boot/started'), 'utf8')).toBe('started\n');
      expect(await hostMountsBelow(root)).toEqual([]);
      // The namespace is alive and has the mounts (seen through the process' own mountinfo).
      const inside = await readFile(`/proc/${child.pid}/mountinfo`, 'utf8');
      expect(inside.split('\n').filter((l) => / \/run rw/.test(l) || / \/proc /.test(l)).length).toBeGreaterThanOrEqual(2);
    } finally {
      child.kill('SIGKILL');
      await child;
    }
    expect(await hostMountsBelow(root)).toEqual([]);
    // Not busy: the tree can be removed right away.
    await rm(root, { recursive: true });
  });

  it('a failing mount stops before the chroot (set -e); a non-directory mount point is refused up front', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'snap');
    await makeMiniRoot(root);
    for (const m of ['dev', 'proc', 'sys', 'tmp']) await mkdir(join(root, m));
    await writeFile(join(root, 'run'), 'a file where a directory belongs');
    const r = await sys.run('unshare', chrootArgv(root, ['sh', '-c', 'echo ran > /boot/ran']), { allowFailure: true });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/run/);
    await expect(stat(join(root, 'boot/ran'))).rejects.toThrow();
    await expect(runInSnapshot(sys, root, ['sh', '-c', 'echo ran > /boot/ran'])).rejects.toThrow(/is not a directory/);
    await expect(stat(join(root, 'boot/ran'))).rejects.toThrow();
    expect(await hostMountsBelow(root)).toEqual([]);
  });
});

describe('regenerateInitrds', () => {
  async function tree(d: string, kvers: string[], dracut = true): Promise<string> {
    const root = join(d, 'snap');
    await makeMiniRoot(root);
    for (const k of kvers) {
      await mkdir(join(root, 'usr/lib/modules', k), { recursive: true });
      await writeFile(join(root, 'boot', `vmlinuz-${k}`), `kernel ${k}`);
    }
    if (dracut) {
      await writeFile(join(root, 'usr/bin/dracut'), FAKE_DRACUT);
      await chmod(join(root, 'usr/bin/dracut'), 0o755);
    }
    return root;
  }

  it('runs dracut once per kernel inside the snapshot and finds the initrds', async () => {
    await using d = await tempDir();
    const root = await tree(d.path, ['6.1.0-a', '6.2.0-b']);
    const r = await regenerateInitrds(sys, { snapshotDir: root, initrd: 'regenerate' });
    expect(r).toEqual({ status: 'regenerated', kernels: [{ kver: '6.1.0-a', initrd: 'boot/initramfs-6.1.0-a.img' }, { kver: '6.2.0-b', initrd: 'boot/initramfs-6.2.0-b.img' }] });
    expect(await readFile(join(root, 'boot/initramfs-6.2.0-b.img'), 'utf8')).toContain('kver=6.2.0-b force=yes');
  });

  it('overwrites the initrd the image has under its own name (no stale one beside a fresh one)', async () => {
    await using d = await tempDir();
    const root = await tree(d.path, ['6.1.0-a']);
    await mkdir(join(root, 'usr/lib/modules/6.1.0-a'), { recursive: true });
    await writeFile(join(root, 'usr/lib/modules/6.1.0-a/initrd'), 'stale initrd from the image');
    await symlink('../usr/lib/modules/6.1.0-a/initrd', join(root, 'boot/initrd.img-6.1.0-a'));
    const r = await regenerateInitrds(sys, { snapshotDir: root, initrd: 'regenerate' });
    expect(r.kernels).toEqual([{ kver: '6.1.0-a', initrd: 'boot/initrd.img-6.1.0-a' }]);
    expect(await readFile(join(root, 'usr/lib/modules/6.1.0-a/initrd'), 'utf8')).toContain('fake-initrd kver=6.1.0-a force=yes out=/usr/lib/modules/6.1.0-a/initrd');
    await expect(stat(join(root, 'boot/initramfs-6.1.0-a.img'))).rejects.toThrow();
  });

  it('skips shipped initrds, snapshots without dracut, and snapshots without kernels', async () => {
    await using d = await tempDir();
    const root = await tree(d.path, ['6.1.0-a']);
    await writeFile(join(root, 'boot/initrd.img-6.1.0-a'), 'shipped by the image');
    expect(await regenerateInitrds(sys, { snapshotDir: root, initrd: 'shipped' })).toEqual({ status: 'shipped', kernels: [{ kver: '6.1.0-a', initrd: 'boot/initrd.img-6.1.0-a' }] });
    expect(await readFile(join(root, 'boot/initrd.img-6.1.0-a'), 'utf8')).toBe('shipped by the image');
    await rm(join(root, 'usr/bin/dracut'));
    expect((await regenerateInitrds(sys, { snapshotDir: root, initrd: 'regenerate' })).status).toBe('no-dracut');
    await using d2 = await tempDir();
    expect((await regenerateInitrds(sys, { snapshotDir: await tree(d2.path, []), initrd: 'regenerate' })).status).toBe('no-kernel');
  });

  it('dracut failing, or leaving no initrd, is BOOT_FAILED with dracut\'s message', async () => {
    await using d = await tempDir();
    const root = await tree(d.path, ['6.1.0-broken']);
    const e = await regenerateInitrds(sys, { snapshotDir: root, initrd: 'regenerate' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TiuError);
    expect((e as TiuError).code).toBe('BOOT_FAILED');
    expect((e as TiuError).message).toMatch(/cannot install module for 6\.1\.0-broken/);
    await using d2 = await tempDir();
    const root2 = await tree(d2.path, ['6.1.0-lost']);
    await expect(regenerateInitrds(sys, { snapshotDir: root2, initrd: 'regenerate' })).rejects.toThrow(/no initrd was found for kernel 6\.1\.0-lost/);
  });
});
