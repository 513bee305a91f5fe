/**
 * The System's spawn for `stream: true` (src/core/system.ts), used by the downloader: a plain
 * node:child_process spawn wrapped in the seam's {@link ChildProcess} shape.
 *
 * Why not execa here: the caller reads the streams itself (nothing to buffer or decode), and
 * execa's first call in a process costs 10-30 ms of option handling and stream plumbing on top
 * of the fork — measured inside tiu's download() of a 50 MB archive from nginx on 127.0.0.1,
 * where the whole transfer takes ~100 ms (issue #18's throughput row). The seam's contract
 * holds: argv arrays only (no shell), ENOENT reported as `code: 'ENOENT'`, an aborted signal
 * kills the child and sets `isCanceled`, the promise never rejects.
 */
import { spawn } from 'node:child_process';
import type { ChildExit, ChildProcess, RunOptions } from './system.ts';

/** Starts `file` with `args`; stdout/stderr are pipes the caller reads (stdout 'ignore' with `discardStdout`). */
export function spawnStreaming(file: string, args: readonly string[], options: RunOptions, env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(file, args, {
    cwd: options.cwd,
    env,
    stdio: [options.input !== undefined ? 'pipe' : 'ignore', options.inherit ? 'inherit' : options.discardStdout ? 'ignore' : 'pipe', options.inherit ? 'inherit' : 'pipe'],
    signal: options.signal,
    timeout: options.timeoutMs,
  });
  if (options.input !== undefined) child.stdin?.end(options.input);
  const done = new Promise<ChildExit>((resolve) => {
    let spawnError: NodeJS.ErrnoException | undefined;
    child.on('error', (e: NodeJS.ErrnoException) => {
      // A start failure (ENOENT, EACCES) has no exit to wait for; an abort is followed by 'close'.
      if (child.pid === undefined) {
        spawnError = e;
        resolve({ code: e.code, cause: { code: e.code }, isCanceled: !!options.signal?.aborted });
      }
    });
    child.on('close', (code, signal) => {
      if (spawnError) return;
      resolve({ exitCode: code ?? undefined, signal: signal ?? undefined, isCanceled: !!options.signal?.aborted });
    });
  });
  return Object.assign(done, {
    get pid() { return child.pid; },
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    kill: (signal?: NodeJS.Signals | number) => child.kill(signal),
    ref: () => child.ref(),
    unref: () => child.unref(),
  }) as ChildProcess;
}
