/**
 * Journal-friendly logs (issue #19): when stderr is the journal's stream — JOURNAL_STREAM names
 * stderr's "dev:ino", as systemd.exec(5) documents — every stderr line carries its syslog
 * priority prefix, so `journalctl -p` filters. The CLI is spawned with stderr on a file whose
 * dev:ino is put in JOURNAL_STREAM (journald's socket is only another file to this check).
 */
import { describe, it, expect } from 'vitest';
import { open, readFile, stat } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { TIU } from './helpers/device.ts';
import { tempDir } from './helpers/env.ts';
import { createLogger, isJournalStream, withPriority } from '../src/core/log.ts';

async function runWithStderrFile(file: string, args: string[], journalStream: (st: { dev: number; ino: number }) => string) {
  const fh = await open(file, 'w');
  try {
    const st = await fh.stat();
    // The open file itself becomes the child's fd 2 (no pipe in between, as with journald's socket).
    const child = spawn(process.execPath, [TIU, ...args], { stdio: ['ignore', 'ignore', fh.fd], env: { ...process.env, JOURNAL_STREAM: journalStream(st) } });
    const [exitCode] = (await once(child, 'exit')) as [number];
    return { exitCode, stderr: await readFile(file, 'utf8') };
  } finally {
    await fh.close();
  }
}

describe('journal priorities', () => {
  it('prefixes every stderr line with <3> error … <7> debug when JOURNAL_STREAM is stderr', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'stderr');
    const r = await runWithStderrFile(file, ['status', '--root', join(d.path, 'nonexistent'), '--debug'], (st) => `${st.dev}:${st.ino}`);
    expect(r.exitCode).toBe(3);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.length).toBeGreaterThan(2);
    for (const l of lines) expect(l, l).toMatch(/^<[3-7]>/);
    expect(lines).toContain(`<3>tiu: error: ${join(d.path, 'nonexistent')} does not exist; check the path given with --root [INPUT_NOT_FOUND]`);
    expect(lines.some((l) => /^<7>tiu: debug: /.test(l))).toBe(true);
    // The --debug stack trace: every line of it at debug priority.
    expect(lines.filter((l) => /^<7>\s+at /.test(l)).length).toBeGreaterThan(0);
  });

  it('leaves lines alone when JOURNAL_STREAM names another file (inherited, stderr redirected)', async () => {
    await using d = await tempDir();
    const other = await stat(d.path);
    const r = await runWithStderrFile(join(d.path, 'stderr'), ['status', '--root', join(d.path, 'nonexistent')], () => `${other.dev}:${other.ino}`);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toMatch(/^tiu: error: .* \[INPUT_NOT_FOUND\]\n$/);
  });

  it('maps each level to its syslog priority', () => {
    const lines: string[] = [];
    const log = createLogger('debug', (l, lv) => lines.push(withPriority(lv, l)));
    log.error('e');
    log.warn('w');
    log.info('i');
    log.debug('d');
    expect(lines).toEqual(['<3>tiu: error: e', '<4>tiu: warning: w', '<6>i', '<7>tiu: debug: d']);
    expect(withPriority('info', 'a\nb')).toBe('<6>a\n<6>b');
    const st = () => ({ dev: 2049, ino: 77 });
    expect(isJournalStream('2049:77', 2, st)).toBe(true);
    for (const v of [undefined, '', '2049:78', '2049', 'x:77', '2049:77:1']) expect(isJournalStream(v, 2, st), String(v)).toBe(false);
  });
});
