/**
 * One download per cache file at a time: an flock(2) on `<cache file>.lock`, held (as in
 * src/snapshot/lock.ts) by a helper `flock --nonblock --no-fork <file> cat` whose stdin tiu
 * keeps open, so the kernel releases the lock when tiu exits, even by SIGKILL. Two updates of
 * the same URL can therefore never write the same `.part`; the second one fails with BUSY.
 */
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import { tryFlock } from '../../snapshot/lock.ts';

/** Takes the lock on `lockFile` or throws BUSY (naming `what`). Dispose to release. */
export async function lockDownload(sys: System, lockFile: string, what: string): Promise<AsyncDisposable> {
  const hold = await tryFlock(sys, lockFile, 'the download lock');
  if (!hold) {
    throw new TiuError('BUSY', `another tiu is downloading ${what}`, { hint: 'wait for it to finish, then retry' });
  }
  return { [Symbol.asyncDispose]: () => hold.release() };
}
