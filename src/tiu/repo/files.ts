/** Crash-safe file writes for the repository and the device's metadata cache. */
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { writeFileAtomic } from '../../core/atomic.ts';

/**
 * Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename, fsync of
 * the directory. Readers (a web server, a crashed run) see the old file or the new one, never half.
 */
export async function writeAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await writeFileAtomic(path, data, { mode });
}

/**
 * The synchronous twin of writeAtomic, for tuf-js's cache writes (its persist hook is
 * synchronous): temp file, fsync, rename, fsync of the directory.
 */
export function writeAtomicSync(path: string, data: Uint8Array, mode = 0o644): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    for (let off = 0; off < data.length; ) off += writeSync(fd, data, off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  const d = openSync(dir, 'r');
  try {
    fsyncSync(d);
  } finally {
    closeSync(d);
  }
}
