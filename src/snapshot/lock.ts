/**
 * One tiu transaction at a time per root.
 *
 * The lock is an open-file-description lock taken in-process (src/core/fdlock.ts, the prebuilt
 * binding of `fs-native-extensions`): the kernel drops it when tiu exits, even by SIGKILL. Where
 * that binding cannot be loaded (or with TIU_NO_FD_LOCK=1), Node.js having no flock(2), a helper
 * process holds it instead: `flock --nonblock --no-fork --conflict-exit-code 75 <lockfile> cat`.
 * flock locks the file and execs `cat`, which inherits the locked descriptor and echoes its
 * stdin. tiu keeps cat's stdin pipe open; when tiu exits, even by SIGKILL, the kernel closes the
 * pipe, cat reads EOF and exits, and the lock is gone with it. Either way: no stale lock files,
 * no pid checks. (The helper costs two program starts and a pipe round trip: 10-15 ms of the main
 * thread of a `tiu extract` on a small machine.)
 *
 * Lock file: `$TIU_RUN_DIR/<first 16 hex of sha256(realpath(root))>.lock` (TIU_RUN_DIR defaults
 * to /run/tiu); beside it a `.info` file says who holds it, for the BUSY message.
 */
import { constants as C } from 'node:fs';
import { lstat, open, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError, fromErrno } from '../core/errors.ts';
import { processAlive, type System } from '../core/system.ts';
import { readBounded } from '../core/boundedread.ts';
import { ensurePrivateDir } from '../tiu/rundir.ts';
import { readTiuEnv } from '../core/env.ts';
import { tryFdLock, type FdLockHold } from '../core/fdlock.ts';

/** Largest lock info file read (it holds one short JSON line). */
const MAX_INFO_BYTES = 16 * 1024;

/** flock's exit code when the lock is taken. */
const CONFLICT_EXIT = 75;
const HELD_LINE = 'tiu-lock-held';

/** A held lock, of either kind; `release` gives it up (exiting the process does too). */
export type FlockHold = FdLockHold;

/**
 * Takes an flock(2) on `lockFile` without waiting, or returns undefined when another process
 * holds it. The lock is held by a helper `flock --nonblock --no-fork FILE cat` whose stdin tiu
 * keeps open, so the kernel releases it when tiu exits, even by SIGKILL. `what` names the lock
 * in a failure message. Side effects: creates `lockFile`; starts the helper process.
 */
export async function tryFlock(sys: System, lockFile: string, what: string): Promise<FlockHold | undefined> {
  const child = sys.spawn('flock', ['--nonblock', '--no-fork', '--conflict-exit-code', String(CONFLICT_EXIT), lockFile, 'cat']);
  const held = await new Promise<boolean>((resolve, reject) => {
    let out = '';
    const onData = (chunk: Buffer | string) => {
      out += chunk.toString();
      if (out.includes(`${HELD_LINE}\n`)) {
        child.stdout?.off('data', onData);
        resolve(true);
      }
    };
    child.stdout?.on('data', onData);
    child.then((r) => {
      const res = r as unknown as { exitCode?: number; code?: string; cause?: { code?: string }; stderr?: string };
      if (res.exitCode === CONFLICT_EXIT) return resolve(false);
      if ((res.code ?? res.cause?.code) === 'ENOENT') return reject(new TiuError('TOOL_MISSING', "required tool 'flock' is not installed", { hint: 'install util-linux' }));
      reject(new TiuError('TOOL_FAILED', `flock exited (${res.exitCode ?? 'no exit code'}) before taking ${what}: ${String(res.stderr ?? '').trim()}`));
    }, reject);
    // EPIPE when flock exits at once (lock taken) is expected; the exit code tells.
    child.stdin?.on('error', () => {});
    // cat echoes this line only once flock has the lock and exec'ed it.
    child.stdin?.write(`${HELD_LINE}\n`);
  });
  if (!held) return undefined;
  // The helper must not keep tiu alive on its own: if tiu forgets to release, exiting releases.
  child.unref();
  for (const st of [child.stdin, child.stdout, child.stderr]) (st as unknown as { unref?: () => void } | null)?.unref?.();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      child.ref();
      child.stdin?.end();
      await child.catch(() => {});
    },
  };
}

/**
 * Takes an exclusive lock on `lockFile` without waiting, or returns undefined when another
 * process holds it: in-process where the fd-lock binding loads, else with the flock helper
 * ({@link tryFlock}). Every tiu of one installation takes the same kind. Side effects: creates
 * `lockFile`; may start the helper process.
 */
