/**
 * Exclusive, non-blocking file locks taken in-process: an open-file-description lock
 * (fcntl F_OFD_SETLK) through the prebuilt N-API binding of the npm package
 * `fs-native-extensions` (Node 24 itself has no flock/fcntl lock). The kernel releases it when
 * the descriptor closes, which the process's exit does, even by SIGKILL.
 *
 * Why in-process: the alternative, a helper process holding flock(2) (src/snapshot/lock.ts's
 * `flock --nonblock --no-fork FILE cat`), costs two program starts and a pipe round trip per
 * lock: 10-15 ms of tiu's main thread on a small machine, where a whole `tiu extract` of an
 * identical image takes ~0.5 s. Where the binding cannot be loaded (a bundle installed without
 * it), or with TIU_NO_FD_LOCK=1, callers use that helper instead: the same guarantee. The two
 * kinds do not see each other, so every tiu of one installation uses the same kind (the binding
 * loads for all of them or for none).
 *
 * Side effects: {@link tryFdLock} creates the lock file (mode 0600 if new) and keeps it open.
 */
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { readTiuEnv } from './env.ts';

interface FdLocks {
  tryLock(fd: number): boolean;
}

let fdLocks: FdLocks | null | undefined;

/** The binding, or null when it cannot be loaded here (or TIU_NO_FD_LOCK=1). Loaded once. */
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
    // process.
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
      const m = req('fs-native-extensions') as { tryLock(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): boolean };
      fdLocks = { tryLock: (fd) => m.tryLock(fd) };
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

/** A held lock; `release` gives it up (exiting the process does too). */
export interface FdLockHold {
  release(): Promise<void>;
}

/**
 * Takes an exclusive lock on `lockFile` without waiting: the hold, `undefined` when another
 * process (or another descriptor of this one) holds it, or `null` when the binding is not
 * available here (the caller then uses the flock helper). O_NOFOLLOW: a symlink planted at the
 * name is not followed. Node opens with O_CLOEXEC, so no child ever inherits (and keeps) the
 * lock. A plain descriptor, opened and closed synchronously: no FileHandle that the garbage
 * collector could close early, and no thread-pool round trip.
 */
export function tryFdLock(lockFile: string): FdLockHold | undefined | null {
  const fx = loadFdLocks();
  if (!fx) return null;
  const fd = openSync(lockFile, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o600);
  let held = false;
  try {
    held = fx.tryLock(fd);
  } finally {
    if (!held) closeSync(fd);
  }
  if (!held) return undefined;
  let open = true;
  return {
    // Closing the descriptor (its only one) releases the lock.
    async release() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}
