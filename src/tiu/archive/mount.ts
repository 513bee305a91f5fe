/**
 * Mounting the image part of an opened archive, read-only, from the file descriptor tiu holds.
 *
 * With device-mapper (a normal distribution kernel) the image is mounted through dm-verity with
 * the signed root hash, so the kernel checks every block as it is read. Without it (this build
 * host's kernel), the caller must have verified the whole image in userspace first
 * ({@link OpenedArchive.verifyData}); the loop device is then made from /proc/<pid>/fd/<n>, i.e.
 * from the very file that was verified, not from a path that could have been swapped.
 *
 * Every mount is registered with the top-level guard (src/tiu/guard.ts) while it exists, so an
 * internal error or an unhandled SIGINT/SIGTERM unmounts it (and frees its loop device) too.
 */
import { access, mkdir, readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { ensurePrivateDir } from '../rundir.ts';
import { randomBytes } from 'node:crypto';
import { TiuError } from '../../core/errors.ts';
import { processAlive, type System } from '../../core/system.ts';
import { guardDisposable, testPause } from '../guard.ts';
import type { OpenedArchive } from './open.ts';
import { readTiuEnv } from '../../core/env.ts';

export interface MountedImage extends AsyncDisposable {
  /** Where the image's root tree is visible (read-only). */
  dir: string;
  /** 'dm-verity' when the kernel verifies reads, 'userspace' when tiu verified beforehand. */
  verification: 'dm-verity' | 'userspace';
}

/** True when this kernel can activate dm-verity (device-mapper present, veritysetup installed). */
export async function hasDeviceMapper(sys: System): Promise<boolean> {
  if (readTiuEnv().noDm) return false;
  // /dev/mapper/control can exist without a device-mapper in the kernel: ask the kernel.
  try {
    await access('/dev/mapper/control');
    if (!/\bdevice-mapper\b/.test(await readFile('/proc/misc', 'utf8'))) return false;
  } catch {
    return false;
  }
  return (await sys.which('veritysetup')) !== undefined;
}

/**
 * Mounts the archive's image read-only. Pass `verifiedInUserspace: true` only after
 * `archive.verifyData()` succeeded on this same open archive.
 */
/** Where image mounts live: `<dir>/image-<pid>-<random>`, so stale ones can be recognized. */
function dirnameOf(p: string): string {
  return p.slice(0, p.lastIndexOf('/')) || '/';
}

export function mountBase(): string {
  return `${readTiuEnv().runDir}/mnt`;
}

/**
 * Unmounts image mounts (and dm-verity devices) left by tiu processes that died (SIGKILL, power
 * is not an issue: mounts do not survive a reboot). Loop devices detach themselves (autoclear).
 */
export async function cleanupStaleMounts(sys: System): Promise<void> {
  const base = mountBase();
  let info: string;
  try {
    info = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  for (const line of info.split('\n')) {
    const target = line.split(' ')[4];
    const m = target?.match(/\/image-(\d+)-[0-9a-f]+$/);
    if (!target || !m || !target.startsWith(base + '/') || processAlive(Number(m[1]))) continue;
    sys.log.info(`unmounting ${target} left by tiu process ${m[1]}, which is gone`);
    await sys.run('umount', ['-l', target], { allowFailure: true });
    await rm(target, { recursive: false, force: true }).catch(() => {});
  }
  // Their empty mount points (the mount is gone, the process was killed before removing them).
  for (const name of await readdir(base).catch(() => [] as string[])) {
    const m = name.match(/^image-(\d+)-[0-9a-f]+$/);
    if (m && !processAlive(Number(m[1]))) await rmdir(`${base}/${name}`).catch(() => {});
  }
  for (const name of await readdir('/dev/mapper').catch(() => [] as string[])) {
    const m = name.match(/^tiu-(\d+)-[0-9a-f]+$/);
    if (m && !processAlive(Number(m[1]))) await sys.run('veritysetup', ['close', name], { allowFailure: true });
  }
}

/**
 * Mounts the archive's image read-only. Pass `verifiedInUserspace: true` only after
 * `archive.verifyData()` succeeded on this same open archive.
 */
export async function mountImage(sys: System, archive: OpenedArchive, options: { verifiedInUserspace: boolean }): Promise<MountedImage> {
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  // The run directory and mnt/ are checked to be real, private directories; the mount point is
  // made fresh (mkdir fails on anything already there, a symlink included).
  await ensurePrivateDir(dirnameOf(mountBase()), 0o755);
  await ensurePrivateDir(mountBase(), 0o700);
  const dir = `${mountBase()}/image-${tag}`;
  await mkdir(dir, { mode: 0o700 });
  const v = archive.manifest.verity;
  // rmdir, not rm -r: if the unmount failed, nothing below the mount point is deleted.
  // Each step's undo is pushed as soon as the step is done; the object is registered with the
  // top-level guard from the start, so a death at any point after mkdir undoes what was done.
  const cleanups: (() => Promise<unknown>)[] = [() => rmdir(dir)];
  const undo = async (from = 0) => {
    for (const c of cleanups.splice(from).reverse()) await c().catch((e) => sys.log.warn(`cleanup: ${(e as Error).message}`));
  };
  const mounted = guardDisposable<MountedImage>({ dir, verification: 'userspace', [Symbol.asyncDispose]: () => undo() });
  try {
    if (await hasDeviceMapper(sys)) {
      // The kernel checks every block against the signed root hash as it is read.
      const dmFrom = cleanups.length;
      try {
        const loop = (await sys.run('losetup', ['--find', '--show', '--read-only', archive.fdPath()])).stdout.trim();
        cleanups.push(() => sys.run('losetup', ['--detach', loop], { allowFailure: true }));
        const name = `tiu-${tag}`;
        await sys.run('veritysetup', [
          'open', loop, name, loop, v.rootHash,
          '--no-superblock', '--format=1', '--hash=sha256',
          `--data-block-size=${v.dataBlockSize}`, `--hash-block-size=${v.hashBlockSize}`,
          `--data-blocks=${v.dataSize / v.dataBlockSize}`, `--hash-offset=${v.hashOffset}`, `--salt=${v.salt}`,
        ]);
        cleanups.push(() => sys.run('veritysetup', ['close', name], { allowFailure: true }));
        await sys.run('mount', ['-t', 'squashfs', '-o', 'ro,nodev,nosuid', `/dev/mapper/${name}`, dir]);
        cleanups.push(() => sys.run('umount', [dir], { allowFailure: true }));
        mounted.verification = 'dm-verity';
        await testPause('mounted');
        return mounted;
      } catch (e) {
        await undo(dmFrom);
        // A kernel without the dm-verity target: fall back only if the data was verified already.
        if (!options.verifiedInUserspace) throw e;
        sys.log.warn(`dm-verity activation failed (${(e as Error).message}); using the userspace-verified image`);
      }
    }
    if (!options.verifiedInUserspace) {
      throw new TiuError('INTERNAL', 'refusing to mount an image that was not verified (no device-mapper and no userspace verification)');
    }
    // A read-only loop device over our own open file descriptor (the file that was verified);
    // mount's loop option sets autoclear, so the loop device goes away with the mount.
    await sys.run('mount', ['-t', 'squashfs', '-o', `ro,nodev,nosuid,loop,sizelimit=${v.dataSize}`, archive.fdPath(), dir]);
    cleanups.push(() => sys.run('umount', [dir], { allowFailure: true }));
    await testPause('mounted');
    return mounted;
  } catch (e) {
    await mounted[Symbol.asyncDispose]();
    throw e;
  }
}
