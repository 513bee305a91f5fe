/** Reading the superblock of an image file: a bounded 96-byte read, then the strict parser. */
import { open } from 'node:fs/promises';
import { fromErrno } from '../core/errors.ts';
import { readSuperblock, SUPERBLOCK_SIZE, type SquashfsSuperblock } from './superblock.ts';

/**
 * Reads and validates the superblock of the squashfs filesystem at `offset` in file `path`.
 * Returns it with the file's size. Throws ARCHIVE_FORMAT / ARCHIVE_TRUNCATED for a bad image,
 * INPUT_NOT_FOUND / PERMISSION / IO (via fromErrno) when the file cannot be read.
 */
export async function readImageInfo(path: string, offset = 0): Promise<{ sb: SquashfsSuperblock; size: number }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fromErrno(err, `squashfs image ${path}`) ?? err;
  }
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(SUPERBLOCK_SIZE);
    const { bytesRead } = await fh.read(buf, 0, SUPERBLOCK_SIZE, offset);
    return { sb: readSuperblock(buf.subarray(0, bytesRead), { fileSize: Math.max(0, size - offset) }), size };
  } catch (err) {
    throw fromErrno(err, `squashfs image ${path}`) ?? err;
  } finally {
    await fh.close();
  }
}
