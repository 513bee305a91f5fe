/**
 * Test helpers for the device side: synthetic v1/v2 root trees that differ in every way an
 * update can (content, metadata, types, hardlinks, xattrs, ACLs, odd names), signed archives of
 * them, and an installed loop-file btrfs device mounted like a running system.
 */
import { chmod, chown, link, mkdir, rm, symlink, utimes, writeFile, lutimes, lchown } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { System } from '../../src/core/system.ts';
import { createArchive } from '../../src/tiu/archive/create.ts';
import { generateDevKeys, type DevKeys } from '../../src/tiu/sign/keygen.ts';
import { install } from '../../src/tiu/device/install.ts';
import { mountSystem } from '../../src/snapshot/layout.ts';
import { makeLoopBtrfs, type LoopBtrfs } from './btrfs.ts';
import { readFile } from 'node:fs/promises';
import { DEFAULT_EXCLUDES } from '../../src/tiu/config.ts';
import { expect } from 'vitest';
import { scanTreeToArray } from '../../src/core/fileindex/scan.ts';
import { displayPath, type IndexEntry } from '../../src/core/fileindex/types.ts';
import { protectedMatcher } from '../../src/tiu/device/paths.ts';

export const TIU = join(import.meta.dirname, '../../bin/tiu.js');

