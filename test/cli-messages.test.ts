/**
 * Messages a user meets on the command line (issue #19): sizes and update sources checked before
 * anything runs, commander's parse errors in tiu's `tiu: error: … [CODE]` form, --json errors as
 * one object on stdout, and the dry-run listing of a rewritten file as one line.
 */
import { describe, it, expect } from 'vitest';
import { cli } from './helpers/device.ts';
import { parseSize } from '../src/core/size.ts';
import { parseSource } from '../src/tiu/source.ts';
import { planApply } from '../src/tiu/apply/plan.ts';
import { planLines } from '../src/tiu/device/plan-lines.ts';
import { ERROR_CODES } from '../src/core/errors.ts';
import { comparePaths, type IndexEntry } from '../src/core/fileindex/types.ts';

const LINE = /^tiu: error: .+ \[[A-Z_]+\]$/;

describe('sizes', () => {
  it('parses 500k, 2M, 1.5G, 4096 and rejects the rest', () => {
    expect(parseSize('500k', 'x')).toBe(512_000);
    expect(parseSize('2M', 'x')).toBe(2 * 1024 ** 2);
    expect(parseSize('2MiB', 'x')).toBe(2 * 1024 ** 2);
    expect(parseSize('1.5G', 'x')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('4096', 'x')).toBe(4096);
    for (const bad of ['fast', '', '0', '-1k', '2T', '1e3', 'k', '99999999999999999999']) {
      expect(() => parseSize(bad, '--limit-rate'), bad).toThrow(/--limit-rate must be a size like 500k or 2M/);
    }
  });

  it('tiu update --limit-rate fast is a usage error even for a file source', async () => {
    const r = await cli(['update', '--root', '/tmp', '--limit-rate', 'fast', '--source', '/nonexistent.tiu']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim()).toBe("tiu: error: --limit-rate must be a size like 500k or 2M, got 'fast'; a number of bytes with an optional k, M or G suffix [USAGE]");
  });
});

describe('update sources', () => {
  it('classifies URLs and files; rejects other schemes', () => {
    expect(parseSource('https://u.example/os.tiu')).toEqual({ kind: 'url', url: 'https://u.example/os.tiu' });
    expect(parseSource('HTTP://u.example/os.tiu').kind).toBe('url');
    expect(parseSource('/srv/os-1.0.tiu')).toEqual({ kind: 'file', path: '/srv/os-1.0.tiu' });
    expect(parseSource('os:1.tiu')).toEqual({ kind: 'file', path: 'os:1.tiu' });
    for (const bad of ['ftp://u.example/os.tiu', 'file:///srv/os.tiu', 'sftp://h/x']) expect(() => parseSource(bad), bad).toThrow(/unsupported URL scheme/);
  });

  it('tiu update --source ftp://… says the scheme is unsupported (not "does not exist")', async () => {
    const r = await cli(['update', '--root', '/tmp', '--source', 'ftp://127.0.0.1/os.tiu']);
    expect(r.exitCode).toBe(ERROR_CODES.USAGE.exit);
    expect(r.stderr.trim()).toMatch(LINE);
    expect(r.stderr).toContain("unsupported URL scheme 'ftp' in update source ftp://127.0.0.1/os.tiu");
    expect(r.stderr).not.toMatch(/does not exist/);
  });
});

describe('command-line parse errors', () => {
  it('are one documented line with [USAGE] and exit 2', async () => {
    const r = await cli(['status', '--jsn']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trim()).toMatch(LINE);
    expect(r.stderr).toContain("tiu: error: unknown option '--jsn' (Did you mean --json?); run 'tiu status --help' for usage [USAGE]");
    const u = await cli(['frobnicate']);
    expect(u.exitCode).toBe(2);
    expect(u.stderr.trim()).toBe("tiu: error: unknown command 'frobnicate'; run 'tiu --help' for usage [USAGE]");
    const m = await cli(['pin']);
    expect(m.exitCode).toBe(2);
    expect(m.stderr.trim()).toBe("tiu: error: missing required argument 'n'; run 'tiu pin --help' for usage [USAGE]");
  });

  it('under --json also print the error object on stdout', async () => {
    const r = await cli(['status', '--json', '--bogus']);
    expect(r.exitCode).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'USAGE', message: "unknown option '--bogus'", hint: "run 'tiu status --help' for usage", exit: 2 } });
    const n = await cli(['info', '/nonexistent.tiu', '--keyring', '/nonexistent.pem', '--json']);
    expect(n.exitCode).toBe(21);
    const e = JSON.parse(n.stdout).error;
    expect(e).toMatchObject({ code: 'KEYRING_INVALID', exit: 21 });
    expect(typeof e.message).toBe('string');
    expect(n.stderr.trim()).toMatch(LINE);
  });
});

describe('exit codes', () => {
  it('stay out of sysexits 64-78 except 70 (EX_SOFTWARE, same meaning)', () => {
    for (const [code, { exit }] of Object.entries(ERROR_CODES)) if (exit >= 64 && exit <= 78) expect(code).toBe('INTERNAL');
    expect(ERROR_CODES.IO.exit).toBe(50);
    expect(ERROR_CODES.INTERRUPTED.exit).toBe(51);
  });
});

describe('the dry-run plan', () => {
  const file = (path: string, content: string, mode = 0o644): IndexEntry => ({ path, type: 'file', mode, uid: 0, gid: 0, mtime: 100, size: content.length, sha256: `sha-${content}` });
  const dir = (path: string): IndexEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 100 });
  const tree = (...e: IndexEntry[]) => [dir('.'), dir('etc'), ...e].sort((a, b) => comparePaths(a.path, b.path));
  const opts = { isExcluded: () => false, isProtected: () => false };

  it('shows a rewritten /etc/shadow as one rewrite line and a changed type as one replace line, not remove then write', () => {
    const actual = tree(file('etc/shadow', 'root:*:1::::::\n', 0o640), file('etc/gone', 'x'), dir('etc/d'));
    const target = tree(file('etc/shadow', 'root:*:1::::::\nsvc:!*:1::::::\n', 0o640), file('etc/new', 'y'), file('etc/d', 'now a file'));
    const plan = planApply(target, new Map(actual.map((e) => [e.path, e])), opts);
    expect(plan.removals.map((r) => r.path)).not.toContain('etc/shadow');
    expect(plan.removals.map((r) => r.path)).toContain('etc/d');
    const lines = planLines(plan, (p) => p);
    expect(lines.filter((l) => l.includes('/etc/shadow'))).toEqual(['rewrite /etc/shadow']);
    expect(lines).toContain('replace /etc/d (dir -> file)');
    expect(lines).toContain('remove  /etc/gone');
    expect(lines).toContain('write   /etc/new');
  });
});
