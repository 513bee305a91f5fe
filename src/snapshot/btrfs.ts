/**
 * Thin functions over the real `btrfs` CLI, run through {@link System}.
 *
 * Each function runs one command (argv, never a shell string) and parses its output with the
 * strict parsers of `btrfs-parse.ts`. Paths are host paths on a mounted btrfs.
 */
import { accessSync, constants, lstatSync } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import {
  parseDuExclusive,
  parseFilesystemUuid,
  parseGetDefault,
  parseSubvolumeIds,
  parseSubvolumeList,
  parseSubvolumeShow,
  type SubvolumeInfo,
  type SubvolumeListEntry,
} from './btrfs-parse.ts';

export type { SubvolumeInfo, SubvolumeListEntry } from './btrfs-parse.ts';

/** A subvolume from {@link listSubvolumes}, with its read-only flag. */
export interface Subvolume extends SubvolumeListEntry {
  readonly: boolean;
}

/** f_type magic numbers (linux/magic.h) under the names `stat -f -c %T` prints for them. */
const FS_MAGIC: Record<number, string> = {
  0x9123683e: 'btrfs', 0xef53: 'ext2/ext3', 0x01021994: 'tmpfs', 0x58465342: 'xfs', 0x794c7630: 'overlayfs',
  0x73717368: 'squashfs', 0x6969: 'nfs', 0x4d44: 'msdos', 0x9fa0: 'proc', 0xf2f52010: 'f2fs', 0x2fc12fc1: 'zfs',
};

/**
 * The filesystem type of the filesystem holding `path`, e.g. 'btrfs': from statfs(2) in-process
 * (every command calls this first: a child process costs start-up time), `stat -f -c %T` only
 * for a type not in the table above.
 */
