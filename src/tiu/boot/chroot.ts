/**
 * Running a tool inside a snapshot (dracut, grub-mkconfig) the way transactional-update does:
 * chroot into it from a PRIVATE mount namespace in which the snapshot is bind-mounted onto
 * itself (so `/` in the chroot is a mount point: grub-probe needs that) and /dev, /proc, /sys
 * come from the host, /run and /tmp are fresh tmpfs. Every mount lives only in that namespace,
 * so nothing leaks into the host's mount table, and all of it disappears with the namespace's
 * last process, even if tiu is killed.
 *
 * The shell script is a constant; the snapshot path and the command are positional arguments,
 * never interpolated into it.
 */
import { lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { RunOptions, RunResult, System } from '../../core/system.ts';
import { TiuError } from '../../core/errors.ts';

/**
 * `sh -c SCRIPT -- <snapshot dir> <command> [args...]`. `set -e`: any failing mount aborts before
 * the chroot. /dev and /sys recursively (devpts, efivarfs, cgroups), /proc fresh for the pid view.
 */
export const CHROOT_SCRIPT = [
  'set -e',
  'root=$1',
  'shift',
  'mount --bind -- "$root" "$root"',
  'mount --rbind -- /dev "$root/dev"',
  'mount -t proc -o nosuid,nodev,noexec proc "$root/proc"',
  'mount --rbind -- /sys "$root/sys"',
  'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"',
  'mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"',
  'exec chroot -- "$root" "$@"',
].join('\n');

/** Directories the script mounts on; they must exist in the snapshot. */
export const CHROOT_MOUNTPOINTS = ['dev', 'proc', 'sys', 'run', 'tmp'] as const;

/** The argv for {@link runInSnapshot} (pure, for tests and --debug output). */
export function chrootArgv(snapshotDir: string, command: readonly string[]): string[] {
  if (!snapshotDir.startsWith('/')) throw new TiuError('INTERNAL', `snapshot path must be absolute: ${snapshotDir}`);
  if (command.length === 0) throw new TiuError('INTERNAL', 'no command to run in the snapshot');
  return ['--mount', '--propagation', 'private', '--', 'sh', '-c', CHROOT_SCRIPT, 'tiu-chroot', snapshotDir, ...command];
}

/** A clean environment for tools in the snapshot: the host's PATH and locale do not apply there. */
export const CHROOT_ENV: Record<string, string | undefined> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  TMPDIR: '/tmp',
  HOME: '/root',
  LC_ALL: 'C',
  LANG: undefined,
  LANGUAGE: undefined,
};

/** Creates the mount point directories that are missing (an image may leave them out). */
export async function ensureMountpoints(snapshotDir: string): Promise<void> {
  for (const d of CHROOT_MOUNTPOINTS) {
    const p = join(snapshotDir, d);
    const st = await lstat(p).catch(() => undefined);
    if (st?.isDirectory()) continue;
    if (st) throw new TiuError('BOOT_FAILED', `${p} is not a directory; cannot mount /${d} there to run tools in the snapshot`, { hint: 'the image must contain /dev, /proc, /sys, /run and /tmp as directories' });
    await mkdir(p, { mode: d === 'tmp' ? 0o1777 : 0o755 });
  }
}

/**
 * Runs `command` (argv, resolved inside the snapshot) chrooted into `snapshotDir` in a private
 * mount namespace. Throws TOOL_FAILED with the tool's stderr on failure (unless allowFailure).
 */
export async function runInSnapshot(sys: System, snapshotDir: string, command: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  await ensureMountpoints(snapshotDir);
  return sys.run('unshare', chrootArgv(snapshotDir, command), { ...options, env: { ...CHROOT_ENV, ...options.env } });
}
