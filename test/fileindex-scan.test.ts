/**
 * scanTree against the real tools: a tree with every file type, special modes, owners, xattrs,
 * ACLs, hardlinks, a sparse file and hostile names is scanned, and every field of every entry is
 * compared with what find, stat, sha256sum and getfattr say. Plus a real Debian tree and timings.
 */
import { createHash } from 'node:crypto';
import { link, lutimes, mkdir, open, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { appendFileSync, existsSync, rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir, testSystem } from './helpers/env.ts';
import type { System } from '../src/core/system.ts';
import { TiuError } from '../src/core/errors.ts';
import { comparePaths, displayPath, pathBytes, type IndexEntry } from '../src/core/fileindex/types.ts';
import { scanTree, scanTreeToArray } from '../src/core/fileindex/scan.ts';
import { indexDigest, loadIndex, writeIndex } from '../src/core/fileindex/io.ts';
import { listXattrs, listXattrsWithTools, xattrBinding } from '../src/core/fileindex/xattrs.ts';
import { utf8Bytes } from '../src/core/fileindex/text.ts';

const sys = testSystem();

// ---------- the truth, from the real tools ----------

interface Truth {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  blocks: number;
  major: number;
  minor: number;
  nlink: number;
  inode: string;
  target: string;
  sha256?: string;
  xattrs?: Record<string, string>;
}

const FIND_TYPES: Record<string, string> = { f: 'file', d: 'dir', l: 'symlink', c: 'chr', b: 'blk', p: 'fifo', s: 'socket' };

function nulInput(paths: string[]): Buffer {
  return Buffer.from(paths.map((p) => `${p}\0`).join(''), 'latin1');
}

/** Every path under root (find -xdev), minus the contents of `excluded` top-level dirs, described by find, stat, sha256sum and getfattr. */
async function truthOf(s: System, root: string, excluded: string[] = []): Promise<Map<string, Truth>> {
  const found = (await s.run('find', ['.', '-xdev', '-printf', '%P\\0%y\\0%l\\0'], { cwd: root, binary: true })).stdoutBuffer!.toString('latin1').split('\0');
  found.pop();
  const out = new Map<string, Truth>();
  for (let i = 0; i < found.length; i += 3) {
    const path = found[i] === '' ? '.' : found[i]!;
    if (excluded.some((x) => path.startsWith(`${x}/`))) continue;
    out.set(path, { path, type: FIND_TYPES[found[i + 1]!]!, target: found[i + 2]! } as Truth);
  }
  const paths = [...out.keys()];
  const stats = (await s.run('xargs', ['-0', 'stat', '--printf', '%f\\001%u\\001%g\\001%Y\\001%s\\001%b\\001%B\\001%t\\001%T\\001%h\\001%d:%i\\001%n\\000', '--'], { cwd: root, input: nulInput(paths), binary: true })).stdoutBuffer!.toString('latin1').split('\0');
  stats.pop();
  expect(stats).toHaveLength(paths.length);
  for (const rec of stats) {
    const f = rec.split('\x01');
    const name = f.slice(11).join('\x01');
    const t = out.get(name)!;
    expect(Number.parseInt(f[6]!, 10)).toBe(512);
    Object.assign(t, {
      mode: Number.parseInt(f[0]!, 16) & 0o7777, uid: Number(f[1]), gid: Number(f[2]), mtime: Number(f[3]), size: Number(f[4]), blocks: Number(f[5]),
      major: Number.parseInt(f[7]!, 16), minor: Number.parseInt(f[8]!, 16), nlink: Number(f[9]), inode: f[10],
    });
  }
  const files = paths.filter((p) => out.get(p)!.type === 'file');
  const sums = (await s.run('xargs', ['-0', 'sha256sum', '-z', '--'], { cwd: root, input: nulInput(files), binary: true })).stdoutBuffer!.toString('latin1').split('\0');
  sums.pop();
  for (const line of sums) out.get(line.slice(66))!.sha256 = line.slice(0, 64);
  // getfattr in recursive mode with hex values: another code path than the scanner's xargs/base64 one.
  const dump = (await s.run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, binary: true })).stdoutBuffer!.toString('latin1');
  let cur: Truth | undefined;
  const unq = (x: string) => x.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of dump.split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = unq(line.slice(8)).replace(/^\.\//, '');
      cur = out.get(p);
    } else if (line !== '' && cur) {
      const eq = line.indexOf('=');
      const hex = line.slice(eq + 1);
      expect(hex).toMatch(/^0x[0-9a-f]*$/);
      (cur.xattrs ??= {})[unq(line.slice(0, eq))] = Buffer.from(hex.slice(2), 'hex').toString('base64');
    }
  }
  return out;
}

