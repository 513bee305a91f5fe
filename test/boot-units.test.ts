/** Pure parts of the boot integration: no root, no files. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compareVersions, filterCmdline, newestKernel, parseOsRelease, pickKernels } from '../src/tiu/boot/kernels.ts';
import { GRUBENV_SIZE, parseGrubenv, serializeGrubenv, updateGrubenv } from '../src/tiu/boot/grubenv.ts';
import { decodeEfiString, encodeEfiString, entryFileName, isBad, loaderDefault, parseEntry, parseEntryName, predictBoot, rankOf, rankVersion, renderEntry, setLoaderDefault, withVersion, type Rank } from '../src/tiu/boot/bls.ts';
import { grubQuote, parseSnapshotsCfg, renderSelector, renderSnapshotsCfg, unpinGrubCfg, type GrubEntry } from '../src/tiu/boot/grub-config.ts';
import { chooseBootloader, type BootFacts } from '../src/tiu/boot/detect.ts';
import { chooseFallback, planBootSync, type SyncSnapshot } from '../src/tiu/boot/sync.ts';
import { decideHealth, parseHealthState, rebootAllowedByCmdline, renderHealthState, type CheckResult } from '../src/tiu/boot/health.ts';
import { chrootArgv, CHROOT_SCRIPT } from '../src/tiu/boot/chroot.ts';
import { blsOptions } from '../src/tiu/boot/systemd-boot.ts';
import { grubEntryOf } from '../src/tiu/boot/grub2.ts';
import type { SnapshotFacts } from '../src/tiu/device/policy.ts';
import { TiuError } from '../src/core/errors.ts';

describe('kernel versions', () => {
  it('orders like strverscmp: numbers numerically, ~ first', () => {
    const sorted = ['6.10.0-1-amd64', '6.1.0-13-amd64', '6.1.0-9-amd64', '6.1.0~rc1', '5.19.0', '6.1.0'].sort(compareVersions);
    expect(sorted).toEqual(['5.19.0', '6.1.0~rc1', '6.1.0', '6.1.0-9-amd64', '6.1.0-13-amd64', '6.10.0-1-amd64']);
    expect(compareVersions('1.010', '1.10')).toBe(0);
    expect(compareVersions('a', 'a')).toBe(0);
  });

  it('is antisymmetric (property)', () => {
    fc.assert(fc.property(fc.string({ unit: fc.constantFrom('1', '2', '9', '0', '.', '-', 'a', '~') }), fc.string({ unit: fc.constantFrom('1', '2', '9', '0', '.', '-', 'a', '~') }), (a, b) => Math.sign(compareVersions(a, b)) === -Math.sign(compareVersions(b, a))));
  });

  it('picks kernels from both layouts, prefers usr/lib/modules, ignores unsafe names', () => {
    const k = pickKernels(['6.1.0-13-amd64', "6.1'evil"], ['vmlinuz-6.1.0-13-amd64', 'vmlinuz-5.10.0-1-amd64', 'vmlinuz-$(x)', 'config-6.1.0-13-amd64', 'vmlinuz-']);
    expect(k).toEqual([
      { kver: '5.10.0-1-amd64', path: 'boot/vmlinuz-5.10.0-1-amd64' },
      { kver: '6.1.0-13-amd64', path: 'usr/lib/modules/6.1.0-13-amd64/vmlinuz' },
    ]);
    expect(newestKernel(k)?.kver).toBe('6.1.0-13-amd64');
    expect(newestKernel([])).toBeUndefined();
  });

  it('filters the options tiu owns from a kernel cmdline file', () => {
    expect(filterCmdline('root=/dev/sda1 ro  console=ttyS0,115200\nrootflags=subvol=@ quiet rw rootfstype=btrfs\n')).toEqual(['console=ttyS0,115200', 'quiet']);
  });

  it('parses os-release quoting', () => {
    expect(parseOsRelease('NAME="Debian GNU/Linux"\nPRETTY_NAME=\'tiu \\"x\'\nID=debian\n# c\nBAD LINE\n')).toEqual({ NAME: 'Debian GNU/Linux', PRETTY_NAME: 'tiu \\"x', ID: 'debian' });
  });
});

describe('grubenv', () => {
  it('round-trips and has the exact size and padding', () => {
    const vars = new Map([
      ['saved_entry', 'Debian GNU/Linux'],
      ['tiu_default', '5'],
      ['weird', 'back\\slash and\nnewline'],
    ]);
    const buf = serializeGrubenv(vars);
    expect(buf.length).toBe(GRUBENV_SIZE);
    expect(buf.subarray(0, 25).toString()).toBe('# GRUB Environment Block\n');
    expect(buf.at(-1)).toBe(0x23);
    expect(buf.toString('latin1')).toContain('weird=back\\\\slash and\\\nnewline\n');
    expect([...parseGrubenv(buf)]).toEqual([...vars]);
  });

  it('round-trips any byte values (property)', () => {
    const name = fc.stringMatching(/^[a-z_][a-z0-9_]{0,10}$/);
    const value = fc.string({ unit: fc.integer({ min: 1, max: 255 }).map((c) => String.fromCharCode(c)), maxLength: 40 });
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, value), { selector: (t) => t[0], maxLength: 8 }), (pairs) => {
        const m = new Map(pairs);
        expect([...parseGrubenv(serializeGrubenv(m))]).toEqual([...m]);
      }),
    );
  });

  it('keeps order on update, appends new names, removes undefined', () => {
    const m = updateGrubenv(new Map([['a', '1'], ['b', '2'], ['c', '3']]), { b: 'x', d: '4', a: undefined });
    expect([...m]).toEqual([['b', 'x'], ['c', '3'], ['d', '4']]);
  });

  it('rejects a block without signature, a full block, and names GRUB cannot read', () => {
    expect(() => parseGrubenv(Buffer.from('saved_entry=1\n'))).toThrow(/signature/);
    expect(() => serializeGrubenv({ big: 'x'.repeat(1000) })).toThrow(/full/);
    expect(() => serializeGrubenv({ 'a=b': '1' })).toThrow(TiuError);
    expect(() => serializeGrubenv({ 'bad name': '1' })).toThrow(TiuError);
    expect(() => serializeGrubenv({ x: 'snowman \u2603' })).toThrow(TiuError);
  });

  it('stops at a broken line like GRUB (variables before it are kept)', () => {
    const text = '# GRUB Environment Block\na=1\n#comment\nb=2\nbroken-no-equals';
    expect([...parseGrubenv(Buffer.from(text, 'latin1'))]).toEqual([['a', '1'], ['b', '2']]);
    expect([...parseGrubenv(Buffer.from('# GRUB Environment Block\na=1\nb=unterminated', 'latin1'))]).toEqual([['a', '1']]);
  });
});

describe('BLS entries', () => {
  it('parses and builds entry names with boot counters', () => {
    expect(parseEntryName('tiu-5.conf')).toEqual({ num: 5 });
    expect(parseEntryName('tiu-5+3.conf')).toEqual({ num: 5, tries: { left: 3, done: 0 } });
    expect(parseEntryName('tiu-12+0-3.conf')).toEqual({ num: 12, tries: { left: 0, done: 3 } });
    for (const bad of ['tiu-0.conf', 'tiu-05.conf', 'tiu-5+.conf', 'tiu-5+1-.conf', 'debian-6.1.conf', 'tiu-5.conf.bak', 'tiu-5-1+2.conf']) expect(parseEntryName(bad)).toBeUndefined();
    expect(entryFileName(5, { left: 2, done: 1 })).toBe('tiu-5+2-1.conf');
    expect(entryFileName(5, { left: 3, done: 0 })).toBe('tiu-5+3.conf');
    expect(entryFileName(5)).toBe('tiu-5.conf');
    expect(isBad(parseEntryName('tiu-7+0-3.conf')!)).toBe(true);
    expect(isBad(parseEntryName('tiu-7.conf')!)).toBe(false);
  });

  it('names survive systemd-boot counting down (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1e6 }), fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 9 }), (num, left, done) => {
        expect(parseEntryName(entryFileName(num, { left, done }))).toEqual({ num, tries: { left, done } });
      }),
    );
  });

  it('renders an entry that parses back', () => {
    const text = renderEntry({ title: 'Debian, snapshot 5', version: rankVersion(5, 'default'), sortKey: 'tiu', linux: '/tiu/5/vmlinuz', initrd: '/tiu/5/initrd', options: ['root=UUID=u', 'rootflags=subvol=@/.snapshots/5/snapshot', 'rw'] });
    const e = parseEntry(text);
    expect(e.get('title')).toEqual(['Debian, snapshot 5']);
    expect(e.get('linux')).toEqual(['/tiu/5/vmlinuz']);
    expect(e.get('options')).toEqual(['root=UUID=u rootflags=subvol=@/.snapshots/5/snapshot rw']);
    expect(rankOf(e.get('version')![0])).toBe('default');
    const demoted = parseEntry(withVersion(text, rankVersion(5, 'other')));
    expect(rankOf(demoted.get('version')![0])).toBe('other');
    expect(demoted.get('title')).toEqual(['Debian, snapshot 5']);
    expect(() => renderEntry({ title: 'a\nlinux /evil', version: '1', sortKey: 'tiu', linux: '/x', options: [] })).toThrow(TiuError);
  });

  it('edits only the default line of loader.conf', () => {
    expect(setLoaderDefault(undefined, 'tiu-*')).toBe('default tiu-*\n');
    expect(setLoaderDefault('timeout 3\n#default x\ndefault debian-*\neditor no\ndefault other', 'tiu-*')).toBe('timeout 3\n#default x\ndefault tiu-*\neditor no\n');
    expect(loaderDefault('default a\ntimeout 1\ndefault  b \n')).toBe('b');
    expect(loaderDefault('timeout 1\n')).toBeUndefined();
  });

  it('encodes EFI string variables as efivarfs expects', () => {
    const b = encodeEfiString('tiu-5+3.conf');
    expect(b.subarray(0, 4)).toEqual(Buffer.from([7, 0, 0, 0]));
    expect(b.length).toBe(4 + 2 * ('tiu-5+3.conf'.length + 1));
    expect(b.subarray(-2)).toEqual(Buffer.from([0, 0]));
    expect(decodeEfiString(b)).toBe('tiu-5+3.conf');
  });

  it('ranks make systemd-boot boot the default, then the fallback when the default is bad', () => {
    const e = (num: number, rank: Rank, left?: number) => ({ num, file: `tiu-${num}.conf`, rank, tries: left === undefined ? undefined : { left, done: 3 - left } });
    // New snapshot 7 on trial, 5 is the fallback, 6 is newer than 5 but not the fallback.
    expect(predictBoot([e(5, 'fallback'), e(6, 'other'), e(7, 'default', 2)])?.num).toBe(7);
    expect(predictBoot([e(5, 'fallback'), e(6, 'other'), e(7, 'default', 0)])?.num).toBe(5);
    // After a rollback to an older snapshot, the newer ones do not win.
    expect(predictBoot([e(3, 'default'), e(8, 'other'), e(9, 'other')])?.num).toBe(3);
    expect(predictBoot([])).toBeUndefined();
  });

  it('pins the root of each entry to its snapshot', () => {
    expect(blsOptions({ num: 5, title: 't', kver: 'k', kernelPath: '/x', kernelRel: 'boot/x', subvol: '@/.snapshots/5/snapshot', uuid: 'U', cmdline: ['console=ttyS0'] })).toEqual(['root=UUID=U', 'rootflags=subvol=@/.snapshots/5/snapshot', 'rw', 'console=ttyS0']);
  });
});

describe('GRUB scripts', () => {
  const entry: GrubEntry = { num: 5, title: "Debian's 12", kernel: '/@/.snapshots/5/snapshot/boot/vmlinuz-6.1', initrd: '/@/.snapshots/5/snapshot/boot/initrd.img-6.1', uuid: 'U', subvol: '@/.snapshots/5/snapshot', cmdline: ['console=ttyS0', "a'b"] };

  it('quotes words for GRUB', () => {
    expect(grubQuote("it's")).toBe(`'it'\\''s'`);
    expect(grubQuote('$x')).toBe(`'$x'`);
    expect(() => grubQuote('a\nb')).toThrow(TiuError);
  });

  it('records entries in tiu-snapshots.cfg and reads them back', () => {
    const text = renderSnapshotsCfg([entry, { ...entry, num: 3, initrd: undefined, subvol: '@/.snapshots/3/snapshot' }], 5);
    expect(parseSnapshotsCfg(text).map((e) => e.num)).toEqual([3, 5]);
    expect(parseSnapshotsCfg(text).find((e) => e.num === 5)).toEqual(entry);
    expect(text).toContain(`linux '/@/.snapshots/5/snapshot/boot/vmlinuz-6.1' 'root=UUID=U' $2 'rw' 'console=ttyS0' 'a'\\''b'`);
    expect(text).toContain(`tiu_linux 3 'rootflags=subvol=@/.snapshots/3/snapshot'`);
    expect(text).toContain("'Snapshot 5: Debian'\\''s 12 (default)'");
    expect(parseSnapshotsCfg('# tiu-entry {broken\n# tiu-entry {"num":-1}\n')).toEqual([]);
  });

  it('the selector loads the trial state and pins only non-default boots', () => {
    const s = renderSelector({ uuid: 'U-1', snapshotsSubvol: '@/.snapshots', envWritable: false, defaultNum: 5, candidates: [5, 3, 5] });
    expect(s).toContain('load_env --file "${tiu_env}" tiu_default tiu_fallback tiu_boot_try tiu_tries tiu_oneshot');
    expect(s).toContain('set tiu_env_writable=0');
    expect(s).toContain('for tiu_n in ${tiu_boot} 5 3; do');
    expect(s).toContain('set tiu_rootflags="rootflags=subvol=@/.snapshots/${tiu_boot}/snapshot"');
    expect(s).toContain('if [ "${tiu_tries}" = 3 ]; then set tiu_tries=2');
    expect(() => renderSelector({ uuid: 'U', snapshotsSubvol: '@/snap shots', envWritable: true, defaultNum: 1, candidates: [] })).toThrow(/characters/);
  });

  it('unpins grub-mkconfig output only for the snapshot itself', () => {
    const cfg = [
      "linux /@/.snapshots/5/snapshot/boot/vmlinuz root=UUID=U ro rootflags=subvol=@/.snapshots/5/snapshot quiet",
      "linux /x rootflags=subvol=/@/.snapshots/5/snapshot",
      "linux /x rootflags=subvol=@/.snapshots/55/snapshot",
      "linux /x rootflags=subvol=@/.snapshots/5/snapshotX",
    ].join('\n');
    const r = unpinGrubCfg(cfg, '@/.snapshots/5/snapshot');
    expect(r.count).toBe(2);
    expect(r.text.split('\n')).toEqual([
      'linux /@/.snapshots/5/snapshot/boot/vmlinuz root=UUID=U ro ${tiu_rootflags} quiet',
      'linux /x ${tiu_rootflags}',
      'linux /x rootflags=subvol=@/.snapshots/55/snapshot',
      'linux /x rootflags=subvol=@/.snapshots/5/snapshotX',
    ]);
  });

  it('GRUB entries use paths from the btrfs top level', () => {
    const e = grubEntryOf({ num: 2, title: 't', kver: 'k', kernelPath: '/h/k', kernelRel: 'boot/vmlinuz-k', initrdRel: 'boot/initrd.img-k', subvol: '@/.snapshots/2/snapshot', uuid: 'U', cmdline: [] });
    expect(e.kernel).toBe('/@/.snapshots/2/snapshot/boot/vmlinuz-k');
    expect(e.initrd).toBe('/@/.snapshots/2/snapshot/boot/initrd.img-k');
  });
});

describe('bootloader detection', () => {
  const none: BootFacts = { esps: [], grubDirs: [], distroGrubCfg: false };
  it('auto prefers a mounted ESP with systemd-boot, then GRUB, then none', () => {
    expect(chooseBootloader('auto', none)).toEqual({ kind: 'none' });
    expect(chooseBootloader('auto', { ...none, esps: [{ path: '/r/boot/efi', mounted: true, systemdBoot: false }], grubDirs: ['/r/boot/efi/grub'] })).toEqual({ kind: 'grub2', grubDir: '/r/boot/efi/grub' });
    expect(chooseBootloader('auto', { ...none, esps: [{ path: '/r/boot/efi', mounted: false, systemdBoot: true }] })).toEqual({ kind: 'none' });
    expect(chooseBootloader('auto', { esps: [{ path: '/r/efi', mounted: true, systemdBoot: true }], grubDirs: ['/r/.snapshots/grub'], distroGrubCfg: true })).toEqual({ kind: 'systemd-boot', esp: '/r/efi' });
    expect(chooseBootloader('auto', { ...none, distroGrubCfg: true })).toEqual({ kind: 'grub2', grubDir: undefined });
  });
  it('explicit settings', () => {
    expect(chooseBootloader('none', { esps: [{ path: '/e', mounted: true, systemdBoot: true }], grubDirs: [], distroGrubCfg: true })).toEqual({ kind: 'none' });
    expect(() => chooseBootloader('systemd-boot', none)).toThrow(/no ESP/);
    expect(chooseBootloader('systemd-boot', { ...none, esps: [{ path: '/e', mounted: true, systemdBoot: false }] })).toEqual({ kind: 'systemd-boot', esp: '/e' });
  });
});

const snap = (num: number, o: Partial<SyncSnapshot> = {}): SyncSnapshot => ({ num, health: 'unknown', inProgress: false, isDefault: false, isMounted: false, bootable: true, ...o });

describe('boot sync plan', () => {
  it('after an update: adds the new entry on trial, falls back to the booted snapshot', () => {
    const plan = planBootSync({
      snapshots: [snap(1, { health: 'good' }), snap(2, { health: 'good', isMounted: true }), snap(3, { isDefault: true }), snap(4, { inProgress: true })],
      entries: [{ num: 1, id: 'a', bad: false }, { num: 2, id: 'b', bad: false }, { num: 9, id: 'gone', bad: false }],
      loaderDefault: 2,
      trial: undefined,
    });
    expect(plan).toEqual({ add: [{ num: 3, trial: true }], remove: [9], markBad: [], setDefault: { num: 3, fallback: 2 }, warnings: [] });
  });

  it('does not re-arm a running trial (that would allow endless tries)', () => {
    const plan = planBootSync({ snapshots: [snap(2, { health: 'good', isMounted: true }), snap(3, { isDefault: true })], entries: [{ num: 2, id: 'a', bad: false }, { num: 3, id: 'b', bad: false }], loaderDefault: 3, trial: { num: 3, triesLeft: 1, fallback: 2 } });
    expect(plan.setDefault).toBeUndefined();
    expect(plan.endStaleTry).toBeUndefined();
  });

  it('booted into the default: no trial; a good default with a leftover counter is finished', () => {
    expect(planBootSync({ snapshots: [snap(3, { isDefault: true, isMounted: true })], entries: [], loaderDefault: undefined, trial: undefined }).setDefault).toEqual({ num: 3 });
    const p = planBootSync({ snapshots: [snap(3, { isDefault: true, health: 'good' }), snap(2, { health: 'good', isMounted: true })], entries: [{ num: 3, id: 'x', bad: false }, { num: 2, id: 'y', bad: false }], loaderDefault: 3, trial: { num: 3, fallback: 2 } });
    expect(p.setDefault).toBeUndefined();
    expect(p.endStaleTry).toBe(3);
  });

  it('marks entries of bad snapshots, keeps the default alone when it has no kernel', () => {
    const p = planBootSync({ snapshots: [snap(1, { health: 'good', isDefault: true, bootable: false }), snap(2, { health: 'bad' })], entries: [{ num: 2, id: 'x', bad: false }], loaderDefault: 2, trial: undefined });
    expect(p.markBad).toEqual([2]);
    expect(p.setDefault).toBeUndefined();
    expect(p.warnings[0]).toMatch(/no kernel/);
  });

  it('fallback choice: booted, else newest good, else newest older not bad', () => {
    expect(chooseFallback([snap(1, { health: 'good' }), snap(2, { isMounted: true }), snap(5, { isDefault: true })], 5)).toBe(2);
    expect(chooseFallback([snap(1, { health: 'good' }), snap(2, { isMounted: true, health: 'bad' }), snap(3), snap(5)], 5)).toBe(1);
    expect(chooseFallback([snap(1), snap(3, { health: 'bad' }), snap(6), snap(5)], 5)).toBe(1);
    expect(chooseFallback([snap(5)], 5)).toBeUndefined();
  });
});

const facts = (num: number, o: { health?: string; def?: boolean; booted?: boolean; inProgress?: boolean } = {}): SnapshotFacts => ({
  num,
  date: '2026-01-01T00:00:00Z',
  description: '',
  cleanup: 'number',
  userdata: { ...(o.health ? { 'tiu-health': o.health } : {}), ...(o.inProgress ? { 'tiu-in-progress': 'yes' } : {}) },
  isDefault: !!o.def,
  isMounted: !!o.booted,
});
const ok: CheckResult[] = [{ name: 'a', ok: true, detail: '' }, { name: 's', ok: false, skipped: true, detail: 'skipped' }];
const bad: CheckResult[] = [{ name: 'plugin x', ok: false, detail: 'exit 1' }];
const now = new Date('2026-02-03T04:05:06Z');

describe('health decisions', () => {
  it('healthy: marks good, ends the trial, removes the state', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good' }), facts(2, { def: true, booted: true })], checks: ok, trial: { num: 2, triesLeft: 2, fallback: 1 }, state: { rolledBackFrom: 3, rolledBackTo: 1, date: 'x' }, rebootAllowed: true }, now);
    expect(d.verdict).toBe('healthy');
    expect(d.actions).toEqual([{ kind: 'mark', num: 2, health: 'good' }, { kind: 'end-try', num: 2, outcome: 'good' }, { kind: 'remove-state' }]);
  });

  it('a new snapshot failing its first check: bad, rollback to the last good, reboot once', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good' }), facts(2, { health: 'good' }), facts(3, { health: 'bad' }), facts(4, { def: true, booted: true })], checks: bad, trial: undefined, state: undefined, rebootAllowed: true }, now);
    expect(d.verdict).toBe('rolled-back');
    expect(d.actions).toEqual([
      { kind: 'mark', num: 4, health: 'bad' },
      { kind: 'end-try', num: 4, outcome: 'bad' },
      { kind: 'set-default', num: 2 },
      { kind: 'write-state', state: { rolledBackFrom: 4, rolledBackTo: 2, date: '2026-02-03T04:05:06.000Z' } },
      { kind: 'reboot' },
    ]);
  });

  it('tiu.health.reboot=0: rolls back but does not reboot', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good' }), facts(2, { def: true, booted: true })], checks: bad, trial: undefined, state: undefined, rebootAllowed: false }, now);
    expect(d.verdict).toBe('rolled-back');
    expect(d.actions.map((a) => a.kind)).not.toContain('reboot');
    expect(d.messages.join('\n')).toMatch(/not rebooting/);
  });

  it('a second failure after a rollback stops in emergency mode, no reboot', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good', def: true, booted: true }), facts(2, { health: 'bad' })], checks: bad, trial: undefined, state: { rolledBackFrom: 2, rolledBackTo: 1, date: 'then' }, rebootAllowed: true }, now);
    expect(d.verdict).toBe('emergency');
    expect(d.actions).toEqual([{ kind: 'emergency' }]);
  });

  it('a new snapshot failing while a rollback is recorded does not reboot again', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good' }), facts(3, { def: true, booted: true })], checks: bad, trial: undefined, state: { rolledBackFrom: 2, rolledBackTo: 1, date: 'then' }, rebootAllowed: true }, now);
    expect(d.actions).toEqual([{ kind: 'emergency' }]);
  });

  it('a good snapshot failing later is not marked bad (emergency, no reboot); nothing to roll back to: emergency', () => {
    expect(decideHealth({ snapshots: [facts(1, { health: 'good' }), facts(2, { health: 'good', def: true, booted: true })], checks: bad, trial: undefined, state: undefined, rebootAllowed: true }, now).actions).toEqual([{ kind: 'emergency' }]);
    expect(decideHealth({ snapshots: [facts(1, { def: true, booted: true })], checks: bad, trial: undefined, state: undefined, rebootAllowed: true }, now).actions).toEqual([{ kind: 'emergency' }]);
  });

  it('the loader fell back after the trial ran out: the default is marked bad, the booted one becomes the default', () => {
    const d = decideHealth({ snapshots: [facts(1, { health: 'good', booted: true }), facts(2, { def: true })], checks: ok, trial: { num: 2, triesLeft: 0, fallback: 1 }, state: undefined, rebootAllowed: true }, now);
    expect(d.verdict).toBe('healthy');
    expect(d.actions).toEqual([
      { kind: 'mark', num: 2, health: 'bad' },
      { kind: 'end-try', num: 2, outcome: 'bad' },
      { kind: 'set-default', num: 1 },
      { kind: 'end-try', num: 1, outcome: 'good' },
    ]);
    // Tries left (or unknown, GRUB on btrfs): the user picked another entry; nothing is marked.
    for (const triesLeft of [1, undefined]) {
      const d2 = decideHealth({ snapshots: [facts(1, { health: 'good', booted: true }), facts(2, { def: true })], checks: ok, trial: { num: 2, triesLeft, fallback: 1 }, state: undefined, rebootAllowed: true }, now);
      expect(d2.actions.some((a) => a.kind === 'mark' && a.num === 2)).toBe(false);
    }
  });

  it('a root that is not a snapshot: nothing to mark', () => {
    expect(decideHealth({ snapshots: [facts(1)], checks: ok, trial: undefined, state: undefined, rebootAllowed: true }, now).verdict).toBe('not-a-snapshot');
  });

  it('reads the kernel option tiu.health.reboot', () => {
    expect(rebootAllowedByCmdline('BOOT_IMAGE=/vmlinuz root=UUID=x quiet')).toBe(true);
    expect(rebootAllowedByCmdline('quiet tiu.health.reboot=0')).toBe(false);
    expect(rebootAllowedByCmdline('tiu.health.reboot=off')).toBe(false);
    expect(rebootAllowedByCmdline('tiu.health.reboot=0 tiu.health.reboot=1')).toBe(true);
    expect(rebootAllowedByCmdline('xtiu.health.reboot=0')).toBe(true);
  });

  it('state file round trip and strict parsing', () => {
    const s = { rolledBackFrom: 7, rolledBackTo: 3, date: '2026-02-03T04:05:06.000Z' };
    expect(parseHealthState(renderHealthState(s))).toEqual(s);
    expect(() => parseHealthState('ROLLED_BACK_FROM=7\n')).toThrow(/ROLLED_BACK_TO/);
    expect(() => parseHealthState('ROLLED_BACK_FROM=7\nROLLED_BACK_TO=x\n')).toThrow(/ROLLED_BACK_TO/);
    expect(() => parseHealthState('ROLLED_BACK_FROM=1\nROLLED_BACK_TO=2\nrm -rf /\n')).toThrow(/line 3/);
  });
});

describe('chroot helper', () => {
  it('passes the snapshot and the command as arguments, never in the script', () => {
    const argv = chrootArgv("/s/it's $(x)", ['dracut', '--force', '--kver', '6.1; reboot']);
    expect(argv.slice(0, 6)).toEqual(['--mount', '--propagation', 'private', '--', 'sh', '-c']);
    expect(argv[6]).toBe(CHROOT_SCRIPT);
    expect(argv.slice(7)).toEqual(['tiu-chroot', "/s/it's $(x)", 'dracut', '--force', '--kver', '6.1; reboot']);
    // The script expands only its positional arguments (and $root, copied from $1).
    expect(new Set(CHROOT_SCRIPT.match(/\$\{?[A-Za-z_@0-9]+/g))).toEqual(new Set(['$1', '$root', '$@']));
    expect(() => chrootArgv('relative', ['x'])).toThrow(TiuError);
    expect(() => chrootArgv('/s', [])).toThrow(TiuError);
  });
});
