/**
 * One download per cache file at a time: an exclusive lock on `<cache file>.lock`, released by
 * the kernel when tiu exits, even by SIGKILL. Two updates of the same URL can therefore never
 * write the same `.part`; the second one fails with BUSY.
 *
 * The lock is taken in-process on a file descriptor tiu opens (an open-file-description lock,
 * F_OFD_SETLK, through the prebuilt N-API binding of the npm package `fs-native-extensions`;
 * Node 24 itself has no flock/fcntl lock). Spawning a helper for it cost a process start per
 * download, which dominated the time of an archive fetched from a LAN. Where the binding cannot
 * be loaded (a bundle installed without it), the helper of src/snapshot/lock.ts is used
 * (`flock --nonblock --no-fork FILE cat`): the same guarantee, a little slower. The two kinds
 * do not see each other, so every tiu of one installation uses the same kind.
 */
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { tryFlock } from '../../snapshot/lock.ts';
import { readTiuEnv } from '../../core/env.ts';

interface FdLocks {
  tryLock(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): boolean;
}

let fdLocks: FdLocks | null | undefined;

/** The binding, or null when it cannot be loaded here (then the flock helper is used). */
function loadFdLocks(): FdLocks | null {
  if (fdLocks !== undefined) return fdLocks;
  if (readTiuEnv().noFdLock) return (fdLocks = null);
  // Made only when needed: createRequire itself costs ~1.5 ms.
  const req = (id: string): unknown => createRequire(import.meta.url)(id);
  const prebuild = `fs-native-extensions/prebuilds/${process.platform}-${process.arch}/fs-native-extensions.node`;
  try {
    // The prebuilt library itself: the package's own entry resolves it through require-addon,
    // which costs more than the lock (~100 ms on a busy machine). Same call as its index.js.
    // Found in the node_modules directories above this module (where require() looks too) and
    // loaded with process.dlopen: require()'s resolver costs 5-10 ms on its first use in a
    // process, a tenth of a 50 MB download from a LAN.
    const found = findInNodeModules(prebuild);
    let b: { tryLock(fd: number, offset: number, length: number, exclusive: boolean): void };
    if (found) {
      const m = { exports: {} as typeof b };
      process.dlopen(m, found);
      b = m.exports;
    } else {
      b = req(prebuild) as typeof b;
    }
    fdLocks = {
      tryLock(fd) {
        try {
          b.tryLock(fd, 0, 0, true);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return false;
          throw e;
        }
      },
    };
  } catch {
    try {
      fdLocks = req('fs-native-extensions') as FdLocks;
    } catch {
      fdLocks = null;
    }
  }
  return fdLocks;
}

/** `node_modules/<rel>` in the nearest directory above this module that has it, if any. */
function findInNodeModules(rel: string): string | undefined {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; ) {
    const candidate = join(dir, 'node_modules', rel);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** Takes the lock on `lockFile` or throws BUSY (naming `what`). Dispose to release. */
export async function lockDownload(sys: System, lockFile: string, what: string): Promise<AsyncDisposable> {
  const busy = () => new TiuError('BUSY', `another tiu is downloading ${what}`, { hint: 'wait for it to finish, then retry' });
  const fx = loadFdLocks();
  if (fx) {
    // O_NOFOLLOW: a symlink planted at the name is not followed; Node (libuv) opens with
    // O_CLOEXEC, so curl and other children never inherit (and never keep) the lock. A plain descriptor, opened and closed
    // synchronously (one syscall each): no FileHandle that the garbage collector could close
    // early, and no thread-pool round trip, whose first use costs ~10 ms in a fresh process.
    const fd = openSync(lockFile, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    let held = false;
    try {
      held = fx.tryLock(fd);
    } catch (e) {
      closeSync(fd);
      throw new TiuError('DOWNLOAD_FAILED', `cannot lock ${lockFile}: ${(e as Error).message}`, { cause: e });
    }
    if (!held) {
      closeSync(fd);
      throw busy();
    }
    sys.log.debug(`lock: holding ${lockFile}`);
    let open = true;
    return {
      // Closing the descriptor (its only one) releases the lock.
      [Symbol.asyncDispose]: async () => {
        if (open) closeSync(fd);
        open = false;
      },
    };
  }
  const hold = await tryFlock(sys, lockFile, 'the download lock');
  if (!hold) throw busy();
  return { [Symbol.asyncDispose]: () => hold.release() };
}
