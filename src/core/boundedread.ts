/**
 * Bounded reads of the on-device files tiu parses (info.xml, lock info, recorded manifests,
 * state): a regular file only (a FIFO would block, a device would never end), not through a
 * symlink, and not larger than the caller's limit.
 */
import { constants as C } from 'node:fs';
import { open } from 'node:fs/promises';
import { TiuError } from './errors.ts';

function kindOf(st: import('node:fs').Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Reads a whole regular file of at most `max` bytes. Opened with O_NOFOLLOW|O_NONBLOCK (a FIFO
 * cannot hang the open) and checked with fstat on the open descriptor. Errors: FILE_INVALID for
 * a symlink, a non-regular file or one over the limit; errno errors (ENOENT...) are passed on.
 */
export async function readBounded(path: string | Buffer, o: { max: number; what: string }): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new TiuError('FILE_INVALID', `${o.what} is a symlink; tiu reads its state files only directly`, { cause: e, hint: 'remove the link' });
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TiuError('FILE_INVALID', `${o.what} is ${kindOf(st)}, not a regular file`, { hint: 'remove it or restore the file' });
    if (st.size > o.max) throw new TiuError('FILE_INVALID', `${o.what} is ${st.size} bytes, more than the ${o.max} tiu reads`, { hint: 'the file is damaged or not tiu\'s; remove or restore it' });
    // Sized by fstat (+1: a file that grew is seen), not by the limit: an info.xml of a few
    // hundred bytes took a zero-filled 256 KiB, a manifest 1 MiB, and the result kept it alive.
    // Grown (twice the size, at most limit + 1) only for a file that grows while being read, or
    // one whose size fstat does not know (procfs says 0).
    let buf = Buffer.allocUnsafe(Math.min(o.max, st.size) + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n < buf.length) continue;
      if (buf.length > o.max) break;
      const bigger = Buffer.allocUnsafe(Math.min(o.max + 1, buf.length * 2));
      buf.copy(bigger, 0, 0, n);
      buf = bigger;
    }
    if (n > o.max) throw new TiuError('FILE_INVALID', `${o.what} grew beyond ${o.max} bytes while being read`);
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}
