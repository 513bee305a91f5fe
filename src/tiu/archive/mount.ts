/**
 * Mounting the image part of an opened archive, read-only, from the file descriptor tiu holds.
 *
 * With device-mapper (a normal distribution kernel) the image is mounted through dm-verity with
 * the signed root hash, so the kernel checks every block as it is read. Without it (this build
 * host's kernel), the caller must have verified the whole image in userspace first
 * ({@link OpenedArchive.verifyData}); the loop device is then made from /proc/<pid>/fd/<n>, i.e.
 * from the very file that was verified, not from a path that could have been swapped.
 */
import { access, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import type { OpenedArchive } from './open.ts';

export interface MountedImage extends AsyncDisposable {
  /** Where the image's root tree is visible (read-only). */
  dir: string;
  /** 'dm-verity' when the kernel verifies reads, 'userspace' when tiu verified beforehand. */
  verification: 'dm-verity' | 'userspace';
}

/** True when this kernel can activate dm-verity (device-mapper present, veritysetup installed). */
export async function hasDeviceMapper(sys: System): Promise<boolean> {
  if (process.env.TIU_NO_DM === '1') return false;
  try {
    await access('/dev/mapper/control');
  } catch {
    return false;
  }
  return (await sys.which('veritysetup')) !== undefined;
}

/**
 * Mounts the archive's image read-only. Pass `verifiedInUserspace: true` only after
 * `archive.verifyData()` succeeded on this same open archive.
 */
export async function mountImage(sys: System, archive: OpenedArchive, options: { verifiedInUserspace: boolean; tmp?: string }): Promise<MountedImage> {
  const dir = await mkdtemp(join(options.tmp ?? tmpdir(), 'tiu-image-'));
  const v = archive.manifest.verity;
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  const dispose = async () => {
    for (const c of cleanups.reverse()) await c().catch((e) => sys.log.warn(`cleanup: ${(e as Error).message}`));
  };
  try {
    // A read-only loop device over the whole archive file, from our own file descriptor.
    const loop = (await sys.run('losetup', ['--find', '--show', '--read-only', archive.fdPath()])).stdout.trim();
    cleanups.push(() => sys.run('losetup', ['--detach', loop], { allowFailure: true }));
    let device = loop;
    let verification: MountedImage['verification'] = 'userspace';
    if (await hasDeviceMapper(sys)) {
      const name = `tiu-${randomBytes(6).toString('hex')}`;
      await sys.run('veritysetup', [
        'open', loop, name, loop, v.rootHash,
        '--no-superblock', '--format=1', '--hash=sha256',
        `--data-block-size=${v.dataBlockSize}`, `--hash-block-size=${v.hashBlockSize}`,
        `--data-blocks=${v.dataSize / v.dataBlockSize}`, `--hash-offset=${v.hashOffset}`, `--salt=${v.salt}`,
      ]);
      cleanups.push(() => sys.run('veritysetup', ['close', name], { allowFailure: true }));
      device = `/dev/mapper/${name}`;
      verification = 'dm-verity';
    } else if (!options.verifiedInUserspace) {
      throw new TiuError('INTERNAL', 'refusing to mount an image that was not verified (no device-mapper and no userspace verification)');
    }
    await sys.run('mount', ['-t', 'squashfs', '-o', 'ro,nodev,nosuid', device, dir]);
    cleanups.push(() => sys.run('umount', [dir], { allowFailure: true }));
    return { dir, verification, [Symbol.asyncDispose]: dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}