/** Asserts every field of every entry against the tools' view; returns the entries by path. */
function checkAgainstTruth(entries: IndexEntry[], truth: Map<string, Truth>): Map<string, IndexEntry> {
  expect(entries.map((e) => e.path)).toEqual([...truth.keys()].sort(comparePaths));
  const byPath = new Map<string, IndexEntry>();
  const firstOfInode = new Map<string, string>();
  for (const e of entries) {
    byPath.set(e.path, e);
    const t = truth.get(e.path)!;
    const where = displayPath(e.path);
    expect(e.type, where).toBe(t.type);
    expect([e.mode, e.uid, e.gid, e.mtime], where).toEqual([t.mode, t.uid, t.gid, t.mtime]);
    expect(e.xattrs, where).toEqual(t.xattrs);
    const expected: Partial<IndexEntry> = {};
    if (t.type === 'file') {
      expected.size = t.size;
      expected.sha256 = t.sha256!;
      if (t.size > 0 && t.blocks * 512 < t.size) expected.sparse = true;
      if (t.nlink > 1) {
        const first = firstOfInode.get(t.inode);
        if (first === undefined) firstOfInode.set(t.inode, e.path);
        else expected.hardlink = first;
      }
    }
    if (t.type === 'symlink') expected.target = t.target;
    if (t.type === 'chr' || t.type === 'blk') expected.rdev = { major: t.major, minor: t.minor };
    const { size, sha256, sparse, hardlink, target, rdev } = e;
    const got = Object.fromEntries(Object.entries({ size, sha256, sparse, hardlink, target, rdev }).filter(([, v]) => v !== undefined));
    expect(got, where).toEqual(expected);
  }
  return byPath;
}

// ---------- the test tree ----------

const ODD = ['with space', 'new\nline', '-leading-dash', 'back\\slash', '\xff', 'y'.repeat(255), utf8Bytes('é'), '=eq', 'tab\there', '\\012'];
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // vfs_cap_data v2: cap_net_raw... permitted bits

