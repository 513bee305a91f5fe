/**
 * Pure parts of the squashfs wrapper: version parsing, argv building, pseudo-file rendering,
 * progress and listing parsers, failure classification. Inputs are outputs captured from
 * squashfs-tools 4.5.1 (and the 4.6 formats as documented in its sources).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { classifyMksquashfsFailure, droppedXattrPrefixes, ignoredPseudoWarnings } from '../src/squashfs/failure.ts';
import { decodeListedDevice, parsePermissions, parseUnsquashfsListing, type SquashfsListEntry } from '../src/squashfs/listing.ts';
import { buildMksquashfsArgs } from '../src/squashfs/options.ts';
import { monotonicProgress, parseProgressLine } from '../src/squashfs/progress.ts';
import { renderPseudoFile, type PseudoDefinition } from '../src/squashfs/pseudo.ts';
import { atLeast, parseSquashfsVersion } from '../src/squashfs/version.ts';
import { TiuError } from '../src/core/errors.ts';

const V451 = parseSquashfsVersion('mksquashfs version 4.5.1 (2022/03/17)\ncopyright (C) 2022 Phillip Lougher')!;
const V461 = parseSquashfsVersion('mksquashfs version 4.6.1 (2023/03/25)')!;

describe('version', () => {
  it('parses tool banners', () => {
    expect(V451).toEqual({ major: 4, minor: 5, patch: 1, raw: 'mksquashfs version 4.5.1 (2022/03/17)' });
    expect(parseSquashfsVersion('unsquashfs version 4.4-git (2019/08/29)')).toMatchObject({ major: 4, minor: 4, patch: 0 });
    expect(parseSquashfsVersion('no version here')).toBeUndefined();
    expect(atLeast(V451, '4.4')).toBe(true);
    expect(atLeast(V451, '4.5.1')).toBe(true);
    expect(atLeast(V451, '4.5.2')).toBe(false);
    expect(atLeast(V451, '4.6')).toBe(false);
    expect(atLeast(V461, '4.6')).toBe(true);
  });
});

describe('buildMksquashfsArgs', () => {
  const inp = { source: '/src', output: '/out.sqfs', mkfsTime: 123 };
  it('always passes -noappend, -no-recovery, -exit-on-error, -reproducible and -mkfs-time; -e comes last', () => {
    const a = buildMksquashfsArgs({ compression: 'zstd', level: 19, blockSize: 262144, processors: 2, excludes: ['var/*', '... *.pyc'], xattrs: false, sortFile: '/s' }, V451, { ...inp, pseudoFile: '/p' });
    expect(a).toEqual([
      '/src', '/out.sqfs', '-noappend', '-no-recovery', '-exit-on-error', '-reproducible',
      '-comp', 'zstd', '-Xcompression-level', '19', '-b', '262144', '-processors', '2',
      '-mkfs-time', '123', '-no-xattrs', '-sort', '/s', '-pf', '/p', '-quiet', '-no-progress',
      '-wildcards', '-e', 'var/*', '... *.pyc',
    ]);
  });
  it('chooses the progress flags by version', () => {
    const cb = () => {};
    expect(buildMksquashfsArgs({ compression: 'gzip', progress: cb }, V451, inp).slice(-2)).toEqual(['-quiet', '-progress']);
    const a46 = buildMksquashfsArgs({ compression: 'gzip', progress: cb }, V461, inp);
    expect(a46.at(-1)).toBe('-percentage');
    expect(a46).not.toContain('-progress');
    expect(buildMksquashfsArgs({ compression: 'gzip', allTime: 7 }, V451, inp)).toEqual(expect.arrayContaining(['-all-time', '7', '-xattrs']));
  });
});

describe('renderPseudoFile', () => {
  it('renders every type with explicit times and quoted names', () => {
    const defs: PseudoDefinition[] = [
      { type: 'dir', path: '/dev', mode: 0o755, uid: 0, gid: 0 },
      { type: 'chr', path: 'dev/null', mode: 0o666, uid: 0, gid: 0, major: 1, minor: 3, mtime: 9 },
      { type: 'blk', path: 'dev/sda', mode: 0o660, uid: 0, gid: 6, major: 8, minor: 0 },
      { type: 'fifo', path: 'dev/f"q\\', mode: 0o600, uid: 1, gid: 2 },
      { type: 'socket', path: '#comment-like', mode: 0o600, uid: 1, gid: 2 },
      { type: 'symlink', path: 'l', target: 'a b"c\\d', uid: 0, gid: 0 },
      { type: 'file', path: 'caf\xe9', source: '/host/with space' },
      { type: 'modify', path: 'etc', mode: 0o4711, uid: 3, gid: 4 },
      { type: 'modify', path: 'usr', mode: 0o755, uid: 0, gid: 0, mtime: 5 },
      { type: 'stdin', path: 'lib/index', mode: 0o644, uid: 0, gid: 0, mtime: 7 },
    ];
    const out = renderPseudoFile(defs, 1000);
    expect(out.toString('latin1')).toBe(
      [
        '"dev" D 1000 0755 0 0',
        '"dev/null" C 9 0666 0 0 1 3',
        '"dev/sda" B 1000 0660 0 6 8 0',
        '"dev/f\\"q\\\\" I 1000 0600 1 2 f',
        '"#comment-like" I 1000 0600 1 2 s',
        '"l" S 1000 0777 0 0 a b"c\\d',
        '"caf\xe9" l "/host/with space"',
        '"etc" m 4711 3 4',
        '"usr" M 5 0755 0 0',
        // The one command tiu writes is a constant: data never enters a shell string.
        '"lib/index" F 7 0644 0 0 exec cat',
        '',
      ].join('\n'),
    );
    // The non-UTF-8 name is one raw byte.
    expect(out.includes(Buffer.from([0x22, 0x63, 0x61, 0x66, 0xe9, 0x22]))).toBe(true);
  });

  it('refuses what mksquashfs cannot express or would drop', () => {
    const dir = (path: string, extra: Partial<{ mode: number; uid: number; mtime: number }> = {}): PseudoDefinition => ({ type: 'dir', path, mode: 0o755, uid: 0, gid: 0, ...extra });
    const bad: [PseudoDefinition[], RegExp][] = [
      [[dir('')], /root/],
      [[dir('/')], /root/],
      [[dir('a/../b')], /'\.\.'/],
      [[dir('a//b')], /empty/],
      [[dir('a\nb')], /newline/],
      [[dir('a\0b')], /newline or NUL/],
      [[dir('\u20ac')], /byte string/],
      [[dir('a'), dir('/a')], /twice/],
      [[dir('a', { mode: 0o10000 })], /mode/],
      [[dir('a', { uid: -1 })], /uid/],
      [[dir('a', { mtime: 2 ** 32 })], /mtime/],
      [[{ type: 'chr', path: 'c', mode: 0o600, uid: 0, gid: 0, major: 4096, minor: 0 }], /major/],
      [[{ type: 'symlink', path: 's', target: ' lead', uid: 0, gid: 0 }], /leading white space/],
      [[{ type: 'symlink', path: 's', target: 'trail\\', uid: 0, gid: 0 }], /trailing backslash/],
      [[{ type: 'symlink', path: 's', target: '', uid: 0, gid: 0 }], /cannot be expressed/],
      [[{ type: 'file', path: 'f', source: 'relative' }], /absolute/],
      [[{ type: 'modify', path: 'd', mode: 0o700, uid: 0, gid: 0, mtime: 1 }, dir('d/x')], /below it/],
      [[{ type: 'stdin', path: 'a', mode: 0o644, uid: 0, gid: 0 }, { type: 'stdin', path: 'b', mode: 0o644, uid: 0, gid: 0 }], /more than one file reads stdin/],
      [[{ type: 'stdin', path: 'a', mode: 0o20644, uid: 0, gid: 0 }], /mode/],
    ];
    for (const [defs, msg] of bad) {
      let err: unknown;
      try {
        renderPseudoFile(defs, 0);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(defs)).toBeInstanceOf(TiuError);
      expect((err as TiuError).code).toBe('INPUT_INVALID');
      expect((err as TiuError).message).toMatch(msg);
    }
  });
});

describe('progress', () => {
  it('reads the 4.5.1 bar and 4.6 percentages', () => {
    expect(parseProgressLine('[===============================================================\\] 690/690 100%')).toBe(1);
    expect(parseProgressLine('[=======/                 ] 345/690  50%')).toBe(0.5);
    expect(parseProgressLine('[|      ]    0/2563   0%')).toBe(0);
    expect(parseProgressLine('37')).toBe(0.37);
    expect(parseProgressLine('100')).toBe(1);
    expect(parseProgressLine('101')).toBeUndefined();
    expect(parseProgressLine('Number of inodes 31')).toBeUndefined();
    expect(parseProgressLine('Parallel mksquashfs: Using 2 processors')).toBeUndefined();
  });
  it('reports non-decreasing, deduplicated fractions', () => {
    const seen: number[] = [];
    const cb = monotonicProgress((f) => seen.push(f));
    for (const f of [0, 0.2, 0.1, 0.2, 0.5, 2, 1]) cb(f);
    expect(seen).toEqual([0, 0.2, 0.5, 1]);
  });
});

describe('listing parser', () => {
  it('parses permissions including setuid/setgid/sticky', () => {
    expect(parsePermissions('rwxr-xr-x')).toBe(0o755);
    expect(parsePermissions('rwsr-xr-x')).toBe(0o4755);
    expect(parsePermissions('rwSr--r--')).toBe(0o4644);
    expect(parsePermissions('rwxr-sr-x')).toBe(0o2755);
    expect(parsePermissions('rwxrwxrwt')).toBe(0o1777);
    expect(parsePermissions('rw-rw-rwT')).toBe(0o1666);
    expect(() => parsePermissions('rwxrwxrwz')).toThrow(TiuError);
  });

  it('undoes unsquashfs’s old-style device printing', () => {
    expect(decodeListedDevice(1, 3)).toEqual({ major: 1, minor: 3 });
    expect(decodeListedDevice(4355, 44)).toEqual({ major: 259, minor: 300 });
    expect(decodeListedDevice(-1, 255)).toEqual({ major: 4095, minor: 1048575 });
  });

  it('parses real 4.5.1 output with a newline, " -> " and a non-UTF-8 byte in names', () => {
    const M = 'tiu-list-0123abcd';
    const out = Buffer.from(
      [
        `drwxr-xr-x 0/0                     178 2026-11-23 12:35 ${M}`,
        `-rw-r--r-- 0/0                       0 2026-11-23 12:33 ${M}/bad\xff`,
        `crw-r--r-- 0/0                   1,  3 2026-11-23 12:33 ${M}/cdev`,
        `-rwsr-xr-x 1234/5678                 6 2001-01-01 00:00 ${M}/etc a`,
        `lrwxrwxrwx 0/0                       8 2026-11-23 12:33 ${M}/link -> ../etc/a`,
        `-rw-r--r-- 0/0                       0 2026-11-23 12:33 ${M}/nl`,
        // A forged entry inside a name: wrong marker, so it is part of the name.
        `-rw-r--r-- 0/0                       0 2026-11-23 12:33 squashfs-root/forged`,
        `lrwxrwxrwx 0/0                      14 2026-11-23 12:35 ${M}/sym -> link`,
        `name -> tar get`,
        `x -> y`,
        `brw-r--r-- 0/0                  -1,255 2026-11-23 12:38 ${M}/b`,
        '',
      ].join('\n'),
      'latin1',
    );
    const l = parseUnsquashfsListing(out, M);
    expect(l.map((e) => e.path)).toEqual(['.', 'bad\xff', 'cdev', 'etc a', 'link', 'nl\n-rw-r--r-- 0/0                       0 2026-11-23 12:33 squashfs-root/forged', 'sym -> link\nname', 'b']);
    expect(l[0]).toEqual({ path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 178, mtime: Date.UTC(2026, 10, 23, 12, 35) / 1000, mtimePrecision: 60 });
    expect(l[2]!.rdev).toEqual({ major: 1, minor: 3 });
    expect(l[3]).toMatchObject({ mode: 0o4755, uid: 1234, gid: 5678, size: 6, mtime: Date.UTC(2001, 0, 1) / 1000 });
    expect(l[4]).toMatchObject({ type: 'symlink', target: '../etc/a' });
    expect(l[6]).toMatchObject({ type: 'symlink', target: 'tar get\nx -> y', size: 14 });
    expect(l[7]).toMatchObject({ type: 'blk', rdev: { major: 4095, minor: 1048575 } });
  });

  it('reads 4.6 -full-precision seconds', () => {
    const l = parseUnsquashfsListing(Buffer.from('drwxr-xr-x 0/0 3 2001-09-09 01:46:40 M\n-rw-r--r-- 0/0 1 2001-09-09 01:46:57 M/a\n'), 'M');
    expect(l.map((e) => [e.mtime, e.mtimePrecision])).toEqual([[1_000_000_000, 1], [1_000_000_017, 1]]);
  });

  it('rejects malformed output', () => {
    const bad = ['', 'garbage\n', 'drwxr-xr-x 0/0 3 2001-09-09 01:46 M', 'lrwxrwxrwx 0/0 3 2001-09-09 01:46 M\n', 'drwxr-xr-x 0/0 3 2001-09-09 01:46 M\nlrwxrwxrwx 0/0 30 2001-09-09 01:46 M/x -> y\n'];
    for (const text of bad) expect(() => parseUnsquashfsListing(Buffer.from(text), 'M'), JSON.stringify(text)).toThrow(TiuError);
  });

  /** Prints entries the way unsquashfs print_filename() does (numeric, TOTALCHARS = 25). */
  function render(entries: SquashfsListEntry[], marker: string): Buffer {
    const perm = (m: number, t: string) => {
      const c = (bit: number, ch: string) => (m & bit ? ch : '-');
      const x = (exec: number, special: number, on: string, off: string) => (m & special ? (m & exec ? on : off) : m & exec ? 'x' : '-');
      const tc = { file: '-', dir: 'd', symlink: 'l', chr: 'c', blk: 'b', fifo: 'p', socket: 's' }[t]!;
      return tc + c(0o400, 'r') + c(0o200, 'w') + x(0o100, 0o4000, 's', 'S') + c(0o40, 'r') + c(0o20, 'w') + x(0o10, 0o2000, 's', 'S') + c(0o4, 'r') + c(0o2, 'w') + x(0o1, 0o1000, 't', 'T');
    };
    const parts = entries.map((e) => {
      const owner = `${e.uid}/${e.gid}`;
      const pad = Math.max(0, 25 - String(e.uid).length - String(e.gid).length);
      const sizeField = e.rdev ? `${' '.repeat(Math.max(0, pad - 7)) || ' '}${String(e.rdev.major).padStart(3)},${String(e.rdev.minor).padStart(3)}` : String(e.size).padStart(pad);
      const d = new Date(e.mtime * 1000).toISOString();
      const name = e.path === '.' ? marker : `${marker}/${e.path}`;
      return `${perm(e.mode, e.type)} ${owner} ${sizeField} ${d.slice(0, 10)} ${d.slice(11, 16)} ${name}${e.target !== undefined ? ` -> ${e.target}` : ''}\n`;
    });
    return Buffer.from(parts.join(''), 'latin1');
  }

  it('round-trips arbitrary names, targets and attributes (property)', () => {
    const byteName = fc
      .uint8Array({ minLength: 1, maxLength: 12 })
      .map((a) => Buffer.from(a.map((x) => (x === 0 || x === 0x2f ? 0x41 : x))).toString('latin1'))
      .filter((n) => n !== '.' && n !== '..');
    const entry = fc.record({
      names: fc.array(byteName, { minLength: 1, maxLength: 3 }),
      type: fc.constantFrom('file', 'dir', 'symlink', 'chr', 'blk', 'fifo', 'socket'),
      mode: fc.nat({ max: 0o7777 }),
      uid: fc.nat({ max: 2 ** 32 - 1 }),
      gid: fc.nat({ max: 2 ** 32 - 1 }),
      size: fc.nat({ max: 2 ** 40 }),
      minute: fc.nat({ max: Math.floor((2 ** 32 - 1) / 60) }),
      target: byteName,
      major: fc.nat({ max: 255 }),
      minor: fc.nat({ max: 255 }),
    });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 6 }), fc.stringMatching(/^[0-9a-f]{8}$/), (raw, hex) => {
        const marker = `tiu-list-${hex}`;
        const root: SquashfsListEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 3, mtime: 0, mtimePrecision: 60 };
        const entries: SquashfsListEntry[] = [root];
        for (const r of raw) {
          const type = r.type as SquashfsListEntry['type'];
          const e: SquashfsListEntry = { path: r.names.join('/'), type, mode: r.mode, uid: r.uid, gid: r.gid, size: 0, mtime: r.minute * 60, mtimePrecision: 60 };
          if (type === 'symlink') Object.assign(e, { target: r.target, size: r.target.length });
          else if (type === 'chr' || type === 'blk') e.rdev = { major: r.major, minor: r.minor };
          else if (type === 'file' || type === 'dir') e.size = r.size;
          entries.push(e);
        }
        expect(parseUnsquashfsListing(render(entries, marker), marker)).toEqual(entries);
      }),
      { numRuns: 500 },
    );
  });
});

