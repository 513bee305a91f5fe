/**
 * Crash-safe file writes for boot files: write a temporary file beside the target, fsync it,
 * rename it over the target, fsync the directory. On FAT (the ESP) rename is not atomic against
 * power loss, but the old or the new file is what a reader finds in every other case.
 */
import { copyFile, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const TMP_SUFFIX = '.tiu-tmp';

async function fsyncPath(path: string, flags = 'r'): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } catch (e) {
    // Some filesystems (and directories on FAT) refuse fsync on a directory handle: not fatal.
    if ((e as NodeJS.ErrnoException).code !== 'EINVAL' && (e as NodeJS.ErrnoException).code !== 'EISDIR') throw e;
  } finally {
    await fh.close();
  }
}

/** Temporary name used next to `path` (readers of the directory must ignore it). */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}${TMP_SUFFIX}`);
}

/** Writes `data` to `path` atomically (see the module comment); creates the directory. */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = tempNameFor(path);
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncPath(dirname(path));
}

/** Copies `src` to `dst` atomically (streamed by the kernel, not read into memory). */
export async function copyFileAtomic(src: string, dst: string): Promise<void> {
  await mkdir(dirname(dst), { recursive: true, mode: 0o755 });
  const tmp = tempNameFor(dst);
  try {
    await copyFile(src, tmp);
    await fsyncPath(tmp, 'r+');
    await rename(tmp, dst);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncPath(dirname(dst));
}

/** Renames within one directory and makes the rename durable. */
export async function renameDurable(from: string, to: string): Promise<void> {
  await rename(from, to);
  await fsyncPath(dirname(to));
}
