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
    const buf = Buffer.alloc(o.max + 1);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    if (n > o.max) throw new TiuError('FILE_INVALID', `${o.what} grew beyond ${o.max} bytes while being read`);
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}
