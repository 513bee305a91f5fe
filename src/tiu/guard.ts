/**
 * The last line of defence: anything unexpected — a thrown non-TiuError, an uncaught exception
 * or an unhandled rejection, wherever it comes from — ends tiu with ONE line
 * (`tiu: internal error: …; run with --debug for the stack [INTERNAL]`, exit 70), after the
 * cleanups of whatever is running (an unfinished snapshot is deleted) have run.
 *
 * Work that must be undone registers a cleanup here while it runs (the Transaction does); the
 * normal error path unwinds through `await using`, this path runs the registered cleanups.
 */
import { toTiuError } from './errors.ts';
import { readTiuEnv } from './env.ts';

type Cleanup = () => Promise<void>;
const cleanups = new Set<Cleanup>();
let fatal = false;

/** Registers `fn` to run if tiu dies of an internal error; returns the unregister function. */
export function registerCleanup(fn: Cleanup): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs every registered cleanup once (newest first), each bounded in time; never throws. */
export async function runCleanups(): Promise<void> {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([fn().catch(() => {}), new Promise((r) => (timer = setTimeout(r, 60_000)))]);
    clearTimeout(timer);
  }
}

/** The one line printed for an internal error (message folded and bounded). */
export function internalErrorLine(err: unknown): string {
  const e = toTiuError(err);
  const text = e.oneLine();
  return `tiu: ${text.length > 400 ? `${text.slice(0, 400)}…` : text} [${e.code}]`;
}

/**
 * Installs the process-wide handlers. `debug` adds the stack after the line.
 * Side effect: on a fatal event, runs the cleanups and exits the process with 70 (or the
 * error's own exit code when a TiuError escaped a callback).
 */
export function installGuard(debug: boolean): void {
  const onFatal = (err: unknown) => {
    if (fatal) return;
    fatal = true;
    void runCleanups().finally(() => {
      process.stderr.write(`${internalErrorLine(err)}\n`);
      if (debug) process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(toTiuError(err).exitCode);
    });
  };
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
}

/**
 * Test-only fault injection: `TIU_TEST_INTERNAL_ERROR=<place>` forces an internal error at
 * `place` ('command': thrown by the command; 'uncaught': an exception outside every
 * try/catch; 'rejection': an unhandled rejection; 'transaction': an uncaught exception while a
 * new snapshot is in progress). Does nothing otherwise.
 */
export async function testHook(place: string): Promise<void> {
  if (readTiuEnv().testInternalError !== place) return;
  const err = new TypeError(`forced internal error at '${place}' (TIU_TEST_INTERNAL_ERROR)`);
  if (place === 'command') throw err;
  if (place === 'rejection') {
    void Promise.reject(err);
    return;
  }
  setImmediate(() => {
    throw err;
  });
  // The work "hangs" here, as after a crash in a callback; the guard ends the process.
  if (place === 'transaction') await new Promise((r) => setTimeout(r, 60_000));
}
