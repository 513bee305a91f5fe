/**
 * The index format, its strict parser and the index diff: pure logic, property-tested with
 * hostile names (spaces, newlines, leading dashes, non-UTF-8 bytes, 255-byte names).
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TiuError } from '../src/core/errors.ts';
import { comparePaths, type EntryType, type IndexEntry } from '../src/core/fileindex/types.ts';
import { INDEX_HEADER, MAX_ENTRIES, MAX_LINE_BYTES, parseIndexLine, serializeEntry } from '../src/core/fileindex/format.ts';
import { indexDigest, loadIndex, serializeIndex } from '../src/core/fileindex/io.ts';
import { diffIndexStreams, diffIndexes, summarizeChanges, type IndexChange } from '../src/core/fileindex/diff.ts';
import { utf8Bytes } from '../src/core/fileindex/text.ts';
import { parseGetfattrDump } from '../src/core/fileindex/xattrs.ts';

// ---------- generators ----------

const HOSTILE = [
  'with space', 'new\nline', '-rf', '--', 'back\\slash', '\xff', '\xfe\xff', 'x'.repeat(255), utf8Bytes('é'), utf8Bytes('\u2028'),
  '\x7f', utf8Bytes('\ufeffbom'), '"q"', 'a=b', '\x01', '\t', '.hidden', '..x', '...', ' ', '\\012', utf8Bytes('\u0085'),
  utf8Bytes('日本'), '\xc3', '\xed\xa0\x80', utf8Bytes('\u{1F600}'), '{', '}', ':', ',',
];
const validComponent = (c: string) => c.length > 0 && c.length <= 255 && c !== '.' && c !== '..' && !c.includes('/') && !c.includes('\0');
const component = fc.oneof(
  fc.constantFrom(...HOSTILE),
  fc.uint8Array({ minLength: 1, maxLength: 12 }).map((b) => Buffer.from(b).toString('latin1')).filter(validComponent),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 6 }).map(utf8Bytes).filter(validComponent),
  fc.constantFrom('a', 'b', 'c'),
);
const bytesArb = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((b) => Buffer.from(b).toString('latin1'));
const xattrName = fc.tuple(fc.constantFrom('user', 'trusted', 'security', 'system'), fc.oneof(bytesArb(1, 20), fc.constantFrom('capability', 'posix_acl_access', 'a=b', 'new\nline', '\xff')))
  .map(([ns, rest]) => `${ns}.${rest}`)
  .filter((n) => !n.includes('\0'));
const xattrsArb = fc.option(fc.dictionary(xattrName, fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b).toString('base64')), { minKeys: 1, maxKeys: 4 }), { nil: undefined });
const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));

interface Raw {
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  sha256: string;
  sparse: boolean;
  target: string;
  rdev: { major: number; minor: number };
  xattrs: Record<string, string> | undefined;
  /** Become a hardlink to an earlier file (index into the files so far), if there is one. */
  link: number | undefined;
}

const rawArb = (paths: fc.Arbitrary<string>, small = false): fc.Arbitrary<Raw> =>
  fc.record({
    path: paths,
    type: small
      ? fc.constantFrom<EntryType>('file', 'file', 'file', 'file', 'file', 'file', 'dir', 'symlink', 'chr', 'fifo')
      : fc.constantFrom<EntryType>('file', 'file', 'file', 'dir', 'symlink', 'chr', 'blk', 'fifo', 'socket'),
    mode: small ? fc.constantFrom(0o644, 0o755) : fc.integer({ min: 0, max: 0o7777 }),
    uid: small ? fc.constantFrom(0, 1234) : fc.integer({ min: 0, max: 0xfffffffe }),
    gid: small ? fc.constantFrom(0, 5678) : fc.integer({ min: 0, max: 0xfffffffe }),
    mtime: small ? fc.constantFrom(1700000000, 1700000001) : fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    size: small ? fc.constantFrom(10, 10, 10, 0) : fc.nat(),
    sha256: small ? fc.constantFrom('a'.repeat(64), 'a'.repeat(64), 'a'.repeat(64), 'b'.repeat(64)) : hex64,
    sparse: fc.boolean(),
    target: small ? fc.constantFrom('t1', '../t2') : fc.oneof(bytesArb(1, 40).filter((t) => !t.includes('\0')), fc.constantFrom(...HOSTILE)),
    rdev: small ? fc.constantFrom<Raw['rdev']>({ major: 1, minor: 3 }, { major: 259, minor: 70000 }) : fc.record({ major: fc.integer({ min: 0, max: 0xffffffff }), minor: fc.integer({ min: 0, max: 0xffffffff }) }),
    xattrs: small ? fc.constantFrom<Raw['xattrs']>(undefined, { 'user.a': 'MQ==' }, { 'security.capability': 'AQAAAg==' }) : xattrsArb,
    link: fc.option(fc.nat(), { nil: undefined }),
  });

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