export async function tryLockFile(sys: System, lockFile: string, what: string): Promise<FlockHold | undefined> {
  const held = tryFdLock(lockFile);
  return held === null ? tryFlock(sys, lockFile, what) : held;
}

export interface LockHolder {
  pid: number;
  command: string;
  root: string;
  since: string;
}

/** The directory lock files live in. */
export function lockDir(): string {
  return readTiuEnv().runDir;
}

/** The lock file for a root, given its real path. Pure. */
export function lockFileFor(realRoot: string, dir = lockDir()): string {
  // (node:crypto loaded on use: tiu status imports this module but takes no lock)
  return join(dir, `${process.getBuiltinModule('node:crypto').createHash('sha256').update(realRoot).digest('hex').slice(0, 16)}.lock`);
}

async function readHolder(infoFile: string): Promise<LockHolder | undefined> {
  try {
    // Bounded, regular file only: a FIFO or a huge file planted here must not hang tiu.
    const data = JSON.parse((await readBounded(infoFile, { max: MAX_INFO_BYTES, what: `lock info ${infoFile}` })).toString('utf8')) as Partial<LockHolder>;
    return typeof data.pid === 'number' ? (data as LockHolder) : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the holder info without following a symlink planted at its name (O_NOFOLLOW). */
async function writeInfo(file: string, text: string): Promise<void> {
  const fh = await open(file, C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW | C.O_NONBLOCK, 0o644);
  try {
    if (!(await fh.stat()).isFile()) throw new Error('not a regular file');
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
}

/**
 * Takes the transaction lock of `root`, failing fast with BUSY if another process holds it.
 * Resolves only once the lock is really held; dispose (or process exit) releases it.
 * Side effects: creates the lock directory and lock file, writes the holder info file.
 */
export async function acquireLock(sys: System, root: string): Promise<AsyncDisposable> {
  let realRoot: string;
  try {
    realRoot = await realpath(root);
  } catch (e) {
    throw fromErrno(e, `root ${root}`) ?? e;
  }
  const dir = lockDir();
  await ensurePrivateDir(dir, 0o755);
  const lockFile = lockFileFor(realRoot, dir);
  const infoFile = lockFile.replace(/\.lock$/, '.info');
  // flock(1) opens the lock file following symlinks (the in-process lock does not): only a
  // regular file (or none) is used.
  const lst = await lstat(lockFile).catch(() => undefined);
  if (lst && !lst.isFile()) {
    throw new TiuError('PATH_UNSAFE', `lock file ${lockFile} is ${lst.isSymbolicLink() ? 'a symlink' : 'not a regular file'}; tiu does not use it`, { hint: `remove ${lockFile}, then retry` });
  }

  const attempt = async () => {
    try {
      return await tryLockFile(sys, lockFile, 'the lock');
    } catch (e) {
      if (e instanceof TiuError) throw e;
      throw fromErrno(e, `lock file ${lockFile}`) ?? e;
    }
  };

  let got = await attempt();
  // A holder that died (SIGKILL) releases the lock a moment later, when its helper sees the
  // pipe close: wait for that instead of reporting BUSY for a transaction that is gone.
  for (let i = 0; !got && i < 50; i++) {
    const holder = await readHolder(infoFile);
    if (!holder || processAlive(holder.pid)) break;
    await new Promise((r) => setTimeout(r, 100));
    got = await attempt();
  }
  if (!got) {
    const holder = await readHolder(infoFile);
    throw new TiuError('BUSY', `another tiu transaction is running on ${realRoot}${holder ? ` (pid ${holder.pid})` : ''}`, {
      hint: `wait for it to finish${holder ? ` (${holder.command}, since ${holder.since})` : ''}, then retry`,
      details: { lockFile, holder },
    });
  }

  const hold = got;
  const holder: LockHolder = { pid: process.pid, command: process.argv.slice(1).join(' '), root: realRoot, since: new Date().toISOString() };
  await writeInfo(infoFile, `${JSON.stringify(holder)}\n`).catch((e) => sys.log.debug(`lock: cannot write ${infoFile}: ${(e as Error).message}`));
  sys.log.debug(`lock: holding ${lockFile} for ${realRoot}`);

  let released = false;
  return {
    async [Symbol.asyncDispose]() {
      if (released) return;
      released = true;
      // Remove the info first: once the lock is free, the file may belong to the next holder.
      await rm(infoFile, { force: true });
      await hold.release();
      sys.log.debug(`lock: released ${lockFile}`);
    },
  };
}
