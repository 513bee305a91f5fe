/**
 * One download per cache file at a time: an flock(2) on `<cache file>.lock`, held (as in
 * src/snapshot/lock.ts) by a helper `flock --nonblock --no-fork <file> cat` whose stdin tiu
 * keeps open, so the kernel releases the lock when tiu exits, even by SIGKILL. Two updates of
 * the same URL can therefore never write the same `.part`; the second one fails with BUSY.
 */
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';

const CONFLICT_EXIT = 75;
const HELD_LINE = 'tiu-download-lock-held';

/** Takes the lock on `lockFile` or throws BUSY (naming `what`). Dispose to release. */
export async function lockDownload(sys: System, lockFile: string, what: string): Promise<AsyncDisposable> {
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
      reject(new TiuError('TOOL_FAILED', `flock exited (${res.exitCode ?? 'no exit code'}) before taking the download lock: ${String(res.stderr ?? '').trim()}`));
    }, reject);
    child.stdin?.on('error', () => {});
    child.stdin?.write(`${HELD_LINE}\n`);
  });
  if (!held) {
    throw new TiuError('BUSY', `another tiu is downloading ${what}`, { hint: 'wait for it to finish, then retry' });
  }
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  let released = false;
  return {
    async [Symbol.asyncDispose]() {
      if (released) return;
      released = true;
      child.ref();
      child.stdin?.end();
      await child.catch(() => {});
    },
  };
}