/** Turns random records into a valid index: ancestors become directories, tree order, hardlinks copy their leader. */
function buildIndex(raws: Raw[]): IndexEntry[] {
  const byPath = new Map<string, Raw>();
  for (const r of raws) if (!byPath.has(r.path)) byPath.set(r.path, r);
  const dirs = new Set<string>(['.']);
  for (const p of byPath.keys()) for (let q = parentOf(p); q !== '.'; q = parentOf(q)) dirs.add(q);
  const paths = [...new Set([...byPath.keys(), ...dirs])].sort(comparePaths);
  const leaders: IndexEntry[] = [];
  return paths.map((path) => {
    const r = byPath.get(path);
    const type: EntryType = dirs.has(path) || !r ? 'dir' : r.type;
    const e: IndexEntry = { path, type, mode: r?.mode ?? 0o755, uid: r?.uid ?? 0, gid: r?.gid ?? 0, mtime: r?.mtime ?? 0 };
    if (r && r.xattrs) e.xattrs = { ...r.xattrs };
    if (type === 'file') {
      if (r!.link !== undefined && leaders.length > 0) {
        const l = leaders[r!.link % leaders.length]!;
        Object.assign(e, { mode: l.mode, uid: l.uid, gid: l.gid, mtime: l.mtime, size: l.size, sha256: l.sha256, hardlink: l.path });
        if (l.sparse) e.sparse = true;
        if (l.xattrs) e.xattrs = { ...l.xattrs };
        else delete e.xattrs;
      } else {
        e.size = r!.size;
        e.sha256 = r!.sha256;
        if (r!.sparse) e.sparse = true;
        leaders.push(e);
      }
    }
    if (type === 'symlink') e.target = r!.target;
    if (type === 'chr' || type === 'blk') e.rdev = { ...r!.rdev };
    return e;
  });
}

const pathArb = fc.array(component, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/'));
const indexArb = fc.array(rawArb(pathArb), { maxLength: 30 }).map(buildIndex);

function textOf(entries: IndexEntry[]): string {
  return [...serializeIndex(entries)].join('');
}

async function* chunked(buf: Buffer, cuts: number[]): AsyncGenerator<Buffer> {
  let pos = 0;
  for (const c of cuts) {
    const end = Math.min(buf.length, pos + 1 + c);
    yield buf.subarray(pos, end);
    pos = end;
  }
  if (pos < buf.length) yield buf.subarray(pos);
}

async function readAll(text: string | Buffer, options = {}): Promise<IndexEntry[]> {
  const buf = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  return loadIndex(chunked(buf, []), options);
}

async function rejection(p: Promise<unknown>): Promise<TiuError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TiuError);
    return err as TiuError;
  }
  throw new Error('expected a rejection');
}

function syncError(f: () => unknown): TiuError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(TiuError);
    return err as TiuError;
  }
  throw new Error('expected an error');
}

const root: IndexEntry = { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1700000000 };
const file = (path: string, extra: Partial<IndexEntry> = {}): IndexEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1700000000, size: 3, sha256: 'a'.repeat(64), ...extra });
const dir = (path: string, extra: Partial<IndexEntry> = {}): IndexEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1700000000, ...extra });

// ---------- format ----------

