/** The serial-console protocol (pure): markers survive echo and interleaved console noise. */
import { describe, expect, it } from 'vitest';
import { extractJson, findResult, probeAnswered, probeCommand, wrapCommand } from './lib/console.ts';
import { countBoots, kernelOwnsConsole, lastGoingDown, poweredOff } from './lib/qemu.ts';
import { snapshotNumber } from './lib/guest.ts';

describe('console protocol', () => {
  it('finds output and exit code between the markers, not in the echoed command', () => {
    const sent = wrapCommand('abc1', 'ls /nope');
    // A terminal that echoes the typed text, CRLF line ends, then the real output.
    const stream = `${sent.replace(/\n/g, '\r\n')}__TIUB_abc1\r\nls: cannot access '/nope'\r\n__TIUE_abc1_2\r\n`;
    expect(sent).not.toContain('__TIUB_abc1');
    expect(findResult(stream, 'abc1')).toEqual({ output: "ls: cannot access '/nope'", exitCode: 2, end: stream.indexOf('__TIUE_abc1_2') + '__TIUE_abc1_2'.length });
  });

  it('waits for the end marker and ignores other ids', () => {
    expect(findResult('__TIUB_a\nhalf', 'a')).toBeUndefined();
    expect(findResult('__TIUB_b\nx\n__TIUE_b_0\n', 'a')).toBeUndefined();
    expect(findResult('__TIUB_a\nno newline__TIUE_a_0', 'a')?.output).toBe('no newline');
    expect(findResult('__TIUB_a\n__TIUE_a_0\n', 'a')).toMatchObject({ output: '', exitCode: 0 });
  });

  it('starts searching at `from`', () => {
    const s = '__TIUB_a\none\n__TIUE_a_0\n__TIUB_a\ntwo\n__TIUE_a_1\n';
    const first = findResult(s, 'a')!;
    expect(findResult(s, 'a', first.end)).toMatchObject({ output: 'two', exitCode: 1 });
  });

  it('recognizes the probe answer only as printed output', () => {
    const p = probeCommand('z9');
    expect(probeAnswered(p, 'z9')).toBe(false);
    expect(probeAnswered(`${p}__TIUR_z9\r\n`, 'z9')).toBe(true);
  });

  it('refuses marker ids that could break the command line', () => {
    expect(() => wrapCommand('a b', 'true')).toThrow();
    expect(() => wrapCommand("a'", 'true')).toThrow();
  });

  it('extracts JSON after warnings and keeps nested objects', () => {
    expect(extractJson('tiu: warning: x\n{\n  "a": {"b": [1]}\n}\n')).toEqual({ a: { b: [1] } });
    expect(() => extractJson('no json')).toThrow(/no JSON/);
  });

  it('lets the driver type only while a kernel owns the console', () => {
    const banner = '[    0.000000] Linux version 6.1.0-50-amd64 (x)\n';
    expect(kernelOwnsConsole('BdsDxe: loading Boot0001\n', 0)).toBe(false);
    expect(kernelOwnsConsole(`firmware\n${banner}systemd...\n`, 0)).toBe(true);
    expect(kernelOwnsConsole(`${banner}[  27.8] Kernel panic - not syncing: Attempted to kill init!\n`, 0)).toBe(false);
    expect(kernelOwnsConsole(`${banner}[ 99.1] reboot: Restarting system\nsystemd-boot menu`, 0)).toBe(false);
    expect(kernelOwnsConsole(`${banner}reboot: Restarting system\n${banner}`, 0)).toBe(true);
    // Only banners after `from` count (the old boot's kernel does not).
    const s = `${banner}running\n`;
    expect(kernelOwnsConsole(s, s.length)).toBe(false);
  });

  it('counts kernel starts and reads snapshot numbers from subvolume paths', () => {
    expect(countBoots('[    0.000000] Linux version 6.1.0\n...\n[    0.000000] Linux version 6.1.0\n')).toBe(2);
    expect(countBoots('Linux version in a command\n')).toBe(0);
    expect(snapshotNumber('@/.snapshots/12/snapshot')).toBe(12);
    expect(snapshotNumber('@/var')).toBeUndefined();
  });
});

describe('guest resets (QEMU runs with -no-reboot)', () => {
  const boot = '[    0.000000] Linux version 6.1.0-50-amd64 (debian)\n';
  it('tells a power-off from a reset or a panic by the kernel\'s last word', () => {
    expect(poweredOff(`${boot}...\n[  9.1] reboot: Power down\n`, 0)).toBe(true);
    expect(poweredOff(`${boot}[  9.1] reboot: System halted\n`, 0)).toBe(true);
    expect(poweredOff(`${boot}[  9.1] reboot: Restarting system\n`, 0)).toBe(false);
    expect(poweredOff(`${boot}[  3.0] Kernel panic - not syncing: Attempted to kill init!\n`, 0)).toBe(false);
    // Firmware that resets by itself (nothing from a kernel): a reset.
    expect(poweredOff('BdsDxe: loading Boot0001\n', 0)).toBe(false);
    // Only what came after `from` counts.
    const s = `${boot}[  9.1] reboot: Power down\n=== start ===\n${boot}[  9.1] reboot: Restarting system\n`;
    expect(poweredOff(s, s.indexOf('=== start'))).toBe(false);
  });

  it('finds the reset announcement of the running kernel only', () => {
    const first = `${boot}[  9.1] reboot: Restarting system\n`;
    expect(lastGoingDown(first, 0)).toBe(first.indexOf('reboot: Restarting'));
    // A new kernel started after it: nothing announced yet.
    expect(lastGoingDown(`${first}${boot}[  1.0] systemd[1]: started\n`, 0)).toBeUndefined();
    expect(lastGoingDown('', 0)).toBeUndefined();
  });
});