async function buildTree(s: System, root: string): Promise<{ server: Server }> {
  const P = (p: string) => `${root}/${p}`;
  const B = (p: string) => pathBytes(`${root}/${p}`);
  for (const d of ['bin', 'data/sub', 'dev', 'sticky', 'acl', 'odd', 'links', 'var/lib/deep', 'mnt']) await mkdir(P(d), { recursive: true });
  await writeFile(P('bin/setuid'), '#!/bin/sh\necho setuid\n', { mode: 0o755 });
  await writeFile(P('bin/setgid'), '#!/bin/sh\necho setgid\n');
  await writeFile(P('bin/cap'), 'ping');
  await s.run('chmod', ['4755', P('bin/setuid')]);
  await s.run('chmod', ['2750', P('bin/setgid')]);
  await s.run('chmod', ['1777', P('sticky')]);
  await writeFile(P('data/empty'), '');
  await writeFile(P('data/big'), createHash('sha512').update('x').digest().toString('hex').repeat(20000));
  await writeFile(P('data/sparse'), '');
  await truncate(P('data/sparse'), 10 * 1024 * 1024);
  const fh = await open(P('data/sparse'), 'r+');
  await fh.write('hello in the middle', 5 * 1024 * 1024);
  await fh.close();
  // A hardlink group of 3 in tree order data/h1 < data/sub/h2 < data/z-h3, created in another order.
  await writeFile(P('data/sub/h2'), 'linked content');
  await link(P('data/sub/h2'), P('data/z-h3'));
  await link(P('data/sub/h2'), P('data/h1'));
  await s.run('mknod', [P('dev/null'), 'c', '1', '3']);
  await s.run('mknod', [P('dev/loop'), 'b', '7', '200']);
  await s.run('mknod', [P('dev/wide'), 'c', '300', '70000']);
  await s.run('mkfifo', [P('dev/fifo')]);
  const server = createServer();
  await new Promise<void>((res) => server.listen(P('dev/sock'), res));
  for (const name of ODD) await writeFile(B(`odd/${name}`), `content of ${name}`);
  await symlink('../data/big', P('links/rel'));
  await symlink('/etc/passwd', P('links/abs'));
  await symlink('nowhere', P('links/dangling'));
  await symlink(Buffer.from('\xff\nweird', 'latin1'), B('links/weird'));
  await writeFile(P('var/lib/deep/state'), 'excluded');
  await writeFile(P('mnt/keep'), 'not a mount here');
  await writeFile(P('owned'), 'owned by 1234');
  await symlink('owned', P('owned-link'));
  await s.run('chown', ['1234:5678', P('owned')]);
  await s.run('chown', ['-h', '1234:5678', P('owned-link')]);
  await writeFile(P('old'), 'from 1960');
  await s.run('touch', ['-d', '@-315619199.5', P('old')]);
  await writeFile(P('future'), 'from 2100');
  await lutimes(P('future'), 4102444800.9, 4102444800.9);
  // xattrs of every namespace; capabilities after chown (chown clears them).
  await s.run('setfattr', ['-n', 'user.greeting', '-v', 'hello', P('data/big')]);
  await s.run('setfattr', ['-n', 'user.dir', '-v', '0x00ff', P('data')]);
  await s.run('setfattr', ['-n', 'user.a\nb=c\\d', '-v', 'odd name', P('owned')]);
  await s.run('setfattr', ['-n', 'security.capability', '-v', `0s${CAP.toString('base64')}`, P('bin/cap')]);
  await s.run('setfattr', ['-n', 'trusted.t', '-v', 'on the file', P('data/sub/h2')]);
  await s.run('setfattr', ['-h', '-n', 'trusted.link', '-v', 'on the symlink', P('links/rel')]);
  await s.run('setfacl', ['-m', 'u:1234:rwx', P('acl')]);
  await writeFile(P('acl/f'), 'acl file');
  await s.run('setfacl', ['-m', 'u:1234:rwx', P('acl/f')]);
  await s.run('setfacl', ['-d', '-m', 'u:1234:rx', P('acl')]);
  // Names argv cannot carry (not UTF-8) go through setfattr --restore, which reads escaped bytes.
  const restore = `# file: ${root}/odd/\\377\nuser.on-ff=0sMQ==\nuser.\\377name=0sMg==\n\n`;
  await writeFile(`${root}.restore`, restore, 'latin1');
  await s.run('setfattr', [`--restore=${root}.restore`]);
  await rm(`${root}.restore`);
  return { server };
}

