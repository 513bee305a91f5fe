/** Crash-safe file writes for the repository and the device's metadata cache. */
import { writeFileAtomic } from '../atomic.ts';

/**
 * Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename, fsync of
 * the directory. Readers (a web server, a crashed run) see the old file or the new one, never half.
 */
export async function writeAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await writeFileAtomic(path, data, { mode });
}
