/**
 * The file-writing parts of the boot integration on temp directories: systemd-boot entries on a
 * directory acting as the ESP, GRUB files checked with the real grub-editenv and
 * grub-script-check, kernel discovery with symlinks, health plugins, and the systemd units
 * checked with systemd-analyze verify.
 */
import { describe, expect, it } from 'vitest';
import { chmod, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { tempDir, testSystem } from './helpers/env.ts';
import { systemdBootBackend } from '../src/tiu/boot/systemd-boot.ts';
import { grubBackend } from '../src/tiu/boot/grub2.ts';
import { decodeEfiString, LOADER_GUID, parseEntry, parseEntryName, predictBoot, rankOf } from '../src/tiu/boot/bls.ts';
import { serializeGrubenv } from '../src/tiu/boot/grubenv.ts';
import { findInitrd, findKernels, snapshotCmdline, snapshotOsName } from '../src/tiu/boot/kernels.ts';
import { listPlugins, runPlugins } from '../src/tiu/boot/health-run.ts';
import { SELECTOR_MARK } from '../src/tiu/boot/grub-config.ts';
import type { SnapshotBoot } from '../src/tiu/boot/types.ts';

const sys = testSystem();

async function fakeSnapshot(dir: string, num: number): Promise<SnapshotBoot> {
  const snap = join(dir, `snap${num}`);
  await mkdir(join(snap, 'boot'), { recursive: true });
  await writeFile(join(snap, 'boot/vmlinuz-6.1.0'), `kernel of ${num}\n`.repeat(1000));
  await writeFile(join(snap, 'boot/initrd.img-6.1.0'), `initrd of ${num}\n`.repeat(500));
  return {
    num,
    title: `Test OS, snapshot ${num}`,
    kver: '6.1.0',
    kernelPath: join(snap, 'boot/vmlinuz-6.1.0'),
    initrdPath: join(snap, 'boot/initrd.img-6.1.0'),
    kernelRel: 'boot/vmlinuz-6.1.0',
    initrdRel: 'boot/initrd.img-6.1.0',
    subvol: `@/.snapshots/${num}/snapshot`,
    uuid: '11111111-2222-3333-4444-555555555555',
    cmdline: ['console=ttyS0'],
  };
}

async function entryFiles(esp: string): Promise<string[]> {
  return (await readdir(join(esp, 'loader/entries'))).sort();
}

async function ranked(esp: string) {
  const out = [];
  for (const file of await entryFiles(esp)) {
    const n = parseEntryName(file)!;
    const rank = rankOf(parseEntry(await readFile(join(esp, 'loader/entries', file), 'utf8')).get('version')?.[0])!;
    out.push({ num: n.num, file, tries: n.tries, rank });
  }
  return out;
}

describe('systemd-boot backend on a directory acting as the ESP', () => {
  it('adds entries with copies of kernel and initrd, arms and ends a trial, ranks the fallback', async () => {
    await using d = await tempDir();
    const esp = join(d.path, 'esp');
    await mkdir(join(esp, 'loader'), { recursive: true });
    await writeFile(join(esp, 'loader/loader.conf'), 'timeout 5\nconsole-mode keep\n');
    const be = systemdBootBackend(sys, { esp, efivarsDir: join(d.path, 'no-efivars') });
    const s1 = await fakeSnapshot(d.path, 1);
    const s2 = await fakeSnapshot(d.path, 2);

    await be.addEntry(s1);
    await be.setDefault(1);
    await be.addEntry(s2, { trial: true });
    expect(await entryFiles(esp)).toEqual(['tiu-1.conf', 'tiu-2+3.conf']);
    expect(await readFile(join(esp, 'tiu/2/vmlinuz'))).toEqual(await readFile(s2.kernelPath));
    expect(await readFile(join(esp, 'tiu/2/initrd'))).toEqual(await readFile(s2.initrdPath!));
    const e2 = parseEntry(await readFile(join(esp, 'loader/entries/tiu-2+3.conf'), 'utf8'));
    expect(e2.get('linux')).toEqual(['/tiu/2/vmlinuz']);
    expect(e2.get('initrd')).toEqual(['/tiu/2/initrd']);
    expect(e2.get('options')).toEqual([`root=UUID=${s2.uuid} rootflags=subvol=@/.snapshots/2/snapshot rw console=ttyS0`]);
    expect(e2.get('sort-key')).toEqual(['tiu']);
    // Not the default yet: snapshot 1 still boots.
    expect(predictBoot(await ranked(esp))?.num).toBe(1);

    await be.setDefault(2, { fallback: 1 });
    expect(await readFile(join(esp, 'loader/loader.conf'), 'utf8')).toBe('default tiu-*\ntimeout 5\nconsole-mode keep\n');
    expect((await ranked(esp)).map((e) => [e.num, e.rank])).toEqual([[1, 'fallback'], [2, 'default']]);
    expect(predictBoot(await ranked(esp))?.num).toBe(2);
    expect(await be.getTry()).toEqual({ num: 2, triesLeft: 3, fallback: 1 });
    expect(await be.getDefault()).toBe(2);

    // systemd-boot counts a try by renaming; setting the same default again keeps the count.
    const { rename } = await import('node:fs/promises');
    await rename(join(esp, 'loader/entries/tiu-2+3.conf'), join(esp, 'loader/entries/tiu-2+1-2.conf'));
    await be.setDefault(2, { fallback: 1 });
    expect(await entryFiles(esp)).toEqual(['tiu-1.conf', 'tiu-2+1-2.conf']);
    expect(await be.getTry()).toEqual({ num: 2, triesLeft: 1, fallback: 1 });
    // Out of tries: systemd-boot boots the fallback.
    await rename(join(esp, 'loader/entries/tiu-2+1-2.conf'), join(esp, 'loader/entries/tiu-2+0-3.conf'));
    expect(predictBoot(await ranked(esp))?.num).toBe(1);
    expect((await be.listEntries()).find((e) => e.num === 2)?.bad).toBe(true);

    // Blessed: no counter any more.
    await rename(join(esp, 'loader/entries/tiu-2+0-3.conf'), join(esp, 'loader/entries/tiu-2+2-1.conf'));
    await be.endTry(2, 'good');
    expect(await entryFiles(esp)).toEqual(['tiu-1.conf', 'tiu-2.conf']);
    expect(await be.getTry()).toBeUndefined();
    // Refreshing an entry keeps its name and rank.
    await be.addEntry(s2);
    expect((await ranked(esp)).map((e) => [e.file, e.rank])).toEqual([['tiu-1.conf', 'fallback'], ['tiu-2.conf', 'default']]);

    // Marked bad by the health check, rolled back to 1.
    await be.endTry(2, 'bad');
    await be.setDefault(1);
    expect(await entryFiles(esp)).toEqual(['tiu-1.conf', 'tiu-2+0.conf']);
    expect((await ranked(esp)).map((e) => [e.num, e.rank])).toEqual([[1, 'default'], [2, 'other']]);
    expect(predictBoot(await ranked(esp))?.num).toBe(1);

    await be.removeEntry(2);
    expect(await entryFiles(esp)).toEqual(['tiu-1.conf']);
    expect(await readdir(join(esp, 'tiu'))).toEqual(['1']);
    await expect(be.setDefault(2)).rejects.toThrow(/no systemd-boot entry for snapshot 2/);
  });

  it('one-shot writes LoaderEntryOneShot to efivarfs, and says so when there is none', async () => {
    await using d = await tempDir();
    const esp = join(d.path, 'esp');
    const efivars = join(d.path, 'efivars');
    await mkdir(efivars);
    const s3 = await fakeSnapshot(d.path, 3);
    const none = systemdBootBackend(sys, { esp, efivarsDir: join(d.path, 'missing') });
    await none.addEntry(s3, { trial: true });
    expect(await none.setOneShot(3)).toBe(false);
    const be = systemdBootBackend(sys, { esp, efivarsDir: efivars });
    expect(await be.setOneShot(3)).toBe(true);
    const raw = await readFile(join(efivars, `LoaderEntryOneShot-${LOADER_GUID}`));
    expect(decodeEfiString(raw)).toBe('tiu-3+3.conf');
    await expect(be.setOneShot(4)).rejects.toThrow(/no systemd-boot entry/);
  });
});

describe('GRUB backend on a directory acting as GRUB\'s $prefix', () => {
  it('writes a selector GRUB accepts and a grubenv grub-editenv reads; keeps foreign variables', async () => {
    await using d = await tempDir();
    const g = join(d.path, 'grub');
    await mkdir(g);
    await execa('grub-editenv', [join(g, 'grubenv'), 'create']);
    await execa('grub-editenv', [join(g, 'grubenv'), 'set', 'saved_entry=Debian GNU/Linux']);
    const be = grubBackend(sys, { grubDir: g, uuid: '11111111-2222-3333-4444-555555555555', snapshotsSubvol: '@/.snapshots', envWritable: true });
    await be.addEntry(await fakeSnapshot(d.path, 1));
    await be.setDefault(1);
    await be.addEntry(await fakeSnapshot(d.path, 2));
    await be.setDefault(2, { fallback: 1 });

    const list = async () => Object.fromEntries((await execa('grub-editenv', [join(g, 'grubenv'), 'list'])).stdout.split('\n').map((l) => l.split('=') as [string, string]));
    expect(await list()).toEqual({ saved_entry: 'Debian GNU/Linux', tiu_default: '2', tiu_boot_try: '2', tiu_fallback: '1', tiu_tries: '3' });
    expect((await readFile(join(g, 'grubenv'))).length).toBe(1024);
    expect(await be.getTry()).toEqual({ num: 2, triesLeft: 3, fallback: 1 });
    expect((await be.listEntries()).map((e) => e.num)).toEqual([1, 2]);

    const selector = await readFile(join(g, 'grub.cfg'), 'utf8');
    expect(selector.startsWith(SELECTOR_MARK)).toBe(true);
    expect(selector).toContain('search --no-floppy --fs-uuid --set=root 11111111-2222-3333-4444-555555555555');
    expect(selector).toContain('for tiu_n in ${tiu_boot} 2 1; do');
    const snaps = await readFile(join(g, 'tiu-snapshots.cfg'), 'utf8');
    expect(snaps).toContain("linux '/@/.snapshots/2/snapshot/boot/vmlinuz-6.1.0' 'root=UUID=11111111-2222-3333-4444-555555555555' $2 'rw' 'console=ttyS0'");
    expect(snaps).toContain("'Snapshot 2: Test OS, snapshot 2 (default)'");
    // GRUB's own parser accepts both scripts (as GRUB reads them: snapshots first).
    await writeFile(join(d.path, 'both.cfg'), snaps + selector);
    const check = await execa('grub-script-check', [join(d.path, 'both.cfg')], { reject: false });
    expect(check.stderr + check.stdout).toBe('');
    expect(check.exitCode).toBe(0);
    // …and rejects a broken one (the check can fail).
    await writeFile(join(d.path, 'broken.cfg'), selector.replace(/\nfi\n/, '\n'));
    expect((await execa('grub-script-check', [join(d.path, 'broken.cfg')], { reject: false })).exitCode).not.toBe(0);

    // GRUB counted two tries; re-arming the same trial keeps the count.
    await execa('grub-editenv', [join(g, 'grubenv'), 'set', 'tiu_tries=1']);
    await be.setDefault(2, { fallback: 1 });
    expect((await list()).tiu_tries).toBe('1');
    expect(await be.getTry()).toEqual({ num: 2, triesLeft: 1, fallback: 1 });

    await be.endTry(1, 'good');
    expect((await list()).tiu_boot_try).toBe('2');
    await be.endTry(2, 'good');
    expect(await be.getTry()).toBeUndefined();
    expect(await list()).toMatchObject({ saved_entry: 'Debian GNU/Linux', tiu_default: '2', tiu_boot_try: '', tiu_tries: '' });

    expect(await be.setOneShot(1)).toBe(true);
    expect((await list()).tiu_oneshot).toBe('1');
    await be.removeEntry(1);
    expect((await be.listEntries()).map((e) => e.num)).toEqual([2]);
    expect(await readFile(join(g, 'grub.cfg'), 'utf8')).toContain('for tiu_n in ${tiu_boot} 2; do');
  });

  it('a fresh grubenv is byte-identical to grub-editenv\'s', async () => {
    await using d = await tempDir();
    const f = join(d.path, 'ge');
    await execa('grub-editenv', [f, 'create']);
    await execa('grub-editenv', [f, 'set', 'a=1', 'tiu_default=12', 'x=back\\slash']);
    expect(serializeGrubenv({ a: '1', tiu_default: '12', x: 'back\\slash' })).toEqual(await readFile(f));
  });

  it('on btrfs (GRUB cannot write): no one-shot, and GRUB\'s tries count is not trusted', async () => {
    await using d = await tempDir();
    const g = join(d.path, 'grub');
    await mkdir(g);
    const be = grubBackend(sys, { grubDir: g, uuid: 'u-1', snapshotsSubvol: '@/.snapshots', envWritable: false });
    await be.addEntry(await fakeSnapshot(d.path, 4));
    await be.addEntry(await fakeSnapshot(d.path, 5));
    await be.setDefault(5, { fallback: 4 });
    expect(await be.setOneShot(4)).toBe(false);
    expect(await be.getTry()).toEqual({ num: 5, triesLeft: undefined, fallback: 4 });
    expect(await readFile(join(g, 'grub.cfg'), 'utf8')).toContain('set tiu_env_writable=0');
    await expect(be.setDefault(6)).rejects.toThrow(/no GRUB entry for snapshot 6/);
  });
});

describe('kernels and initrds inside a snapshot', () => {
  it('finds kernels in both layouts, follows symlinks inside the snapshot only', async () => {
    await using d = await tempDir();
    const s = d.path;
    await mkdir(join(s, 'usr/lib/modules/6.1.0-13-amd64'), { recursive: true });
    await mkdir(join(s, 'usr/lib/modules/6.2.0'), { recursive: true });
    await mkdir(join(s, 'usr/lib/modules/5.0-nokernel'), { recursive: true });
    await mkdir(join(s, 'boot'));
    await mkdir(join(s, 'etc'));
    await writeFile(join(s, 'usr/lib/modules/6.2.0/vmlinuz'), 'k62');
    await writeFile(join(s, 'usr/lib/modules/6.1.0-13-amd64/vmlinuz'), 'k61');
    await symlink('../usr/lib/modules/6.1.0-13-amd64/vmlinuz', join(s, 'boot/vmlinuz-6.1.0-13-amd64'));
    // An absolute symlink means "inside the snapshot": /etc/passwd of the host must not count.
    await symlink('/etc/passwd', join(s, 'boot/vmlinuz-9.9.9'));
    await symlink('/usr/lib/modules/6.2.0/vmlinuz', join(s, 'boot/vmlinuz-6.2.0'));
    expect(await findKernels(s)).toEqual([
      { kver: '6.1.0-13-amd64', path: 'usr/lib/modules/6.1.0-13-amd64/vmlinuz' },
      { kver: '6.2.0', path: 'usr/lib/modules/6.2.0/vmlinuz' },
    ]);
    expect(await findInitrd(s, '6.2.0')).toBeUndefined();
    await writeFile(join(s, 'boot/initrd.img-6.2.0'), 'old');
    const { utimes } = await import('node:fs/promises');
    await utimes(join(s, 'boot/initrd.img-6.2.0'), 1_600_000_000, 1_600_000_000);
    await writeFile(join(s, 'boot/initramfs-6.2.0.img'), 'new from dracut');
    expect(await findInitrd(s, '6.2.0')).toBe('boot/initramfs-6.2.0.img');
    await symlink('/etc/shadow', join(s, 'usr/lib/modules/6.1.0-13-amd64/initrd'));
    expect(await findInitrd(s, '6.1.0-13-amd64')).toBeUndefined();

    expect(await snapshotCmdline(s)).toEqual([]);
    await mkdir(join(s, 'usr/lib/kernel'), { recursive: true });
    await writeFile(join(s, 'usr/lib/kernel/cmdline'), 'root=/dev/x quiet\n');
    expect(await snapshotCmdline(s)).toEqual(['quiet']);
    await mkdir(join(s, 'etc/kernel'));
    await writeFile(join(s, 'etc/kernel/cmdline'), 'console=ttyS0 ro\n');
    expect(await snapshotCmdline(s)).toEqual(['console=ttyS0']);
    expect(await snapshotOsName(s)).toBeUndefined();
    await mkdir(join(s, 'usr/lib'), { recursive: true });
    await writeFile(join(s, 'usr/lib/os-release'), 'NAME=Foo\nPRETTY_NAME="Foo Linux 1"\n');
    await symlink('../usr/lib/os-release', join(s, 'etc/os-release'));
    expect(await snapshotOsName(s)).toBe('Foo Linux 1');
  });
});

describe('health plugins', () => {
  it('merges /usr/lib and /etc by name, honours masks and the exec bit, times out', async () => {
    await using d = await tempDir();
    const r = d.path;
    const put = async (rel: string, body: string, mode = 0o755) => {
      await mkdir(join(r, rel, '..'), { recursive: true });
      await writeFile(join(r, rel), body);
      await chmod(join(r, rel), mode);
    };
    await put('usr/lib/tiu/health.d/10-ok', '#!/bin/sh\n[ "$1" = check ] && [ -n "$TIU_ROOT" ]\n');
    await put('usr/lib/tiu/health.d/20-replaced', '#!/bin/sh\nexit 1\n');
    await put('etc/tiu/health.d/20-replaced', '#!/bin/sh\nexit 0\n');
    await put('usr/lib/tiu/health.d/30-masked', '#!/bin/sh\nexit 1\n');
    await symlink('/dev/null', join(r, 'etc/tiu/health.d/30-masked'));
    await put('usr/lib/tiu/health.d/40-noexec', '#!/bin/sh\nexit 1\n', 0o644);
    await put('etc/tiu/health.d/50-fails', '#!/bin/sh\necho "database is down" >&2\nexit 3\n');
    await put('etc/tiu/health.d/60-hangs', '#!/bin/sh\nexec sleep 30\n');
    expect((await listPlugins(r)).map((p) => p.path.slice(r.length + 1))).toEqual([
      'usr/lib/tiu/health.d/10-ok',
      'etc/tiu/health.d/20-replaced',
      'etc/tiu/health.d/50-fails',
      'etc/tiu/health.d/60-hangs',
    ]);
    const t0 = Date.now();
    const res = await runPlugins(sys, r, 1000);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(res.map((c) => [c.name, c.ok])).toEqual([
      ['plugin 10-ok', true],
      ['plugin 20-replaced', true],
      ['plugin 50-fails', false],
      ['plugin 60-hangs', false],
    ]);
    expect(res[2]!.detail).toBe('exit 3: database is down');
    expect(res[3]!.detail).toMatch(/timed out/);
  });
});

describe('systemd units', () => {
  const dir = join(import.meta.dirname, '../systemd');
  const units = ['tiu-health.service', 'tiu-update.service', 'tiu-update.timer', 'tiu-etc-sync.service', 'tiu-cleanup.service', 'tiu-cleanup.timer', 'tiu-daemon.service'];

  it('systemd-analyze verify accepts them without a warning', async () => {
    await using d = await tempDir();
    // verify insists that ExecStart= binaries exist: stand /usr/bin/true in for /usr/bin/tiu.
    // --man=no: the Documentation= pages are installed by the package, not on this machine.
    for (const u of units) await writeFile(join(d.path, u), (await readFile(join(dir, u), 'utf8')).replaceAll('/usr/bin/tiu ', '/usr/bin/true '));
    const r = await execa('systemd-analyze', ['verify', '--man=no', ...units.map((u) => join(d.path, u))], { reject: false, env: { SYSTEMD_LOG_LEVEL: 'notice' } });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // The check can fail: a typo is reported.
    await writeFile(join(d.path, 'bad.service'), (await readFile(join(d.path, 'tiu-health.service'), 'utf8')).replace('Type=oneshot', 'Type=oneshott'));
    expect((await execa('systemd-analyze', ['verify', join(d.path, 'bad.service')], { reject: false })).stderr).toMatch(/service type/);
  });

  it('wire into boot assessment, the shutdown and the timer as documented', async () => {
    const read = async (u: string) => readFile(join(dir, u), 'utf8');
    const health = await read('tiu-health.service');
    for (const l of ['Before=boot-complete.target', 'RequiredBy=boot-complete.target', 'Type=oneshot', 'ExecStart=/usr/bin/tiu health-check']) expect(health).toContain(l);
    const timer = await read('tiu-update.timer');
    for (const l of ['OnCalendar=daily', 'RandomizedDelaySec=', 'Persistent=true', 'WantedBy=timers.target']) expect(timer).toContain(l);
    const sync = await read('tiu-etc-sync.service');
    for (const l of ['RemainAfterExit=yes', 'After=local-fs.target', 'DefaultDependencies=no']) expect(sync).toContain(l);
    expect(await read('tiu-update.service')).toContain('After=network-online.target tiu-health.service');
  });

  it('tiu-etc-sync starts tiu etc sync (at boot and at shutdown) only when an update left a syncpoint', async () => {
    const unit = await readFile(join(dir, 'tiu-etc-sync.service'), 'utf8');
    for (const key of ['ExecStart', 'ExecStop']) {
      const m = unit.match(new RegExp(`^${key}=/bin/sh -c '(.*)'$`, 'm'));
      expect(m, key).toBeTruthy();
      await using d = await tempDir();
      // systemd turns $$ into $; the paths point into the temporary directory.
      const script = m![1]!.replaceAll('$$', '$').replaceAll('/.snapshots/', `${d.path}/.snapshots/`).replaceAll('/usr/bin/tiu', `${d.path}/tiu`);
      await writeFile(join(d.path, 'tiu'), `#!/bin/sh\necho "$@" >${d.path}/called\n`, { mode: 0o755 });
      await mkdir(join(d.path, '.snapshots/1/snapshot'), { recursive: true });
      await mkdir(join(d.path, '.snapshots/2/snapshot'), { recursive: true });
      expect((await execa('sh', ['-c', script], { reject: false })).exitCode).toBe(0);
      await expect(readFile(join(d.path, 'called'), 'utf8')).rejects.toThrow();
      await mkdir(join(d.path, '.snapshots/2/etc-syncpoint'));
      expect((await execa('sh', ['-c', script], { reject: false })).exitCode).toBe(0);
      expect(await readFile(join(d.path, 'called'), 'utf8')).toBe('etc sync\n');
    }
  });
});
