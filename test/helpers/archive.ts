/**
 * Shared helpers for the archive tests (test/archive-*.test.ts): run the real `tiu` CLI as a
 * user would (own process, exit code, stdout, stderr), make development keys with `tiu keygen`,
 * build a small tree holding every file type, take an archive apart and put it back together,
 * and describe a tree (walk + getfattr) so that a source tree and a mounted image can be compared.
 *
 * Paths of trees are byte strings (latin1, one char per byte) as in src/core/fileindex/types.ts,
 * so names that are not UTF-8 survive; fs calls get `Buffer.from(p, 'latin1')`.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, chown, copyFile, lstat, mkdir, mkdtemp, open, readdir, readlink, rm, symlink, truncate, utimes, lutimes, writeFile, link } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { execa } from 'execa';
import { expect } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../src/core/errors.ts';
import { encodeTrailer, locateSignature, TRAILER_SIZE } from '../../src/tiu/archive/layout.ts';
import { parseManifest, type Manifest } from '../../src/tiu/archive/manifest.ts';

export const REPO = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
export const TIU_BIN = join(REPO, 'bin/tiu.js');
/** The Node 24 running the tests (node_modules/.bin/node): the CLI needs it. */
export const NODE = process.execPath;
/** Fixed build time for reproducible archives. */
export const EPOCH = 1_700_000_000;

/**
 * The cached real Debian tree: test/fixtures/debian-tree.sh builds it on first use (~40 s, needs
 * the network; call from a beforeAll with a long timeout) and prints its path.
 */