export async function filesystemType(sys: System, path: string): Promise<string> {
  try {
    const known = FS_MAGIC[(await statfs(path)).type];
    // ext2, ext3 and ext4 share one magic number: only the mount table tells them apart.
    if (known === 'ext2/ext3') return await extName(sys, path);
    if (known) return known;
  } catch (err) {
    sys.log.debug(`statfs ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TiuError('INPUT_NOT_FOUND', `${path} does not exist`, { hint: 'check the path given with --root' });
    }
  }
  const r = await sys.run('stat', ['-f', '-c', '%T', path], { allowFailure: true });
  if (r.exitCode !== 0) {
    if (/No such file or directory/.test(r.stderr)) {
      throw new TiuError('INPUT_NOT_FOUND', `${path} does not exist`, { hint: 'check the path given with --root' });
    }
    throw new TiuError('TOOL_FAILED', `cannot find the filesystem type of ${path}: ${r.stderr.trim()}`);
  }
  const type = r.stdout.trim();
  return type === 'ext2/ext3' ? extName(sys, path) : type;
}

/** ext2, ext3 or ext4, from the mount table (statfs has one magic number for all three). */
async function extName(sys: System, path: string): Promise<string> {
  const m = await sys.run('findmnt', ['-n', '-o', 'FSTYPE', '-T', path], { allowFailure: true });
  return m.exitCode === 0 && /^[a-z0-9.]+$/.test(m.stdout.trim()) ? m.stdout.trim() : 'ext2/ext3';
}

/** Throws ROOT_NOT_BTRFS unless `path` is on a btrfs filesystem. No side effects. */
export async function assertBtrfs(sys: System, path: string): Promise<void> {
  const type = await filesystemType(sys, path);
  if (type !== 'btrfs') {
    throw new TiuError('ROOT_NOT_BTRFS', `${path} is not on btrfs (it is ${type})`, {
      hint: 'tiu needs a btrfs root with snapshots in /.snapshots; pass --root <dir> to work on a mounted btrfs',
    });
  }
}

let changes = 0;

/**
 * A counter of the subvolume changes this process made (create, snapshot, delete, read-only
 * flag, default) through this module or snapper: a reader may reuse what it listed while the
 * counter stands still (see the snapshot store).
 */
export function subvolumeChanges(): number {
  return changes;
}

/** Runs a command that changes subvolumes; the counter moves before and after (also on failure). */
export async function changing<T>(run: () => Promise<T>): Promise<T> {
  changes++;
  try {
    return await run();
  } finally {
    changes++;
  }
}

/** btrfs-progs' line with a subvolume's generation (`btrfs subvolume find-new <path> <huge>`). */
const TRANSID_MARKER = /^transid marker was (\d+)$/m;

/** The generation in `btrfs subvolume find-new` output. Pure. */
export function parseTransidMarker(out: string): number {
  const m = TRANSID_MARKER.exec(out);
  const n = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(n)) throw new TiuError('TOOL_FAILED', `unexpected output of 'btrfs subvolume find-new': '${out.trim().slice(0, 200)}'`);
  return n;
}

/**
 * Seals the subvolume at `path`: flushes the filesystem (so that no later writeback of its data
 * changes it), makes it read-only, and returns its btrfs generation (the root item's, as
 * `btrfs subvolume show` prints it). One child process: sh runs `sync -f`, `btrfs property set`
 * and `btrfs subvolume find-new` in a row, stopping at the first that fails.
 */
export async function sealSubvolume(sys: System, path: string): Promise<number> {
  const script = 'sync -f -- "$1" && btrfs property set -ts -- "$1" ro true && btrfs subvolume find-new -- "$1" 9223372036854775807';
  const r = await changing(() => sys.run('sh', ['-c', script, 'sh', path]));
  return parseTransidMarker(r.stdout);
}

/** Creates an empty subvolume at `path` (the parent directory must exist). */
export async function createSubvolume(sys: System, path: string): Promise<void> {
  await changing(() => sys.run('btrfs', ['subvolume', 'create', path]));
}

/** Snapshots subvolume `src` to the new path `dst` (writable unless `readonly`). Not recursive. */
export async function snapshotSubvolume(sys: System, src: string, dst: string, options: { readonly?: boolean } = {}): Promise<void> {
  await changing(() => sys.run('btrfs', ['subvolume', 'snapshot', ...(options.readonly ? ['-r'] : []), src, dst]));
}

/**
 * Deletes the subvolume at `path`, read-only or not (root may always delete). With `commitAfter`
 * waits for the transaction commit, so the deletion survives a crash. Fails if the subvolume
 * contains other subvolumes.
 */
export async function deleteSubvolume(sys: System, path: string, options: { commitAfter?: boolean } = {}): Promise<void> {
  await changing(() => sys.run('btrfs', ['subvolume', 'delete', ...(options.commitAfter ? ['--commit-after'] : []), path]));
}

/** Sets or clears the read-only property of the subvolume at `path`. */
export async function setReadonly(sys: System, path: string, readonly: boolean): Promise<void> {
  await changing(() => sys.run('btrfs', ['property', 'set', '-ts', path, 'ro', readonly ? 'true' : 'false']));
}

/** Whether the subvolume at `path` is read-only (`btrfs property get -ts <path> ro`). */
export async function isReadonly(sys: System, path: string): Promise<boolean> {
  const out = (await sys.run('btrfs', ['property', 'get', '-ts', path, 'ro'])).stdout.trim();
  if (out === 'ro=true') return true;
  if (out === 'ro=false') return false;
  throw new TiuError('TOOL_FAILED', `unexpected output of 'btrfs property get': '${out}'`);
}

/** Facts about the subvolume whose root is `path`; TOOL_FAILED if `path` is not a subvolume root. */
export async function subvolumeInfo(sys: System, path: string): Promise<SubvolumeInfo> {
  return parseSubvolumeShow((await sys.run('btrfs', ['subvolume', 'show', path])).stdout);
}

/** Like {@link subvolumeInfo}, but undefined when `path` is not the root of a subvolume. */
export async function trySubvolumeInfo(sys: System, path: string): Promise<SubvolumeInfo | undefined> {
  const r = await sys.run('btrfs', ['subvolume', 'show', path], { allowFailure: true });
  if (r.exitCode !== 0) return undefined;
  return parseSubvolumeShow(r.stdout);
}

/** The default subvolume of the filesystem mounted at `mount`: id and path from the top level. */
export async function getDefaultSubvolume(sys: System, mount: string): Promise<{ id: number; path: string }> {
  return parseGetDefault((await sys.run('btrfs', ['subvolume', 'get-default', mount])).stdout);
}

/** Makes the subvolume whose root is `path` the default of its filesystem (what boots next). */
export async function setDefaultSubvolumeAt(sys: System, path: string): Promise<void> {
  await changing(() => sys.run('btrfs', ['subvolume', 'set-default', path]));
}

/** Makes subvolume `id` the default of the filesystem mounted at `mount` (what boots next). */
export async function setDefaultSubvolume(sys: System, mount: string, id: number): Promise<void> {
  await changing(() => sys.run('btrfs', ['subvolume', 'set-default', String(id), mount]));
}

/** All subvolumes of the filesystem mounted at `mount` (paths from the top level), with read-only flags. */
export async function listSubvolumes(sys: System, mount: string): Promise<Subvolume[]> {
  // Both listings at once: each is a child process, and they are independent.
  const [all, readonly] = await Promise.all([listSubvolumeEntries(sys, mount), sys.run('btrfs', ['subvolume', 'list', '-r', mount])]);
  const ro = new Set(parseSubvolumeIds(readonly.stdout));
  return all.map((s) => ({ ...s, readonly: ro.has(s.id) }));
}

/** All subvolumes of the filesystem mounted at `mount`, without read-only flags (one child process). */
export async function listSubvolumeEntries(sys: System, mount: string): Promise<SubvolumeListEntry[]> {
  return parseSubvolumeList((await sys.run('btrfs', ['subvolume', 'list', '-u', '-q', mount])).stdout);
}

/**
 * Whether the subvolume whose root is `path` is read-only, without a child process: access(2)
 * for writing fails with EROFS on a read-only subvolume (btrfs checks that before permissions).
 * Meaningful only where the mount and the filesystem are read-write, where EROFS has no other
 * cause. Undefined when the answer is something else (the path is gone, ...).
 */
export function readonlyByAccess(path: string): boolean | undefined {
  try {
    accessSync(path, constants.W_OK);
    return false;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return true;
    if (code === 'EACCES' || code === 'EPERM') return false;
    return undefined;
  }
}

/**
 * Bytes only this subvolume (or directory) references, from `btrfs filesystem du -s --raw`.
 * Works without quotas (it walks the files and their extents, so it takes time on big trees).
 */
export async function exclusiveBytes(sys: System, path: string): Promise<number> {
  return parseDuExclusive((await sys.run('btrfs', ['filesystem', 'du', '-s', '--raw', path])).stdout);
}

/** The UUID (fsid) of the btrfs holding `path`, as in `UUID=` of fstab. */
export async function filesystemUuid(sys: System, path: string): Promise<string> {
  return parseFilesystemUuid((await sys.run('btrfs', ['filesystem', 'show', path])).stdout);
}

/**
 * The filesystem's transaction generation after committing what is pending
 * (`btrfs filesystem sync`, then /sys/fs/btrfs/<fsid>/generation). Contract: every change made
 * before the call has a generation <= the result, every change made after it a greater one, so
 * `subvolumeInfo(p).generation > g` tells whether subvolume p changed since. Side effect: a commit.
 */
export async function fsGeneration(sys: System, path: string): Promise<number> {
  const fsid = await filesystemUuid(sys, path);
  await sys.run('btrfs', ['filesystem', 'sync', path]);
  const text = (await readFile(`/sys/fs/btrfs/${fsid}/generation`, 'utf8')).trim();
  if (!/^\d+$/.test(text)) throw new TiuError('TOOL_FAILED', `unexpected btrfs generation '${text}' in sysfs`);
  return Number(text);
}

/** {@link isSubvolumeRoot} for callers that check many paths (one lstat each, no promise). */
export function isSubvolumeRootSync(path: string): boolean {
  try {
    const st = lstatSync(path, { throwIfNoEntry: false });
    return st !== undefined && st.isDirectory() && st.ino === 256;
  } catch {
    return false;
  }
}

/** Whether `path` is the root of a btrfs subvolume (inode 256), without running btrfs. */
export async function isSubvolumeRoot(path: string): Promise<boolean> {
  return isSubvolumeRootSync(path);
}
