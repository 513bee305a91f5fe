/**
 * The squashfs image at the start of a .tiu archive: its size (read from the squashfs superblock,
 * independently of tiu's own reader) and a read-only loop mount of it.
 */
import { mkdir, open } from 'node:fs/promises';
import type { System } from '../../src/core/system.ts';

/** Squashfs `bytes_used` (u64 LE at offset 40) rounded up to 4096 = tiu's verity data size. Pure. */
export function dataSizeFromSuperblock(sb: Buffer): number {
  if (sb.length < 48 || sb.readUInt32LE(0) !== 0x73717368) throw new Error('not a squashfs image (no hsqs magic)');
  const used = Number(sb.readBigUInt64LE(40));
  return Math.ceil(used / 4096) * 4096;
}

/** Verity data size of the archive's image (the bytes `tiu verify` hashes). */
export async function imageDataSize(archive: string): Promise<number> {
  const fh = await open(archive, 'r');
  try {
    const buf = Buffer.alloc(96);
    await fh.read(buf, 0, 96, 0);
    return dataSizeFromSuperblock(buf);
  } finally {
    await fh.close();
  }
}

/** Mounts the archive's squashfs read-only at `mnt`; dispose to unmount. */
export async function mountImage(sys: System, archive: string, mnt: string): Promise<AsyncDisposable & { dir: string }> {
  const size = await imageDataSize(archive);
  await mkdir(mnt, { recursive: true });
  await sys.run('mount', ['-t', 'squashfs', '-o', `ro,loop,sizelimit=${size}`, archive, mnt]);
  return {
    dir: mnt,
    async [Symbol.asyncDispose]() {
      await sys.run('umount', [mnt], { allowFailure: true });
    },
  };
}
