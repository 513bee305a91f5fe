/**
 * The last line of defence: anything unexpected — a thrown non-TiuError, an uncaught exception
 * or an unhandled rejection, wherever it comes from — ends tiu with ONE line
 * (`tiu: internal error: …; run with --debug for the stack [INTERNAL]`, exit 70), after the
 * cleanups of whatever is running (an unfinished snapshot is deleted) have run.
 *
 * Work that must be undone registers a cleanup here while it runs (the Transaction, image and
 * top-level mounts do: {@link guardDisposable}); the normal error path unwinds through
 * `await using`, this path runs the registered cleanups. SIGINT/SIGTERM go to the handlers
 * registered with {@link onInterrupt} (a Transaction, the daemon, create: they unwind); with none,
 * they run the cleanups too and end tiu with INTERRUPTED: a Ctrl-C while an archive is mounted
 * leaves no mount and no loop device.
 */
import { TiuError, toTiuError } from '../core/errors.ts';
import { readTiuEnv } from '../core/env.ts';
import { stopShellCommands } from '../core/shell-runner.ts';

type Cleanup = () => Promise<void>;
const cleanups = new Set<Cleanup>();
let fatal = false;
let guardInstalled = false;

/** Registers `fn` to run if tiu dies of an internal error; returns the unregister function. */
export function registerCleanup(fn: Cleanup): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/**
 * Makes `resource`'s dispose also run if tiu dies (internal error, unhandled signal) before the
 * owner disposes it; disposing it normally unregisters that. Returns the same object.
 */
export function guardDisposable<T extends AsyncDisposable>(resource: T): T {
  const dispose = resource[Symbol.asyncDispose].bind(resource);
  let done: Promise<void> | undefined;
  const once = () => (done ??= Promise.resolve(dispose()));
  const unregister = registerCleanup(once);
  resource[Symbol.asyncDispose] = () => {
    unregister();
    return once();
  };
  return resource;
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
  if (guardInstalled) return;
  guardInstalled = true;
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
  // The one SIGINT/SIGTERM listener (it replaces Node's default: exit at once, skipping every
  // cleanup). Work that unwinds by itself on a signal (a Transaction aborting, the daemon
  // stopping, create) registers with onInterrupt; with none registered, tiu ends here. Counting
  // process listeners instead would be wrong: libraries (execa's signal-exit) add their own.
  const onSignal = (sig: NodeJS.Signals) => {
    if (fatal) return;
    // The commands in flight end, as a Ctrl-C ends those in tiu's process group (shell-runner.ts).
    stopShellCommands();
    if (interruptHandlers.size > 0) {
      for (const h of [...interruptHandlers]) h(sig);
      return;
    }
    fatal = true;
    const e = new TiuError('INTERRUPTED', `interrupted by ${sig}`);
    void runCleanups().finally(() => {
      process.stderr.write(`tiu: error: ${e.oneLine()} [${e.code}]\n`);
      process.exit(e.exitCode);
    });
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

type InterruptHandler = (sig: NodeJS.Signals) => void;
const interruptHandlers = new Set<InterruptHandler>();

/**
 * Hands SIGINT/SIGTERM to `handler` (which must make the work unwind and tiu exit) instead of
 * ending tiu at once; returns the unregister function. Without installGuard (library use, unit
 * tests) it listens on the process directly.
 */
export function onInterrupt(handler: InterruptHandler): () => void {
  if (!guardInstalled) {
    process.on('SIGINT', handler);
    process.on('SIGTERM', handler);
    return () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    };
  }
  interruptHandlers.add(handler);
  return () => interruptHandlers.delete(handler);
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

/**
 * Test-only pause: `TIU_TEST_PAUSE=<place>` makes tiu say `tiu-test: paused at <place>` on
 * stderr and wait there (60 s), so that a test can signal it at a known point ('mounted': an
 * archive's image is mounted, no transaction yet). Does nothing otherwise.
 */
export async function testPause(place: string): Promise<void> {
  if (readTiuEnv().testPause !== place) return;
  process.stderr.write(`tiu-test: paused at ${place}\n`);
  await new Promise((r) => setTimeout(r, 60_000));
}