export function debianTree(which: 'v1' | 'v2' = 'v1'): string {
  return execFileSync('bash', [join(REPO, 'test/fixtures/debian-tree.sh'), which], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node bin/tiu.js ...args` as its own process. `env` is merged over ours (undefined
 * removes a variable); SOURCE_DATE_EPOCH is removed unless given.
 */
export async function tiu(args: string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<CliResult> {
  const env: Record<string, string | undefined> = { ...process.env, SOURCE_DATE_EPOCH: undefined, ...options.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = await execa(NODE, [TIU_BIN, ...args], { env, extendEnv: false, reject: false, cwd: options.cwd, stripFinalNewline: false, timeout: 170_000 });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Asserts a command succeeded, showing its stderr when it did not. */
export function expectOk(r: CliResult): void {
  expect(r.stderr.split('\n').filter((l) => l.startsWith('tiu: error')), r.stderr).toEqual([]);
  expect(r.exitCode, r.stderr).toBe(0);
}

/** Progress lines a command may print to stderr before failing (non-terminal progress). */
const PROGRESS_LINE = /^[a-z]+: \d{1,3}%$/;

/**
 * Asserts a command failed with `code` as a user sees it: the exit code of that code, and one
 * error line `tiu: error: ... [CODE]` at the end of stderr, no stack trace. Other stderr lines
 * may only be progress lines ("verifying: 0%") or match `alsoAllowed`. Returns the error line.
 */
export function expectCliError(r: CliResult, code: ErrorCode, alsoAllowed: RegExp[] = []): string {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  const context = `exit ${r.exitCode}, stderr:\n${r.stderr}`;
  expect(lines.length, context).toBeGreaterThan(0);
  const last = lines[lines.length - 1]!;
  expect(last, context).toMatch(/^tiu: error: \S.* \[[A-Z_]+\]$/);
  expect(last.slice(last.lastIndexOf('[') + 1, -1), context).toBe(code);
  expect(lines.slice(0, -1).filter((l) => ![PROGRESS_LINE, ...alsoAllowed].some((re) => re.test(l))), context).toEqual([]);
  expect(r.stderr, context).not.toMatch(/^\s+at /m);
  expect(r.exitCode, context).toBe(ERROR_CODES[code].exit);
  return last;
}

export interface Keys {
  dir: string;
  caKey: string;
  caCert: string;
  signingKey: string;
  signingCert: string;
  keyring: string;
  /** With `intermediate`: the intermediate CA certificate to pass as --chain. */
  chain?: string;
  intermediateKey?: string;
  intermediateCert?: string;
}

/** `tiu keygen -o dir [--intermediate]`; returns the paths of the files it wrote. */
export async function makeKeys(dir: string, options: { intermediate?: boolean; cn?: string } = {}): Promise<Keys> {
  const r = await tiu(['keygen', '-o', dir, ...(options.intermediate ? ['--intermediate'] : []), ...(options.cn ? ['--cn', options.cn] : [])]);
  expectOk(r);
  const k: Keys = {
    dir,
    caKey: join(dir, 'ca.key.pem'),
    caCert: join(dir, 'ca.cert.pem'),
    signingKey: join(dir, 'signing.key.pem'),
    signingCert: join(dir, 'signing.cert.pem'),
    keyring: join(dir, 'keyring.pem'),
  };
  if (options.intermediate) {
    k.chain = join(dir, 'chain.pem');
    k.intermediateKey = join(dir, 'intermediate.key.pem');
    k.intermediateCert = join(dir, 'intermediate.cert.pem');
  }
  // keygen must have written every file it announced.
  for (const p of Object.values(k)) if (p !== dir) await lstat(p);
  return k;
}

export interface CreateArgs {
  tree: string;
  out: string;
  keys: Keys;
  compatible?: string;
  version?: string;
  /** SOURCE_DATE_EPOCH; `null` = unset. Default {@link EPOCH}. */
  epoch?: number | null;
  /** Extra CLI arguments. Default: `--level 1` (zstd level 15 takes a minute on the Debian tree). */
  extra?: string[];
  env?: Record<string, string | undefined>;
}

/** `tiu create` through the CLI; returns the process result (does not assert). */
export function runCreate(a: CreateArgs): Promise<CliResult> {
  const args = ['create', a.tree, '-o', a.out, '--key', a.keys.signingKey, '--cert', a.keys.signingCert, '--compatible', a.compatible ?? 'test-x86_64', '--version', a.version ?? '1.0', '--no-progress', ...(a.keys.chain ? ['--chain', a.keys.chain] : []), ...(a.extra ?? ['--level', '1'])];
  const epoch = a.epoch === undefined ? EPOCH : a.epoch;
  return tiu(args, { env: { SOURCE_DATE_EPOCH: epoch === null ? undefined : String(epoch), ...a.env } });
}

/** `tiu create` that must succeed; returns the archive path. */
export async function createArchive(a: CreateArgs): Promise<string> {
  const r = await runCreate(a);
  expectOk(r);
  expect(r.stdout).toContain(`created ${a.out}:`);
  return a.out;
}

export interface ArchiveParts {
  size: number;
  sigOffset: number;
  sigSize: number;
  /** The CMS SignedData (DER). */
  der: Buffer;
  /**
   * The manifest bytes embedded in the CMS, found as the one `{"format": "tiu-archive"...}\n`
   * JSON text inside the DER (no signature check: tests compare it with openssl's output).
   */
  manifestBytes: Buffer;
  manifest: Manifest;
}

/** Takes an archive apart by its trailer (docs/archive-format.md, "Reading an archive" step 1). */
export async function archiveParts(file: string): Promise<ArchiveParts> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const trailer = Buffer.alloc(TRAILER_SIZE);
    await fh.read(trailer, 0, TRAILER_SIZE, size - TRAILER_SIZE);
    const { sigOffset, sigSize } = locateSignature(size, trailer);
    const der = Buffer.alloc(sigSize);
    await fh.read(der, 0, sigSize, sigOffset);
    const start = der.indexOf('{\n  "format": "tiu-archive"');
    expect(start, 'manifest JSON inside the CMS').toBeGreaterThan(0);
    const end = der.indexOf('\n}\n', start);
    const manifestBytes = der.subarray(start, end + 3);
    return { size, sigOffset, sigSize, der, manifestBytes, manifest: parseManifest(manifestBytes) };
  } finally {
    await fh.close();
  }
}

/** Reads `length` bytes at `position` of a file. */
export async function readAt(file: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(length);
    const { bytesRead } = await fh.read(b, 0, length, position);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Copies `src` to `dst` and XORs the byte at `offset` with `mask`. */
export async function copyFlipped(src: string, dst: string, offset: number, mask = 0x01): Promise<void> {
  await copyFile(src, dst);
  const fh = await open(dst, 'r+');
  try {
    const b = Buffer.alloc(1);
    const { bytesRead } = await fh.read(b, 0, 1, offset);
    if (bytesRead !== 1) throw new Error(`offset ${offset} is outside ${dst}`);
    b[0]! ^= mask;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

/** Copies the first `length` bytes of `src` to `dst`, then appends `tail`. */
export async function copyPrefix(src: string, dst: string, length: number, tail: Buffer = Buffer.alloc(0)): Promise<void> {
  await copyFile(src, dst);
  await truncate(dst, length);
  if (tail.length) await writeFile(dst, tail, { flag: 'a' });
}

/** Writes `archive` with its signature and trailer replaced by `der`. */
export async function spliceSignature(archive: string, der: Buffer, out: string): Promise<void> {
  const { sigOffset } = await archiveParts(archive);
  await copyPrefix(archive, out, sigOffset, Buffer.concat([der, encodeTrailer(der.length)]));
}

export async function sha256File(path: string | Buffer): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Mounts a squashfs file (or an archive: the image is at offset 0) read-only through a loop device. */
export async function mountSquashfs(file: string): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await mkdtemp(join(tmpdir(), 'tiu-test-mnt-'));
  const r = await execa('mount', ['-t', 'squashfs', '-o', 'ro,loop', file, dir], { reject: false });
  if (r.exitCode !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`mount -t squashfs -o ro,loop ${file} failed: ${r.stderr}`);
  }
  return {
    dir,
    async [Symbol.asyncDispose]() {
      await execa('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The small tree with every file type

const b = (s: string) => Buffer.from(s, 'latin1');

/** Byte-string names of the odd entries of {@link buildTypesTree}, for assertions. */
export const ODD = {
  space: 'odd/with space',
  newline: 'odd/new\nline',
  dash: 'odd/-leading-dash',
  nonUtf8: 'odd/bad\xffname',
  long: `odd/${'L'.repeat(255)}`,
} as const;

/** Fixed mtimes (seconds) the tree's entries get, so the round trip can check them. */
const MTIME = 1_600_000_000;

/**
 * Builds a small root tree with every file type tiu must carry: regular (empty, sparse, 1 MiB of
 * random bytes so the verity tree has two levels, setuid, setgid, mode 0), a hardlink group of
 * three, symlinks (relative, absolute, dangling), char and block devices, a FIFO, a socket,
 * directories (sticky, setgid), user.* and security.capability xattrs, a POSIX ACL, other owners,
 * odd names (space, newline, leading dash, a 0xff byte, 255 bytes), os-release, and contents (dot files
 * too) in excluded directories (var, tmp). Returns the tree path (`dir`).
 */
export async function buildTypesTree(dir: string): Promise<string> {
  const p = (rel: string) => b(join(dir, rel));
  for (const d of ['etc', 'usr/bin', 'usr/lib', 'usr/share/data', 'dev-nodes', 'odd', 'links', 'shared/sticky', 'shared/setgid', 'var/cache/app', 'tmp']) {
    await mkdir(p(d), { recursive: true });
  }
  await writeFile(p('etc/os-release'), 'ID=tiutest\nVERSION_ID="1"\nPRETTY_NAME="tiu test tree"\n');
  await writeFile(p('etc/hostname'), 'types\n');
  await writeFile(p('usr/share/data/empty'), '');
  // 1 MiB of random bytes: incompressible, so the image has > 128 data blocks (two hash levels).
  const { randomBytes } = await import('node:crypto');
  await writeFile(p('usr/share/data/random.bin'), randomBytes(1 << 20));
  // Sparse: 8 MiB with two small written regions.
  await writeFile(p('usr/share/data/sparse.img'), '');
  await truncate(p('usr/share/data/sparse.img'), 8 << 20);
  {
    const fh = await open(p('usr/share/data/sparse.img'), 'r+');
    await fh.write(Buffer.from('head'), 0, 4, 0);
    await fh.write(Buffer.from('middle'), 0, 6, 5 << 20);
    await fh.close();
  }
  await writeFile(p('usr/bin/suid-tool'), '#!/bin/sh\necho suid\n');
  await chmod(p('usr/bin/suid-tool'), 0o4755);
  await writeFile(p('usr/bin/sgid-tool'), '#!/bin/sh\necho sgid\n');
  await chmod(p('usr/bin/sgid-tool'), 0o2711);
  await writeFile(p('usr/bin/cap-tool'), '#!/bin/sh\necho cap\n');
  await chmod(p('usr/bin/cap-tool'), 0o755);
  await writeFile(p('etc/secret'), 'nobody reads this\n');
  await chmod(p('etc/secret'), 0o000);
  await writeFile(p('etc/owned'), 'owned by 1234:5678\n');
  await chown(p('etc/owned'), 1234, 5678);
  await chown(p('shared/setgid'), 0, 5678);
  await chmod(p('shared/sticky'), 0o1777);
  await chmod(p('shared/setgid'), 0o2775);
  // A hardlink group of three, and a second group of two.
  await writeFile(p('usr/lib/libhard.so.1'), 'hardlinked content\n');
  await link(p('usr/lib/libhard.so.1'), p('usr/lib/libhard-copy.so'));
  await link(p('usr/lib/libhard.so.1'), p('links/hard-third'));
  await writeFile(p('links/pair-a'), 'second group\n');
  await link(p('links/pair-a'), p('links/pair-b'));
  await symlink('../usr/lib/libhard.so.1', p('links/relative'));
  await symlink('/etc/hostname', p('links/absolute'));
  await symlink('/does/not/exist', p('links/dangling'));
  await symlink(b('bad\xfftarget'), p('links/odd-target'));
  await run('mknod', [join(dir, 'dev-nodes/null'), 'c', '1', '3']);
  await run('mknod', [join(dir, 'dev-nodes/loop9'), 'b', '7', '9']);
  await run('mknod', [join(dir, 'dev-nodes/big'), 'c', '300', '70000']);
  await run('mkfifo', [join(dir, 'dev-nodes/fifo')]);
  await makeSocket(join(dir, 'dev-nodes/socket'));
  // xattrs: user.* (text and binary), security.capability via setcap, a POSIX ACL (squashfs
  // cannot store it: it must still be in the index).
  await run('setfattr', ['-n', 'user.comment', '-v', 'hello world', join(dir, 'etc/hostname')]);
  await run('setfattr', ['-n', 'user.binary', '-v', '0x00ff10', join(dir, 'etc/hostname')]);
  await run('setfattr', ['-n', 'user.dir', '-v', 'on a directory', join(dir, 'usr/share/data')]);
  await run('setcap', ['cap_net_raw+ep', join(dir, 'usr/bin/cap-tool')]);
  await run('setfacl', ['-m', 'u:1234:r', join(dir, 'etc/owned')]);
  await run('setfacl', ['-d', '-m', 'g:5678:rx', join(dir, 'shared/setgid')]);
  // Odd names.
  for (const [i, name] of Object.values(ODD).entries()) await writeFile(p(name), `odd ${i}\n`);
  await symlink(b('with space'), p('odd/link to space'));
  // Contents of excluded directories (the default excludes /var and /tmp).
  await writeFile(p('var/cache/app/state'), 'excluded\n');
  await writeFile(p('tmp/scratch'), 'excluded\n');
  // Dot files too: mksquashfs's `dir/*` does not match them (fnmatch FNM_PERIOD).
  await writeFile(p('var/.hidden'), 'excluded dot file\n');
  await mkdir(p('tmp/.X11-unix'));
  // Fixed times on everything, children before parents (writing a child changes the parent).
  const all = await walkPaths(dir);
  for (const rel of all.reverse()) {
    const full = rel === '.' ? b(dir) : b(`${dir}/${rel}`);
    const st = await lstat(full);
    if (st.isSymbolicLink()) await lutimes(full, MTIME, MTIME + 7);
    else await utimes(full, MTIME, MTIME + (st.isDirectory() ? 3 : 5));
  }
  return dir;
}

async function run(file: string, args: string[]): Promise<void> {
  const r = await execa(file, args, { reject: false });
  if (r.exitCode !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr}`);
}

/** A Unix socket file left behind: a child binds it and exits without closing (no unlink). */
async function makeSocket(path: string): Promise<void> {
  await execa(NODE, ['-e', `require('net').createServer().listen(process.argv[1], () => process.exit(0))`, path]);
  const st = await lstat(path);
  if (!st.isSocket()) throw new Error(`${path} is not a socket`);
}

/** All paths below `root` as byte strings ('.' first), not following symlinks. */
export async function walkPaths(root: string): Promise<string[]> {
  const out = ['.'];
  const rec = async (rel: string) => {
    const dir = rel === '.' ? b(root) : b(`${root}/${rel}`);
    const names = (await readdir(dir, { encoding: 'buffer' })).map((n) => n.toString('latin1')).sort();
    for (const n of names) {
      const child = rel === '.' ? n : `${rel}/${n}`;
      out.push(child);
      if ((await lstat(b(`${root}/${child}`))).isDirectory()) await rec(child);
    }
  };
  await rec('.');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Describing a tree for comparison

export type Kind = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'socket';

export interface Node {
  type: Kind;
  /** mode & 0o7777 */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  ino: number;
  nlink: number;
  size?: number;
  sha256?: string;
  /** Symlink target as a byte string. */
  target?: string;
  rdev?: number;
}

function kindOf(st: import('node:fs').Stats): Kind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chr';
  if (st.isBlockDevice()) return 'blk';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

/**
 * lstat + content sha256 + symlink target of every path below `root`, except what lies below
 * `skipBelow` (byte-string dirs whose *contents* are left out). Hardlinked content is hashed once.
 */
export async function describeTree(root: string, skipBelow: string[] = []): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const hashed = new Map<number, string>();
  const rec = async (rel: string) => {
    const full = rel === '.' ? b(root) : b(`${root}/${rel}`);
    const st = await lstat(full);
    const type = kindOf(st);
    const node: Node = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), ino: st.ino, nlink: st.nlink };
    if (type === 'file') {
      node.size = st.size;
      node.sha256 = hashed.get(st.ino) ?? (await sha256File(full));
      hashed.set(st.ino, node.sha256);
    } else if (type === 'symlink') {
      node.target = (await readlink(full, { encoding: 'buffer' })).toString('latin1');
    } else if (type === 'chr' || type === 'blk') {
      node.rdev = st.rdev;
    }
    out.set(rel, node);
    if (type === 'dir' && !skipBelow.includes(rel)) {
      const names = (await readdir(full, { encoding: 'buffer' })).map((n) => n.toString('latin1')).sort();
      for (const n of names) await rec(rel === '.' ? n : `${rel}/${n}`);
    }
  };
  await rec('.');
  return out;
}

