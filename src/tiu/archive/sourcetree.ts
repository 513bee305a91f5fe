/**
 * The build side's input: a root tree directory, or a tarball unpacked into a private temp dir.
 * Also reads what the manifest says about the tree (os-release, architecture).
 */
import { lstat, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parse } from 'ini';
import { TiuError, fromErrno } from '../../core/errors.ts';
import { resolveInTree } from '../../core/treepath.ts';
import type { System } from '../../core/system.ts';

export interface SourceTree extends AsyncDisposable {
  dir: string;
  fromTarball: boolean;
}

const TAR_RE = /\.(tar|tar\.gz|tgz|tar\.xz|txz|tar\.zst|tar\.zstd|tzst)$/;

/** Resolves a directory or unpacks a tarball (owners, modes, xattrs, ACLs kept); disposable. */
export async function openSourceTree(sys: System, source: string, options: { tmpdir?: string } = {}): Promise<SourceTree> {
  let st;
  try {
    st = await lstat(source);
  } catch (e) {
    throw fromErrno(e, `cannot read root tree ${source}`) ?? e;
  }
  if (st.isDirectory()) return { dir: source, fromTarball: false, [Symbol.asyncDispose]: async () => {} };
  if (!st.isFile() || !TAR_RE.test(source)) {
    throw new TiuError('INPUT_INVALID', `${source} is neither a directory nor a tarball (.tar, .tar.gz, .tar.xz, .tar.zst)`, { hint: 'give a root tree directory or a tarball' });
  }
  const dir = await mkdtemp(join(options.tmpdir ?? tmpdir(), 'tiu-rootfs-'));
  const dispose = () => rm(dir, { recursive: true, force: true });
  try {
    sys.log.info(`unpacking ${source}`);
    await sys.run('tar', ['--extract', '--file', source, '--directory', dir, '--preserve-permissions', '--same-owner', '--numeric-owner', '--xattrs', '--xattrs-include=*', '--acls', '--auto-compress']);
  } catch (e) {
    await dispose();
    throw e instanceof TiuError ? new TiuError(e.code === 'TOOL_FAILED' ? 'INPUT_INVALID' : e.code, `cannot unpack ${source}: ${e.message}`, { hint: 'check the tarball is complete and readable', cause: e }) : e;
  }
  return { dir, fromTarball: true, [Symbol.asyncDispose]: dispose };
}


/** Parses os-release (etc/os-release, else usr/lib/os-release) of a tree; {} if none. */
export async function readOsRelease(root: string): Promise<Record<string, string>> {
  for (const p of ['etc/os-release', 'usr/lib/os-release']) {
    let text: string;
    try {
      const host = await resolveInTree(root, p);
      if (host === undefined) continue;
      text = await readFile(host, 'utf8');
    } catch {
      continue;
    }
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(parse(text))) {
      if (/^[A-Z0-9_]{1,64}$/.test(k) && typeof v === 'string') out[k] = v.slice(0, 512);
    }
    return out;
  }
  return {};
}

const ELF_MACHINES: Record<number, string> = { 0x03: 'i686', 0x3e: 'x86_64', 0xb7: 'aarch64', 0x28: 'armv7hl', 0xf3: 'riscv64', 0x15: 'ppc64le', 0x16: 's390x' };

/** The tree's architecture from the ELF header of its shell or env binary; undefined if none found. */
export async function detectArch(root: string): Promise<string | undefined> {
  for (const p of ['usr/bin/env', 'bin/env', 'usr/bin/sh', 'bin/sh', 'usr/bin/busybox', 'bin/busybox']) {
    try {
      const host = await resolveInTree(root, p);
      if (host === undefined) continue;
      const fh = await open(host, 'r');
      try {
        const b = Buffer.alloc(20);
        await fh.read(b, 0, 20, 0);
        if (b.readUInt32BE(0) !== 0x7f454c46) continue;
        return ELF_MACHINES[b[5] === 2 ? b.readUInt16BE(18) : b.readUInt16LE(18)];
      } finally {
        await fh.close();
      }
    } catch {
      continue;
    }
  }
  return undefined;
}