describe('failure classification (4.5.1 messages)', () => {
  const ctx = (stderr: string, exitCode = 1) => classifyMksquashfsFailure({ source: '/src', output: '/out/img', command: 'mksquashfs …', exitCode, stderr });
  it('maps each known message to a code naming the path', () => {
    const cases: [string, string, RegExp][] = [
      ['Write failed because No space left on device\nFATAL ERROR: Failed to write to output filesystem', 'NO_SPACE', /\/out\/img/],
      ['Cannot stat source directory "/nope" because No such file or directory', 'INPUT_NOT_FOUND', /\/nope/],
      ['Could not create destination file: No such file or directory', 'INPUT_NOT_FOUND', /\/out\/img/],
      ['Could not create destination file: Permission denied', 'PERMISSION', /\/out\/img/],
      ['Destination not block device or regular file', 'INPUT_INVALID', /\/out\/img/],
      ['Failed to read file /src/etc/shadow', 'TREE_INVALID', /\/src\/etc\/shadow/],
      ['Pseudo file "existing" exists in source filesystem "src/existing".', 'TREE_INVALID', /existing/],
      ['Pseudo modify file "nope" does not exist in source filesystem.', 'TREE_INVALID', /nope/],
      ['FATAL ERROR: Something odd', 'TOOL_FAILED', /Something odd/],
    ];
    for (const [stderr, code, msg] of cases) {
      const e = ctx(stderr);
      expect([e.code, stderr]).toEqual([code, stderr]);
      expect(e.message).toMatch(msg);
    }
  });
  it('finds silently ignored pseudo definitions and dropped xattrs in successful runs', () => {
    expect(ignoredPseudoWarnings('d already exists as a non directory..  Ignoring d/x!\nUnrecognised xattr prefix system.posix_acl_access\n')).toEqual(['d already exists as a non directory..  Ignoring d/x!']);
    expect(ignoredPseudoWarnings('Unrecognised xattr prefix system.posix_acl_default\n')).toEqual([]);
    expect(droppedXattrPrefixes('Unrecognised xattr prefix system.posix_acl_access\nUnrecognised xattr prefix system.posix_acl_default\nUnrecognised xattr prefix system.posix_acl_access\n')).toEqual(['system.posix_acl_access', 'system.posix_acl_default']);
  });
});
