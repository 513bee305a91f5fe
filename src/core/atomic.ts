/**
 * Crash-safe file writes, the one implementation: write a fresh temporary file beside the
 * target (created exclusively, never following a planted symlink), fsync it, rename it over the
 * target, fsync the directory. A reader (a web server, the boot loader, the next run after a
 * crash) finds the old file or the new one, never a half-written one. On FAT (the ESP) rename is
 * not atomic against power loss, but the old or the new file is what a reader finds otherwise.
 * Temporary names start with `.` and end in `.tiu-tmp`: directory readers must ignore them.
 */
import { copyFile, mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const TMP_SUFFIX = '.tiu-tmp';

/** fsync of a file or directory; filesystems that refuse it on a directory (FAT) are not an error. */
export async function fsyncPath(path: string, flags = 'r'): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR') throw e;
  } finally {
    await fh.close();
  }
}

/** A fresh temporary name next to `path`. */
function tempNameFor(path: string): string {
  // (node:crypto loaded on use: commands that only read, such as tiu status, never load it;
  // loading it costs ~10 ms on a slow machine)
  return join(dirname(path), `.${basename(path)}.${process.getBuiltinModule('node:crypto').randomBytes(4).toString('hex')}${TMP_SUFFIX}`);
}

export interface AtomicOptions {
  /** Mode of the new file (default 0644). */
  mode?: number;
  /** Create the parent directories (mode 0755) when missing (default true). */
  mkdir?: boolean;
}

/** Writes `data` to `path` atomically and durably (see the module comment). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, o: AtomicOptions = {}): Promise<void> {
  if (o.mkdir !== false) await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = tempNameFor(path);
  try {
    const fh = await open(tmp, 'wx', o.mode ?? 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
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
