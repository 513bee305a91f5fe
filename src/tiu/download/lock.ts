/**
 * One download per cache file at a time: an exclusive lock on `<cache file>.lock`, released by
 * the kernel when tiu exits, even by SIGKILL. Two updates of the same URL can therefore never
 * write the same `.part`; the second one fails with BUSY.
 *
 * The lock is taken in-process on a file descriptor tiu opens (src/core/fdlock.ts: an
 * open-file-description lock through the prebuilt binding of `fs-native-extensions`). Spawning
 * a helper for it cost a process start per download, which dominated the time of an archive
 * fetched from a LAN. Where the binding cannot be loaded, the flock helper of
 * src/snapshot/lock.ts is used: the same guarantee, a little slower (see tryLockFile).
 */
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { tryLockFile } from '../../snapshot/lock.ts';

/** Takes the lock on `lockFile` or throws BUSY (naming `what`). Dispose to release. */
export async function lockDownload(sys: System, lockFile: string, what: string): Promise<AsyncDisposable> {
  let hold;
  try {
    hold = await tryLockFile(sys, lockFile, 'the download lock');
  } catch (e) {
    if (e instanceof TiuError) throw e;
    throw new TiuError('DOWNLOAD_FAILED', `cannot lock ${lockFile}: ${(e as Error).message}`, { cause: e });
  }
  if (!hold) throw new TiuError('BUSY', `another tiu is downloading ${what}`, { hint: 'wait for it to finish, then retry' });
  sys.log.debug(`lock: holding ${lockFile}`);
  return { [Symbol.asyncDispose]: () => hold.release() };
}