/**
 * Every extended attribute below `root` (not following symlinks), read with the real getfattr:
 * byte-string path -> name -> base64 value. Paths without xattrs are absent.
 */
export async function xattrsOfTree(root: string): Promise<Map<string, Record<string, string>>> {
  const r = await execa('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', root], { reject: false, encoding: 'buffer', maxBuffer: 1 << 30 });
  // getfattr exits 1 when some file has none it may list; the output is still complete.
  if (r.exitCode !== 0 && r.exitCode !== 1) throw new Error(`getfattr failed: ${Buffer.from(r.stderr as Uint8Array).toString()}`);
  const text = Buffer.from(r.stdout as Uint8Array).toString('latin1');
  const out = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  // getfattr escapes a file name's newline, CR, backslash and unprintable bytes as \ooo.
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const prefix = root.replace(/\/+$/, '');
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const abs = unescape(line.slice('# file: '.length));
      const rel = abs === prefix ? '.' : abs.startsWith(prefix + '/') ? abs.slice(prefix.length + 1) : undefined;
      if (rel === undefined) throw new Error(`getfattr listed ${abs} outside ${root}`);
      current = {};
      out.set(rel, current);
    } else if (line && current) {
      const eq = line.indexOf('=');
      const name = line.slice(0, eq);
      const value = line.slice(eq + 1);
      // base64 values are prefixed with 0s; empty values are printed as ""
      current[name] = value.startsWith('0s') ? value.slice(2) : value === '""' ? '' : Buffer.from(value.replace(/^"|"$/g, ''), 'latin1').toString('base64');
    }
  }
  return out;
}

/** For every non-directory path: the sorted list of paths sharing its inode (its hardlink group). */
export function hardlinkGroups(tree: Map<string, Node>): Map<string, string> {
  const byIno = new Map<number, string[]>();
  for (const [p, n] of tree) {
    if (n.type === 'dir') continue;
    const g = byIno.get(n.ino) ?? [];
    g.push(p);
    byIno.set(n.ino, g);
  }
  const out = new Map<string, string>();
  for (const g of byIno.values()) {
    const key = g.sort().join('\u0000');
    for (const p of g) out.set(p, key);
  }
  return out;
}

/** Byte-string path of a manifest `excluded` entry ('/var' -> 'var'). */
export function excludedRel(e: string): string {
  return e.replace(/^\/+|\/+$/g, '');
}

/** A dir holding only a `node` symlink (and optionally named tools from PATH): a PATH without tools. */
export async function pathWith(dir: string, tools: string[] = []): Promise<string> {
  await mkdir(dir, { recursive: true });
  await symlink(NODE, join(dir, 'node'));
  for (const t of tools) {
    const r = await execa('sh', ['-c', `command -v ${t}`]);
    await symlink(r.stdout.trim(), join(dir, t));
  }
  return dir;
}