/** Decodes a system.posix_acl_* value: version 2, then (tag u16, perm u16, id u32) entries. */
function aclEntries(b64: string): Array<{ tag: number; perm: number; id: number }> {
  const b = Buffer.from(b64, 'base64');
  expect(b.readUInt32LE(0)).toBe(2);
  const out = [];
  for (let o = 4; o < b.length; o += 8) out.push({ tag: b.readUInt16LE(o), perm: b.readUInt16LE(o + 2), id: b.readUInt32LE(o + 4) });
  return out;
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

describe('scanTree on a tree with every kind of entry', () => {
  it('records every field exactly as stat, find, sha256sum and getfattr see it', async () => {
    await using d = await tempDir();
    const root = `${d.path}/tree`;
    const { server } = await buildTree(sys, root);
    try {
      let progress: [number, number] = [0, 0];
      const { entries, stats } = await scanTreeToArray(sys, root, { exclude: ['/var'], onProgress: (f, b) => (progress = [f, b]) });
      const truth = await truthOf(sys, root, ['var']);
      const e = checkAgainstTruth(entries, truth);
      // The in-process binding (what the scan used) and getfattr agree on every path, the
      // non-UTF-8 path and name included (those fall back to getfattr).
      expect(await xattrBinding()).toBeDefined();
      const all = entries.map((x) => x.path);
      expect(await listXattrs(sys, root, all)).toEqual(await listXattrsWithTools(sys, root, all));

      // Independent of the tools: what the tree was built with.
      expect(e.get('var')).toMatchObject({ type: 'dir' });
      expect([...e.keys()].filter((p) => p.startsWith('var/'))).toEqual([]);
      expect(e.get('bin/setuid')!.mode).toBe(0o4755);
      expect(e.get('bin/setgid')!.mode).toBe(0o2750);
      expect(e.get('sticky')!.mode).toBe(0o1777);
      expect(e.get('owned')).toMatchObject({ uid: 1234, gid: 5678, xattrs: { 'user.a\nb=c\\d': Buffer.from('odd name').toString('base64') } });
      expect(e.get('owned-link')).toMatchObject({ type: 'symlink', uid: 1234, gid: 5678, target: 'owned' });
      expect(e.get('owned-link')!.xattrs).toBeUndefined(); // a symlink does not report its target's xattrs
      expect(e.get('old')!.mtime).toBe(-315619200);
      expect(e.get('future')!.mtime).toBe(4102444800);
      expect(e.get('data/empty')).toMatchObject({ size: 0, sha256: createHash('sha256').digest('hex') });
      expect(e.get('data/empty')!.sparse).toBeUndefined();
      expect(e.get('data/sparse')).toMatchObject({ size: 10 * 1024 * 1024, sparse: true });
      expect(e.get('data/big')!.sparse).toBeUndefined();
      expect(e.get('data/big')!.xattrs).toEqual({ 'user.greeting': Buffer.from('hello').toString('base64') });
      expect(e.get('data')!.xattrs).toEqual({ 'user.dir': Buffer.from([0, 0xff]).toString('base64') });
      expect(e.get('data/h1')!.hardlink).toBeUndefined();
      expect(e.get('data/sub/h2')).toMatchObject({ hardlink: 'data/h1', xattrs: { 'trusted.t': Buffer.from('on the file').toString('base64') } });
      expect(e.get('data/z-h3')!.hardlink).toBe('data/h1');
      expect(stats.hardlinks).toBe(2);
      expect(e.get('dev/null')).toMatchObject({ type: 'chr', rdev: { major: 1, minor: 3 } });
      expect(e.get('dev/loop')).toMatchObject({ type: 'blk', rdev: { major: 7, minor: 200 } });
      expect(e.get('dev/wide')).toMatchObject({ type: 'chr', rdev: { major: 300, minor: 70000 } });
      expect(e.get('dev/fifo')!.type).toBe('fifo');
      expect(e.get('dev/sock')!.type).toBe('socket');
      expect(e.get('links/weird')!.target).toBe('\xff\nweird');
      expect(e.get('links/rel')!.xattrs).toEqual({ 'trusted.link': Buffer.from('on the symlink').toString('base64') });
      expect(e.get('bin/cap')!.xattrs).toEqual({ 'security.capability': CAP.toString('base64') });
      for (const name of ODD) expect(e.get(`odd/${name}`)!.sha256).toBe(createHash('sha256').update(`content of ${name}`).digest('hex'));
      expect(e.get('odd/\xff')!.xattrs).toEqual({ 'user.on-ff': 'MQ==', 'user.\xffname': 'Mg==' });
      const access = aclEntries(e.get('acl/f')!.xattrs!['system.posix_acl_access']!);
      expect(access).toContainEqual({ tag: 2, perm: 7, id: 1234 }); // ACL_USER 1234 rwx
      const dflt = aclEntries(e.get('acl')!.xattrs!['system.posix_acl_default']!);
      expect(dflt).toContainEqual({ tag: 2, perm: 5, id: 1234 }); // default ACL_USER 1234 r-x
      expect((await sys.run('getfacl', ['-n', '-p', `${root}/acl/f`])).stdout).toMatch(/^user:1234:rwx/m);

      expect(progress).toEqual([entries.length, stats.bytesHashed]);
      expect(stats.bytesHashed).toBe(entries.filter((x) => x.type === 'file' && !x.hardlink).reduce((n, x) => n + x.size!, 0));

      // Written, read back and digested consistently; sha256sum agrees.
      const w = await writeIndex(`${d.path}/index.jsonl`, entries);
      expect(w.entries).toBe(entries.length);
      expect(w.sha256).toBe(indexDigest(entries));
      expect((await sys.run('sha256sum', [`${d.path}/index.jsonl`])).stdout.slice(0, 64)).toBe(w.sha256);
      expect(await loadIndex(`${d.path}/index.jsonl`, { sha256: w.sha256 })).toEqual(entries);
      const text = await readFile(`${d.path}/index.jsonl`, 'utf8');
      expect(text.split('\n').length).toBe(entries.length + 2); // header + entries + final newline

      // Streaming with other concurrency gives the same entries.
      const again: IndexEntry[] = [];
      for await (const x of scanTree(sys, root, { exclude: ['var/'], hashConcurrency: 1 })) again.push(x);
      expect(again).toEqual(entries);
    } finally {
      await new Promise((res) => server.close(res));
    }
  });

  it('lists a mount point but not its contents with oneFileSystem, and descends without it', async () => {
    await using d = await tempDir();
    const root = d.path;
    await mkdir(`${root}/mnt`);
    await writeFile(`${root}/top`, 'x');
    await sys.run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tiu-test', `${root}/mnt`]);
    try {
      await writeFile(`${root}/mnt/inside`, 'y');
      const one = (await scanTreeToArray(sys, root, { oneFileSystem: true })).entries;
      expect(one.map((x) => x.path)).toEqual(['.', 'mnt', 'top']);
      checkAgainstTruth(one, await truthOf(sys, root));
      const all = (await scanTreeToArray(sys, root)).entries;
      expect(all.map((x) => x.path)).toEqual(['.', 'mnt', 'mnt/inside', 'top']);
    } finally {
      await sys.run('umount', [`${root}/mnt`]);
    }
  });

  it('skips paths and their subtrees with skip, never asking about the root', async () => {
    await using d = await tempDir();
    await mkdir(`${d.path}/a/b`, { recursive: true });
    await writeFile(`${d.path}/a/b/c`, '');
    await writeFile(`${d.path}/a/keep`, '');
    const asked: string[] = [];
    const { entries } = await scanTreeToArray(sys, d.path, { skip: (p) => (asked.push(p), p === 'a/b') });
    expect(entries.map((x) => x.path)).toEqual(['.', 'a', 'a/keep']);
    expect(asked.sort()).toEqual(['a', 'a/b', 'a/keep']);
  });

  it('fails with TREE_INVALID when a path vanishes during the scan', async () => {
    await using d = await tempDir();
    await writeFile(`${d.path}/a`, '');
    await writeFile(`${d.path}/b`, '');
    const err = await rejection(scanTreeToArray(sys, d.path, { skip: (p) => {
      // skip() runs for all names of a directory before they are lstat'ed: b goes away in between.
      if (p === 'a') rmSync(`${d.path}/b`);
      return false;
    } }));
    expect(err.code).toBe('TREE_INVALID');
    expect(err.message).toMatch(/cannot read "b": it vanished while scanning/);
  });

  it('fails with TREE_INVALID when a file changes while it is hashed', async () => {
    await using d = await tempDir();
    await writeFile(`${d.path}/grows`, 'abc');
    const err = await rejection(scanTreeToArray(sys, d.path, { hash: (e) => {
      // Called after lstat, before hashing: the file grows in between.
      if (e.path === 'grows') appendFileSync(`${d.path}/grows`, 'more');
      return true;
    } }));
    expect(err.code).toBe('TREE_INVALID');
    expect(err.message).toMatch(/"grows" changed while it was scanned/);
  });

  it('rejects a missing root, a file as root and a bad exclude', async () => {
    await using d = await tempDir();
    await writeFile(`${d.path}/f`, '');
    expect((await rejection(scanTreeToArray(sys, `${d.path}/missing`))).code).toBe('TREE_INVALID');
    expect((await rejection(scanTreeToArray(sys, `${d.path}/f`))).message).toMatch(/is not a directory/);
    expect((await rejection(scanTreeToArray(sys, d.path, { exclude: ['/../etc'] }))).code).toBe('INPUT_INVALID');
  });

  it('can leave files unhashed for in-memory comparison, which writeIndex refuses', async () => {
    await using d = await tempDir();
    await writeFile(`${d.path}/a`, 'a');
    await writeFile(`${d.path}/b`, 'b');
    const { entries, stats } = await scanTreeToArray(sys, d.path, { hash: (e) => e.path === 'b' });
    expect(entries.find((x) => x.path === 'a')!.sha256).toBeUndefined();
    expect(entries.find((x) => x.path === 'b')!.sha256).toBe(createHash('sha256').update('b').digest('hex'));
    expect(stats.filesHashed).toBe(1);
    expect((await rejection(writeIndex(`${d.path}/../x.jsonl`, entries))).code).toBe('TREE_INVALID');
  });

  it('listXattrs reads given paths byte-exactly, without following symlinks', async () => {
    await using d = await tempDir();
    const r = d.path;
    await writeFile(pathBytes(`${r}/-\xff\nx`), '');
    await symlink(Buffer.from('-\xff\nx', 'latin1'), pathBytes(`${r}/l`));
    const restore = `# file: ${r}/-\\377\\012x\nuser.x=0sMQ==\n\n`;
    await writeFile(`${r}.restore`, restore, 'latin1');
    await sys.run('setfattr', [`--restore=${r}.restore`]);
    await rm(`${r}.restore`);
    const m = await listXattrs(sys, r, ['.', '-\xff\nx', 'l']);
    expect([...m.entries()]).toEqual([['-\xff\nx', { 'user.x': 'MQ==' }]]);
    expect((await rejection(listXattrs(sys, r, ['missing']))).code).toBe('TREE_INVALID');
  });
});

// ---------- a real Debian tree and timings ----------

async function debianTree(): Promise<string> {
  const cached = '/var/cache/tiu-fixtures/debian-v1';
  if (existsSync(`${cached}/.tiu-fixture-complete`)) return cached;
  const r = await sys.run('bash', ['test/fixtures/debian-tree.sh', 'v1'], { timeoutMs: 30 * 60_000 });
  return r.stdout.trim().split('\n').pop()!;
}

describe('scanTree on real trees', () => {
  it('indexes a Debian root completely and exactly', { timeout: 40 * 60_000 }, async () => {
    const root = await debianTree();
    const heapBefore = process.memoryUsage().heapUsed;
    const t0 = performance.now();
    const { entries, stats } = await scanTreeToArray(sys, root, { exclude: ['/var'] });
    const ms = performance.now() - t0;
    const heapMB = (process.memoryUsage().heapUsed - heapBefore) / 1e6;
    // Completeness: find -xdev prints one byte per path; the excluded directory's contents are left out.
    const count = async (args: string[]) => (await sys.run('find', [...args, '-xdev', '-printf', 'x'])).stdout.length;
    const all = await count([root]);
    const excludedContents = await count([`${root}/var`, '-mindepth', '1']);
    expect(excludedContents).toBeGreaterThan(100);
    expect(entries.length).toBe(all - excludedContents);
    checkAgainstTruth(entries, await truthOf(sys, root, ['var']));
    expect(entries.some((x) => x.type === 'symlink') && entries.some((x) => x.hardlink) && entries.some((x) => x.mode & 0o4000)).toBe(true);
    // Streaming memory: count entries without keeping them.
    const heap2 = process.memoryUsage().heapUsed;
    let n = 0;
    let peak = 0;
    const gen = scanTree(sys, root, { exclude: ['/var'] });
    for await (const _ of gen) if (++n % 500 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - heap2);
    expect(n).toBe(entries.length);
    console.log(`debian-v1: ${entries.length} entries, ${stats.filesHashed} files, ${(stats.bytesHashed / 1e6).toFixed(1)} MB hashed in ${ms.toFixed(0)} ms; ` +
      `heap for the whole array ${heapMB.toFixed(1)} MB, streaming peak heap growth ${(peak / 1e6).toFixed(1)} MB, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
  });

  it('scans ~250 MB in ~10k files in a few seconds', { timeout: 10 * 60_000 }, async () => {
    await using d = await tempDir();
    const root = d.path;
    const chunk = Buffer.alloc(2.4e6);
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
    for (let i = 0; i < 100; i++) {
      const dir = `${root}/d${i}`;
      await mkdir(dir);
      chunk.writeUInt32LE(i, 0);
      await writeFile(`${dir}/big`, chunk);
      for (let j = 0; j < 99; j++) await writeFile(`${dir}/f${j}`, `file ${i}/${j} `.repeat(1 + ((i * 7 + j) % 400)));
    }
    await sys.run('sync', []);
    const t0 = performance.now();
    const { entries, stats } = await scanTreeToArray(sys, root);
    const ms = performance.now() - t0;
    expect(entries.length).toBe(1 + 100 * 101);
    expect(stats.bytesHashed).toBeGreaterThan(240e6);
    console.log(`synthetic: ${entries.length} entries, ${(stats.bytesHashed / 1e6).toFixed(0)} MB in ${ms.toFixed(0)} ms (page cache warm)`);
    expect(ms).toBeLessThan(15_000);
  });
});