describe('index format', () => {
  it('writes the documented canonical lines', () => {
    const x = { 'user.z': 'MQ==', 'security.capability': 'AQAAAg==', 'user.\xff': 'Mg==' };
    const entries: IndexEntry[] = [
      root,
      file('a b', { xattrs: x, sparse: true }),
      { path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: -1, target: '\xff' },
      file('new\nline', { hardlink: 'a b', xattrs: x, sparse: true }),
      { path: 'null', type: 'chr', mode: 0o666, uid: 0, gid: 0, mtime: 0, rdev: { major: 1, minor: 3 } },
      dir(utf8Bytes('é')),
    ];
    const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
    const sha = 'a'.repeat(64);
    const xs = `"xattrs":{"security.capability":"AQAAAg==","user.z":"MQ=="},"xattrsB64":{"${b64('user.\xff')}":"Mg=="}`;
    expect(textOf(entries).split('\n')).toEqual([
      INDEX_HEADER,
      `{"path":".","type":"dir","mode":493,"uid":0,"gid":0,"mtime":1700000000}`,
      `{"path":"a b","type":"file","mode":420,"uid":0,"gid":0,"mtime":1700000000,"size":3,"sha256":"${sha}","sparse":true,${xs}}`,
      `{"path":"l","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":-1,"targetB64":"/w=="}`,
      `{"pathB64":"${b64('new\nline')}","type":"file","mode":420,"uid":0,"gid":0,"mtime":1700000000,"size":3,"sha256":"${sha}","sparse":true,"hardlink":"a b",${xs}}`,
      `{"path":"null","type":"chr","mode":438,"uid":0,"gid":0,"mtime":0,"rdev":{"major":1,"minor":3}}`,
      `{"path":"é","type":"dir","mode":493,"uid":0,"gid":0,"mtime":1700000000}`,
      '',
    ]);
  });

  it('round-trips random indexes with hostile names through serialize -> chunked read', async () => {
    await fc.assert(
      fc.asyncProperty(indexArb, fc.array(fc.nat({ max: 300 }), { maxLength: 20 }), async (entries, cuts) => {
        const text = textOf(entries);
        // Every line is one line of JSON: no raw control characters can break it.
        const lines = text.split('\n');
        expect(lines.pop()).toBe('');
        for (const l of lines) {
          expect(l).not.toMatch(/[\x00-\x1f\x7f]/);
          JSON.parse(l);
        }
        const buf = Buffer.from(text, 'utf8');
        const digest = createHash('sha256').update(buf).digest('hex');
        expect(indexDigest(entries)).toBe(digest);
        const back = await loadIndex(chunked(buf, cuts), { sha256: digest });
        expect(back).toEqual(entries);
        for (let i = 1; i < lines.length; i++) expect(parseIndexLine(lines[i]!, i + 1)).toEqual(entries[i - 1]);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws anything but TiuError on garbage lines', () => {
    const valid = serializeEntry(file('a', { xattrs: { 'user.x': 'MQ==' } }));
    const mutated = fc.tuple(fc.nat({ max: valid.length }), fc.nat({ max: valid.length }), fc.string({ maxLength: 3, unit: 'binary' }))
      .map(([a, b, ins]) => valid.slice(0, Math.min(a, b)) + ins + valid.slice(Math.max(a, b)));
    const garbage = fc.oneof(
      fc.string({ unit: 'binary' }),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.dictionary(fc.constantFrom('path', 'pathB64', 'type', 'mode', 'uid', 'gid', 'mtime', 'size', 'sha256', 'sparse', 'hardlink', 'target', 'targetB64', 'rdev', 'xattrs', 'xattrsB64', '__proto__', 'constructor'), fc.jsonValue()).map((o) => JSON.stringify(o)),
      mutated,
    );
    fc.assert(
      fc.property(garbage, (line) => {
        try {
          const e = parseIndexLine(line, 7);
          // Whatever is accepted is exactly canonical.
          expect(serializeEntry(e)).toBe(line);
        } catch (err) {
          expect(err).toBeInstanceOf(TiuError);
          expect((err as TiuError).code).toBe('ARCHIVE_INDEX');
          expect((err as TiuError).message).toMatch(/^index line 7: /);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws anything but TiuError on garbage files', async () => {
    const good = Buffer.from(textOf([root, dir('a'), file('a/b'), file('c', { hardlink: 'a/b' })]), 'utf8');
    const files = fc.oneof(
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
      fc.tuple(fc.nat({ max: good.length }), fc.uint8Array({ maxLength: 4 })).map(([at, ins]) => Buffer.concat([good.subarray(0, at), Buffer.from(ins), good.subarray(at + 1)])),
    );
    await fc.assert(
      fc.asyncProperty(files, async (buf) => {
        try {
          await readAll(buf);
        } catch (err) {
          expect(err).toBeInstanceOf(TiuError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  const line = (o: Record<string, unknown>) => JSON.stringify(o);
  const base = { path: 'a', type: 'file', mode: 420, uid: 0, gid: 0, mtime: 1, size: 3, sha256: 'a'.repeat(64) };
  const badLines: Array<[string, string, RegExp]> = [
    ['unknown key', line({ ...base, owner: 'root' }), /unknown key "owner"/],
    ['__proto__ key', `{"__proto__":{},${line(base).slice(1)}`, /unknown key "__proto__"/],
    ['mode as string', line({ ...base, mode: '420' }), /mode must be/],
    ['mode too large', line({ ...base, mode: 0o10000 }), /mode must be/],
    ['negative uid', line({ ...base, uid: -1 }), /uid and gid/],
    ['fractional mtime', line({ ...base, mtime: 1.5 }), /mtime must be an integer/],
    ['absolute path', line({ ...base, path: '/etc/passwd' }), /path is absolute/],
    ['dot-dot', line({ ...base, path: 'a/../../etc' }), /'\.\.' component/],
    ['dot component', line({ ...base, path: 'a/./b' }), /'\.' component/],
    ['dot-dot alone', line({ ...base, path: '..' }), /'\.\.' component/],
    ['dot-dot last', line({ ...base, path: 'a/..' }), /'\.\.' component/],
    ['dot last', line({ ...base, path: 'a/.' }), /'\.' component/],
    ['leading double slash', line({ ...base, path: 'a/b//' }), /empty component/],
    ['trailing slash', line({ ...base, path: 'a/' }), /empty component/],
    ['double slash', line({ ...base, path: 'a//b' }), /empty component/],
    ['NUL via base64', line({ ...{ pathB64: Buffer.from('a\0b').toString('base64') }, ...{ ...base, path: undefined } }), /NUL/],
    ['256-byte component', line({ ...base, path: 'x'.repeat(256) }), /longer than 255/],
    ['empty path', line({ ...base, path: '' }), /empty path/],
    ['unknown type', line({ ...base, type: 'door' }), /unknown type/],
    ['file without sha256', line({ ...base, sha256: undefined }), /without sha256/],
    ['uppercase sha256', line({ ...base, sha256: 'A'.repeat(64) }), /64 lowercase hex/],
    ['size on a dir', line({ ...base, type: 'dir', sha256: undefined }), /size on a dir/],
    ['symlink without target', line({ path: 'l', type: 'symlink', mode: 511, uid: 0, gid: 0, mtime: 1 }), /without target/],
    ['device without rdev', line({ path: 'd', type: 'chr', mode: 438, uid: 0, gid: 0, mtime: 1 }), /without rdev/],
    ['rdev extra key', line({ path: 'd', type: 'chr', mode: 438, uid: 0, gid: 0, mtime: 1, rdev: { major: 1, minor: 3, x: 1 } }), /rdev must be/],
    ['xattr without namespace', line({ ...base, xattrs: { foo: 'MQ==' } }), /xattr name/],
    ['xattr unknown namespace', line({ ...base, xattrs: { 'os2.x': 'MQ==' } }), /xattr name/],
    ['xattr empty name', line({ ...base, xattrs: { 'user.': 'MQ==' } }), /xattr name/],
    ['xattr value not base64', line({ ...base, xattrs: { 'user.a': 'not base64!' } }), /canonical base64/],
    ['xattr value non-canonical base64', line({ ...base, xattrs: { 'user.a': 'MR==' } }), /canonical base64/],
    ['empty xattrs', line({ ...base, xattrs: {} }), /empty xattrs/],
    ['both path forms', line({ ...base, pathB64: 'YQ==' }), /both path and pathB64/],
    ['base64 path that could be text', line({ pathB64: 'YQ==', ...{ ...base, path: undefined } }), /canonical form/],
    ['text path with a control char', line({ ...base, path: 'a\nb' }), /canonical form/],
    ['key order', line({ type: 'file', path: 'a', mode: 420, uid: 0, gid: 0, mtime: 1, size: 3, sha256: 'a'.repeat(64) }), /canonical form/],
    ['whitespace', line(base).replace(',', ', '), /canonical form/],
    ['number spelling', line(base).replace('"mtime":1', '"mtime":1.0'), /canonical form/],
    ['escaped char', line(base).replace('"path":"a"', '"path":"\\u0061"'), /canonical form/],
    ['duplicate key', line(base).replace('"mode":420', '"mode":420,"mode":420'), /canonical form/],
    ['sparse false', line({ ...base, sparse: false }), /sparse must be true/],
    ['hardlink on a symlink', line({ path: 'l', type: 'symlink', mode: 511, uid: 0, gid: 0, mtime: 1, hardlink: 'a', target: 'x' }), /hardlink on a symlink/],
    ['not an object', '[1,2]', /not a JSON object/],
    ['not JSON', '{"path":', /not valid JSON/],
  ];
  for (const [name, text, msg] of badLines) {
    it(`rejects a line with ${name}`, () => {
      const err = syncError(() => parseIndexLine(text, 5));
      expect(err.code).toBe('ARCHIVE_INDEX');
      expect(err.message).toMatch(/^index line 5: /);
      expect(err.message).toMatch(msg);
    });
  }

  const header = INDEX_HEADER + '\n';
  const L = (...es: IndexEntry[]) => es.map((e) => serializeEntry(e) + '\n').join('');
  const badFiles: Array<[string, string, RegExp]> = [
    ['no header', L(root), /index line 1: not a tiu index header/],
    ['a newer version', '{"format":"tiu-index","version":2}\n' + L(root), /unsupported index version 2/],
    ['an empty file', '', /the index is empty/],
    ['only the header', header, /no entries/],
    ['no root first', header + L(dir('a')), /index line 2: the first entry must be the root/],
    ['a duplicate path', header + L(root, file('a'), file('a')), /index line 4: duplicate path "a"/],
    ['entries out of order', header + L(root, file('b'), file('a')), /index line 4: "a" is out of tree order/],
    ['a child before its parent', header + L(root, file('a/b')), /index line 3: the parent of "a\/b" is not listed/],
    ['a child of a file', header + L(root, file('a'), file('a/b')), /index line 4: the parent of "a\/b"/],
    ['a child after its parent was left', header + L(root, dir('a'), file('b'), file('b/c')), /the parent of "b\/c"/],
    ['a hardlink to a later path', header + L(root, file('a', { hardlink: 'b' }), file('b')), /index line 3: "a": hardlink to "b", which is not an earlier regular file/],
    ['a hardlink to a directory', header + L(root, dir('a'), file('b', { hardlink: 'a' })), /hardlink to "a", which is not an earlier regular file/],
    ['a hardlink to a hardlink', header + L(root, file('a'), file('b', { hardlink: 'a' }), file('c', { hardlink: 'b' })), /index line 5: "c": hardlink to "b"/],
    ['a hardlink to a missing path', header + L(root, file('b', { hardlink: 'a' })), /hardlink to "a"/],
    ['a hardlink with other attributes', header + L(root, file('a'), file('b', { hardlink: 'a', mode: 0o600 })), /attributes differ from its hardlink/],
    ['a hardlink to itself', header + L(root, file('a', { hardlink: 'a' })), /hardlink to "a"/],
    ['a root that is not a directory', header + L(file('.')), /root must be a directory/],
    ['no final newline', header + L(root).slice(0, -1), /index line 2: no newline at the end/],
    ['CRLF line ends', header.replace('\n', '\r\n') + L(root), /index line 1: not a tiu index header/],
    ['an empty line', header + L(root) + '\n', /index line 3: not valid JSON/],
  ];
  for (const [name, text, msg] of badFiles) {
    it(`rejects an index with ${name}`, async () => {
      const err = await rejection(readAll(text));
      expect(err.code).toBe('ARCHIVE_INDEX');
      expect(err.message).toMatch(msg);
    });
  }

  it('rejects invalid UTF-8 and says which line', async () => {
    const buf = Buffer.concat([Buffer.from(header + L(root)), Buffer.from('{"path":"\xff"}\n', 'latin1')]);
    expect((await rejection(readAll(buf))).message).toMatch(/index line 3: not valid UTF-8/);
  });

  it('reports the first bad line of a chunk, whatever is wrong further on', async () => {
    // (the whole lines of a chunk are decoded at once; bad UTF-8 later in it must not hide an
    // earlier error, nor be named with another line's number)
    const buf = Buffer.concat([Buffer.from(header + L(root) + '{"path":\n'), Buffer.from('{"path":"\xff"}\n', 'latin1')]);
    expect((await rejection(readAll(buf))).message).toMatch(/index line 3: not valid JSON/);
    const bad = Buffer.concat([Buffer.from(header + L(root, file('a'))), Buffer.from('{"path":"\xff"}\n', 'latin1'), Buffer.from(L(file('b')))]);
    expect((await rejection(readAll(bad))).message).toMatch(/index line 4: not valid UTF-8/);
    // Cut anywhere, the same line is named.
    for (let cut = 1; cut < bad.length; cut += 7) {
      expect((await rejection(loadIndex(chunked(bad, [cut - 1])))).message).toMatch(/index line 4: not valid UTF-8/);
    }
  });

  it('measures a line in bytes, not characters', async () => {
    // 400,000 three-byte characters: 1.2 MB of UTF-8 in fewer than 1,048,576 UTF-16 units.
    const wide = header + '€'.repeat(400_000) + '\n';
    expect((await rejection(readAll(wide))).message).toMatch(/index line 2: longer than 1048576 bytes/);
    expect((await rejection(loadIndex(chunked(Buffer.from(wide), [100, 5000])))).message).toMatch(/index line 2: longer than 1048576 bytes/);
  });

  it('rejects a digest mismatch only after reading everything', async () => {
    const text = header + L(root, file('a'));
    const err = await rejection(readAll(text, { sha256: 'f'.repeat(64) }));
    expect(err.message).toMatch(/index digest mismatch/);
    expect(await readAll(text, { sha256: createHash('sha256').update(text).digest('hex') })).toHaveLength(2);
  });

  it('rejects a line over 1 MiB without buffering the rest of the stream', async () => {
    let chunks = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      yield Buffer.from(header);
      for (;;) {
        chunks++;
        yield Buffer.alloc(64 * 1024, 0x61);
      }
    }
    const err = await rejection(loadIndex(endless()));
    expect(err.message).toMatch(/index line 2: longer than 1048576 bytes/);
    expect(chunks).toBeLessThanOrEqual(MAX_LINE_BYTES / (64 * 1024) + 1);
    // Exactly at the limit is a (then invalid) line, one more byte is too long.
    const atLimit = header + 'x'.repeat(MAX_LINE_BYTES) + '\n';
    expect((await rejection(readAll(atLimit))).message).toMatch(/index line 2: not valid JSON/);
    const over = header + 'x'.repeat(MAX_LINE_BYTES + 1) + '\n';
    expect((await rejection(readAll(over))).message).toMatch(/index line 2: longer than/);
  });

  it('enforces the entry limit (lowered here) and never raises it above 10 million', async () => {
    const text = header + L(root, file('a'), file('b'), file('c'));
    expect(await readAll(text, { maxEntries: 4 })).toHaveLength(4);
    expect((await rejection(readAll(text, { maxEntries: 3 }))).message).toMatch(/index line 5: more than 3 entries/);
    expect(MAX_ENTRIES).toBe(10_000_000);
    expect(await readAll(text, { maxEntries: 1e12 })).toHaveLength(4);
  });

  it('refuses to write an index it could not read back', () => {
    const err = syncError(() => [...serializeIndex([root, file('b'), file('a')])]);
    expect(err.code).toBe('TREE_INVALID');
    expect(err.message).toMatch(/out of tree order/);
  });

  it('reads an index from a file path and reports a missing file', async () => {
    const err = await rejection(loadIndex('/nonexistent/index.jsonl'));
    expect(err.code).toBe('INPUT_NOT_FOUND');
  });
});

describe('getfattr dump parsing', () => {
  it('unescapes octal escapes in paths and names and keeps raw bytes', () => {
    const out = '# file: we\\012ird\\134 x\xff/=a b\nuser.n\\012l\\134\\075 x=0sMQ==\nuser.e=0s\n\n# file: .\nsecurity.capability=0sAQAAAg==\n\n';
    const m = parseGetfattrDump(out);
    expect([...m.keys()]).toEqual(['we\nird\\ x\xff/=a b', '.']);
    expect(m.get('we\nird\\ x\xff/=a b')).toEqual({ 'user.e': '', 'user.n\nl\\= x': 'MQ==' });
    expect(m.get('.')).toEqual({ 'security.capability': 'AQAAAg==' });
  });

  it('rejects output it does not understand', () => {
    expect(syncError(() => parseGetfattrDump('user.a=0sMQ==\n')).code).toBe('TOOL_FAILED');
    expect(syncError(() => parseGetfattrDump('# file: a\nuser.a="text"\n')).code).toBe('TOOL_FAILED');
  });
});

// ---------- diff ----------

describe('index diff', () => {
  const kinds = (cs: Iterable<IndexChange>) => [...cs].map((c) => [c.path, c.kind, c.fields.join(','), c.relink]);

  it('classifies every path', () => {
    const old: IndexEntry[] = [
      root, file('content'), file('gone'), file('meta'), file('same'), { path: 'sym', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1, target: 'x' }, file('type'),
      file('xattr', { xattrs: { 'user.a': 'MQ==' } }), { path: 'z', type: 'chr', mode: 0o600, uid: 0, gid: 0, mtime: 1, rdev: { major: 1, minor: 3 } },
    ];
    const neu: IndexEntry[] = [
      root, file('added'), file('content', { sha256: 'b'.repeat(64), mtime: 5 }), file('meta', { mode: 0o600, uid: 1234, gid: 5678, mtime: 9 }),
      file('same', { sparse: true }), { path: 'sym', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 1, target: 'y' }, dir('type'),
      file('xattr', { xattrs: { 'user.a': 'Mg==' } }), { path: 'z', type: 'chr', mode: 0o600, uid: 0, gid: 0, mtime: 1, rdev: { major: 1, minor: 5 } },
    ];
    expect(kinds(diffIndexes(old, neu))).toEqual([
      ['.', 'same', '', false],
      ['added', 'added', '', false],
      ['content', 'content', 'sha256,mtime', false],
      ['gone', 'removed', '', false],
      ['meta', 'meta', 'mode,uid,gid,mtime', false],
      ['same', 'same', '', false],
      ['sym', 'content', 'target', false],
      ['type', 'content', 'type', false],
      ['xattr', 'meta', 'xattrs', false],
      ['z', 'content', 'rdev', false],
    ]);
    expect(summarizeChanges(diffIndexes(old, neu))).toEqual({ added: 1, removed: 1, content: 4, meta: 2, same: 2, relink: 0 });
    expect(kinds(diffIndexes(old, neu, { includeSame: false })).map((k) => k[0])).not.toContain('same');
  });

  it('relinks hardlinks whose group or leader inode changes', () => {
    const old: IndexEntry[] = [root, file('a'), file('b', { hardlink: 'a' }), file('c'), file('d', { hardlink: 'c' }), file('e', { hardlink: 'c' }), file('f')];
    const B = 'b'.repeat(64);
    const neu: IndexEntry[] = [
      root,
      file('a', { sha256: B }), file('b', { sha256: B, hardlink: 'a' }), // leader rewritten: b must follow
      file('c'), file('d'), // d leaves the group
      file('e', { hardlink: 'c' }), // unchanged follower of an unchanged leader
      file('f', { hardlink: 'c' }), // f joins the group
    ];
    expect(kinds(diffIndexes(old, neu))).toEqual([
      ['.', 'same', '', false],
      ['a', 'content', 'sha256', false],
      ['b', 'content', 'sha256', false],
      ['c', 'same', '', false],
      ['d', 'same', 'hardlink', true],
      ['e', 'same', '', false],
      ['f', 'same', 'hardlink', true],
    ]);
    // Leader replaced without a content change (it left another group): its followers follow.
    const old2: IndexEntry[] = [root, file('a'), file('b', { hardlink: 'a' }), file('c', { hardlink: 'a' })];
    const new2: IndexEntry[] = [root, file('a'), file('b'), file('c', { hardlink: 'b' })];
    expect(kinds(diffIndexes(old2, new2))).toEqual([
      ['.', 'same', '', false],
      ['a', 'same', '', false],
      ['b', 'same', 'hardlink', true],
      ['c', 'same', 'hardlink', true],
    ]);
  });

  it('rejects unsorted input as a bug', () => {
    const err = syncError(() => [...diffIndexes([root, file('b'), file('a')], [root])]);
    expect(err.code).toBe('INTERNAL');
  });

  /** A file system model: path -> inode, inode -> attributes. */
  type Inode = Omit<IndexEntry, 'path' | 'hardlink' | 'sparse'>;
  function attrs(e: IndexEntry): Inode {
    const { path: _p, hardlink: _h, sparse: _s, ...rest } = e;
    return structuredClone(rest);
  }
  function materialize(entries: IndexEntry[]): Map<string, { inode: Inode }> {
    const fs = new Map<string, { inode: Inode }>();
    for (const e of entries) fs.set(e.path, e.hardlink !== undefined ? fs.get(e.hardlink)! : { inode: attrs(e) });
    return fs;
  }

  it('applying the changes to a model of the old tree yields exactly the new tree (inodes included)', async () => {
    const smallPath = fc.array(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), { minLength: 1, maxLength: 2 }).map((cs) => cs.join('/'));
    const link = fc.option(fc.nat({ max: 3 }), { nil: undefined, freq: 2 });
    const pool = fc.array(fc.tuple(rawArb(smallPath, true), rawArb(smallPath, true), fc.boolean(), fc.boolean(), fc.boolean(), link, link), { maxLength: 25 });
    const seen = { joined: 0, left: 0, meta: 0, content: 0, same: 0 };
    await fc.assert(
      fc.asyncProperty(pool, async (recs) => {
        const old = buildIndex(recs.filter((r) => r[2]).map((r) => ({ ...r[0], link: r[5] })));
        // The new tree reuses paths and often the same attributes, so same/meta/relink all occur.
        const neu = buildIndex(recs.filter((r) => r[3]).map((r) => ({ ...r[0], ...(r[4] ? r[1] : {}), path: r[0].path, link: r[6] })));
        const changes = [...diffIndexes(old, neu)];
        expect(await fromAsync(diffIndexStreams(toAsync(old), neu))).toEqual(changes);
        // One change per path of either side, in tree order.
        const union = [...new Set([...old, ...neu].map((e) => e.path))].sort(comparePaths);
        expect(changes.map((c) => c.path)).toEqual(union);

        const fs = materialize(old);
        for (const c of changes) {
          if (c.relink) seen[c.new!.hardlink === undefined ? 'left' : 'joined']++;
          if (c.kind === 'meta' || c.kind === 'content' || c.kind === 'same') seen[c.kind]++;
          const n = c.new;
          if (c.kind === 'removed') {
            fs.delete(c.path);
          } else if (c.kind === 'added' || c.kind === 'content' || (c.relink && n!.hardlink === undefined)) {
            fs.set(c.path, n!.hardlink !== undefined ? fs.get(n!.hardlink)! : { inode: attrs(n!) });
          } else if (c.relink) {
            fs.set(c.path, fs.get(n!.hardlink!)!);
          } else {
            const node = fs.get(c.path)!;
            expect(node.inode.type).toBe(n!.type);
            for (const f of c.fields) {
              expect(['mode', 'uid', 'gid', 'mtime', 'xattrs', 'hardlink']).toContain(f);
              if (f === 'hardlink') continue;
              (node.inode as unknown as Record<string, unknown>)[f] = structuredClone(n![f]);
              if (f === 'xattrs' && n!.xattrs === undefined) delete node.inode.xattrs;
            }
          }
        }
        const want = materialize(neu);
        expect([...fs.keys()].sort(comparePaths)).toEqual([...want.keys()].sort(comparePaths));
        for (const [p, node] of want) expect(fs.get(p)!.inode).toEqual(node.inode);
        // Paths share an inode exactly when they do in the new tree.
        const ps = [...want.keys()];
        for (const p of ps) for (const q of ps) expect(fs.get(p) === fs.get(q)).toBe(want.get(p) === want.get(q));
      }),
      { numRuns: 1000 },
    );
    // The generator must reach every case, or the property proves little.
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThan(5);
  });
});

async function* toAsync<T>(xs: Iterable<T>): AsyncGenerator<T> {
  for (const x of xs) yield x;
}

async function fromAsync<T>(xs: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of xs) out.push(x);
  return out;
}