/** Runs the real CLI as a user would; never throws. */
export async function cli(args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}) {
  const r = await execa(process.execPath, [TIU, ...args], { reject: false, env: options.env, timeout: options.timeoutMs ?? 300_000 });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

const B = (s: string) => Buffer.from(s, 'latin1');

async function put(root: string, rel: string, content: string | Buffer, mode = 0o644, mtime = 1_600_000_000): Promise<void> {
  const p = join(root, rel);
  await mkdir(join(p, '..'), { recursive: true });
  await writeFile(p, content);
  await chmod(p, mode);
  await utimes(p, mtime, mtime);
}

/**
 * Builds version `v` (1 or 2) of the test tree. Differences v1 -> v2 cover: changed content,
 * same size + same mtime but different content, added, removed, mode/owner/mtime/xattr-only
 * changes, file<->symlink, dir<->file, hardlink group changes, device node and fifo, sparse file,
 * ACL, odd names, and /etc content the merge must handle.
 */
export async function makeTree(sys: System, root: string, v: 1 | 2): Promise<void> {
  await rm(root, { recursive: true, force: true });
  for (const d of ['usr/bin', 'usr/lib', 'usr/share/t', 'etc/ssh', 'var/lib', 'home', 'root', 'tmp', 'run', 'proc', 'sys', 'dev', 'srv', 'opt', 'boot']) await mkdir(join(root, d), { recursive: true });
  await put(root, 'usr/lib/os-release', `NAME="tiu test"\nID=tiutest\nVERSION_ID=${v}.0\nPRETTY_NAME="tiu test ${v}.0"\n`);
  await symlink('../usr/lib/os-release', join(root, 'etc/os-release'));
  await put(root, 'etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n' + (v === 2 ? 'svc:x:998:998::/:/usr/sbin/nologin\n' : ''));
  await put(root, 'etc/group', 'root:x:0:\n' + (v === 2 ? 'svc:x:998:\n' : ''));
  await put(root, 'etc/shadow', 'root:*:19000:0:99999:7:::\n' + (v === 2 ? 'svc:!*:19000::::::\n' : ''), 0o640);
  await put(root, 'etc/ssh/sshd_config', v === 1 ? 'Port 22\nPermitRootLogin yes\nX11Forwarding no\n' : 'Port 22\nPermitRootLogin yes\nX11Forwarding no\nAllowAgentForwarding no\n');
  await put(root, 'etc/hostname', 'tiu-test\n');
  await put(root, 'usr/bin/tool', `#!/bin/sh\necho version ${v}\n`, 0o755);
  // Same size, same mtime, different content: the reproducible-build trap.
  await put(root, 'usr/share/t/trap', v === 1 ? 'AAAA' : 'BBBB', 0o644, 1_650_000_000);
  await put(root, 'usr/share/t/unchanged.bin', Buffer.alloc(300_000, 7));
  if (v === 1) await put(root, 'usr/share/t/removed', 'gone in v2');
  else await put(root, 'usr/share/t/added', 'new in v2');
  // Metadata-only changes.
  await put(root, 'usr/share/t/mode', 'm', v === 1 ? 0o644 : 0o600);
  await put(root, 'usr/share/t/setuid', 's', v === 1 ? 0o755 : 0o4755);
  await put(root, 'usr/share/t/mtime', 't', 0o644, v === 1 ? 1_600_000_000 : 1_700_000_000);
  await put(root, 'usr/share/t/owner', 'o');
  await chown(join(root, 'usr/share/t/owner'), v === 1 ? 0 : 1234, v === 1 ? 0 : 5678);
  await put(root, 'usr/share/t/xattr', 'x');
  await sys.run('setfattr', ['-n', 'user.tiu', '-v', v === 1 ? 'one' : 'two', join(root, 'usr/share/t/xattr')]);
  await put(root, 'usr/bin/cap', 'cap', 0o755);
  if (v === 2) await sys.run('setfattr', ['-n', 'security.capability', '-v', '0sAQAAAgAgAAAAAAAAAAAAAAAAAAA=', join(root, 'usr/bin/cap')]);
  await put(root, 'usr/share/t/acl', 'acl');
  await sys.run('setfacl', ['-m', `u:4321:${v === 1 ? 'r' : 'rw'}`, join(root, 'usr/share/t/acl')]);
  // Type changes.
  if (v === 1) {
    await put(root, 'usr/share/t/f2l', 'file then link');
    await symlink('unchanged.bin', join(root, 'usr/share/t/l2f'));
    await put(root, 'usr/share/t/d2f/inner', 'inside a dir');
    await put(root, 'usr/share/t/f2d', 'file then dir');
  } else {
    await symlink('trap', join(root, 'usr/share/t/f2l'));
    await put(root, 'usr/share/t/l2f', 'link then file');
    await put(root, 'usr/share/t/d2f', 'dir then file');
    await put(root, 'usr/share/t/f2d/inner', 'now a dir');
  }
  // Hardlinks: v1 {h1,h2,h3}; v2 {h1,h2} changed content, h3 separate.
  await put(root, 'usr/share/t/h1', v === 1 ? 'hard' : 'HARD2');
  await link(join(root, 'usr/share/t/h1'), join(root, 'usr/share/t/h2'));
  if (v === 1) await link(join(root, 'usr/share/t/h1'), join(root, 'usr/share/t/h3'));
  else await put(root, 'usr/share/t/h3', 'hard');
  // Special files.
  await sys.run('mknod', [join(root, 'usr/share/t/null'), 'c', '1', v === 1 ? '3' : '5']);
  await sys.run('mknod', [join(root, 'usr/share/t/fifo'), 'p']);
  // Sparse file.
  await sys.run('truncate', ['-s', '8M', join(root, 'usr/share/t/sparse')]);
  await sys.run('sh', ['-c', `printf ${v === 1 ? 'one' : 'two'} | dd of=${join(root, 'usr/share/t/sparse')} bs=1 seek=4000000 conv=notrunc status=none`]);
  // Odd names.
  for (const n of ['with space', '-leading-dash', 'new\nline']) await put(root, `usr/share/t/${n}`, `odd ${n} ${v}`);
  await writeFile(Buffer.concat([B(join(root, 'usr/share/t/')), Buffer.from([0x66, 0xff])]), `non-utf8 ${v}`);
  // Symlink metadata.
  await symlink('tool', join(root, 'usr/bin/tool-link'));
  await lchown(join(root, 'usr/bin/tool-link'), 0, v === 1 ? 0 : 7);
  await lutimes(join(root, 'usr/bin/tool-link'), 1_600_000_000, 1_600_000_000);
  await put(root, 'var/lib/state', 'never in an image');
  // Directory mtimes last (children changed them).
  for (const d of ['usr/share/t', 'usr/bin', 'etc', 'usr']) await utimes(join(root, d), 1_600_000_000, 1_600_000_000);
}

export interface ArchiveSet {
  keys: DevKeys;
  keyringPem: string;
  v1: string;
  v2: string;
  dir: string;
}

/** Dev keys and archives of v1 and v2 of the test tree, in `dir`. */
export async function makeArchives(
  sys: System,
  dir: string,
  options: { compatible?: string; /** Changes each tree before it is packed (e.g. boot files). */ prepare?: (tree: string, v: 1 | 2) => Promise<void> } = {},
): Promise<ArchiveSet> {
  const keys = await generateDevKeys({ outDir: join(dir, 'keys') });
  const keyPem = await readFile(keys.signingKey, 'utf8');
  const certPem = await readFile(keys.signingCert, 'utf8');
  const out: Record<string, string> = {};
  for (const v of [1, 2] as const) {
    const tree = join(dir, `tree-v${v}`);
    await makeTree(sys, tree, v);
    await options.prepare?.(tree, v);
    out[`v${v}`] = join(dir, `v${v}.tiu`);
    await createArchive(sys, {
      source: tree, output: out[`v${v}`]!, keyPem, certPem,
      compatible: options.compatible ?? 'test-x86_64', version: `${v}.0`,
      compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES, sourceDateEpoch: 1_700_000_000 + v,
    });
  }
  return { keys, keyringPem: await readFile(keys.keyring, 'utf8'), v1: out.v1!, v2: out.v2!, dir };
}

export interface InstalledDevice extends LoopBtrfs {
  root: string;
  sys: System;
}

/** A loop btrfs with `archive` installed as snapshot 1, mounted like a running system at `root`. */
export async function installedDevice(sys: System, archive: string, keyringPem: string, options: { sizeMiB?: number } = {}): Promise<InstalledDevice> {
  const fs = await makeLoopBtrfs({ sizeMiB: options.sizeMiB ?? 600, sys });
  try {
    await install(sys, { archive, top: fs.mount, keyringPem, bootloader: 'none' });
    const root = join(fs.dir, 'root');
    await mkdir(root);
    await mountSystem(sys, fs.loopDev, root);
    return { ...fs, root, sys, [Symbol.asyncDispose]: fs[Symbol.asyncDispose] };
  } catch (e) {
    await fs[Symbol.asyncDispose]();
    throw e;
  }
}

function normalizeEntry(e: IndexEntry): Record<string, unknown> {
  return { ...e, xattrs: e.xattrs && Object.keys(e.xattrs).length ? Object.fromEntries(Object.entries(e.xattrs).sort()) : undefined };
}

/**
 * Every entry of a snapshot (content hashed) against an image index, /etc (merged) and tiu's
 * own state aside. Returns the number of entries compared.
 */
export async function expectSnapshotEquals(sys: System, snapDir: string, index: IndexEntry[]): Promise<number> {
  const { entries } = await scanTreeToArray(sys, snapDir, { exclude: DEFAULT_EXCLUDES });
  const isProtected = protectedMatcher(DEFAULT_EXCLUDES);
  const skip = (p: string) => p === 'etc' || p.startsWith('etc/') || (isProtected(p) && !index.some((e) => e.path === p)) || p.startsWith('usr/lib/tiu/image/') || p.startsWith('usr/lib/tiu/vendor-etc');
  const want = new Map(index.filter((e) => !skip(e.path)).map((e) => [e.path, normalizeEntry(e)]));
  const got = new Map(entries.filter((e) => !skip(e.path)).map((e) => [e.path, normalizeEntry(e)]));
  expect([...got.keys()].map(displayPath).sort()).toEqual([...want.keys()].map(displayPath).sort());
  for (const [p, w] of want) expect({ path: displayPath(p), ...got.get(p)! }).toEqual({ path: displayPath(p), ...w });
  return want.size;
}
