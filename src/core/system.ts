/**
 * The one seam between tiu and the machine: running external commands.
 *
 * All other code receives a {@link System} instead of importing a process spawner, so commands
 * are always argv arrays (never shell strings), every command is logged at debug level, and
 * failures become {@link TiuError}s carrying the command, exit code, signal and stderr.
 */
import { Readable, type Writable } from 'node:stream';
import { spawn as spawnChild } from 'node:child_process';
import { TiuError } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { lookupExecutable, runInShell, runnable, shellQuote, shellRunnerOn } from './shell-runner.ts';

export interface RunOptions {
  cwd?: string;
  /** Extra environment variables (merged over process.env; `undefined` removes one). */
  env?: Record<string, string | undefined>;
  /** Data written to the command's stdin: whole, or a stream piped there as it comes. */
  input?: string | Buffer | Readable;
  /** Do not throw on a non-zero exit; the caller inspects `exitCode`. */
  allowFailure?: boolean;
  /** Return stdout as a Buffer (for binary output). */
  binary?: boolean;
  /** Let the command's stdout/stderr go to the terminal (progress bars of long tools). */
  inherit?: boolean;
  /** Called for every stderr/stdout line as it arrives (progress parsing). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  timeoutMs?: number;
  /** Abort signal (SIGINT handling): the child is killed. */
  signal?: AbortSignal;
  /** Called once the child process has been started (work that should only begin then). */
  onSpawn?: () => void;
  /** spawn only: do not collect stdout/stderr in memory; the caller reads the streams (downloads). */
  stream?: boolean;
  /** spawn with `stream` only: the command's stdout goes nowhere (it writes its own output file). */
  discardStdout?: boolean;
}

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stdoutBuffer?: Buffer;
  stderr: string;
}

/** How a spawned command ended, as far as tiu reads it. */
export interface ChildExit {
  exitCode?: number;
  signal?: string;
  stdout?: string | Uint8Array;
  stderr?: string | Uint8Array;
  /** Killed through the abort signal. */
  isCanceled?: boolean;
  /** 'ENOENT' (directly or as the cause) when the command is not installed. */
  code?: string;
  cause?: { code?: string };
}

/**
 * A running command ({@link System.spawn}): its streams, kill and ref/unref, and a promise of how
 * it ended that does not reject for a non-zero exit. The spawner's own types stay behind the seam.
 */
export interface ChildProcess extends Promise<ChildExit> {
  readonly pid?: number;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  kill(signal?: NodeJS.Signals | number): boolean;
  ref(): void;
  unref(): void;
}

export interface System {
  readonly log: Logger;
  /** Runs `file` with `args`; throws TOOL_MISSING if not installed, TOOL_FAILED on failure. */
  run(file: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
  /** Starts a long-running command and returns it (for streaming). */
  spawn(file: string, args: readonly string[], options?: RunOptions): ChildProcess;
  /** Full path of an executable on PATH, or undefined. */
  which(file: string): Promise<string | undefined>;
}

/** Renders argv for logs and messages, quoting only where needed. */
export function formatCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : shellQuote(a))).join(' ');
}

/** Which package provides a tool, for install advice: [Debian/Ubuntu, openSUSE]. */
const PACKAGE_OF: Record<string, [string, string]> = {
  mksquashfs: ['squashfs-tools', 'squashfs'],
  unsquashfs: ['squashfs-tools', 'squashfs'],
  veritysetup: ['cryptsetup-bin', 'cryptsetup'],
  btrfs: ['btrfs-progs', 'btrfsprogs'],
  'mkfs.btrfs': ['btrfs-progs', 'btrfsprogs'],
  rsync: ['rsync', 'rsync'],
  getfattr: ['attr', 'attr'],
  setfattr: ['attr', 'attr'],
  setfacl: ['acl', 'acl'],
  snapper: ['snapper', 'snapper'],
  tar: ['tar', 'tar'],
  xargs: ['findutils', 'findutils'],
  zstd: ['zstd', 'zstd'],
  xz: ['xz-utils', 'xz'],
  flock: ['util-linux', 'util-linux'],
  losetup: ['mount', 'util-linux'],
  mount: ['mount', 'util-linux'],
  umount: ['mount', 'util-linux'],
  unshare: ['util-linux', 'util-linux'],
  dracut: ['dracut', 'dracut'],
  openssl: ['openssl', 'openssl'],
  curl: ['curl', 'curl'],
};

export function missingToolError(file: string): TiuError {
  const pkg = PACKAGE_OF[file];
  return new TiuError('TOOL_MISSING', `required tool '${file}' is not installed`, {
    hint: pkg ? `install it (Debian/Ubuntu: apt-get install ${pkg[0]}; openSUSE: zypper install ${pkg[1]})` : 'install it and retry',
  });
}

function lastLines(text: string, n = 3): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}

/** How a command ended, with whether tiu's own timeout killed it (execa reports the same). */
export type Outcome = ChildExit & { timedOut?: boolean };

/**
 * A command started with Node's own spawn, as a {@link ChildProcess}: its streams, and a promise
 * of how it ended (never rejecting). Output is collected unless `stream` (the caller reads it).
 * stdin is a pipe (the lock helper holds its lock while it stays open), written and closed
 * when `input` is given, or /dev/null with `noStdin`.
 *
 * Why not execa here: tiu starts a dozen short commands per update and holds its lock through
 * one, and execa's setup cost ~10 ms per command on top of the fork (6.0 vs 15.7 ms per `true`)
 * and loading it ~23 MiB of memory and ~0.19 s (measured, Node 24). execa stays for the
 * commands whose output is followed line by line or shown on the terminal (build-side tools with
 * progress), loaded only then.
 */
function spawnPlain(file: string, args: readonly string[], o: RunOptions & { env: Record<string, string | undefined>; noStdin?: boolean }): ChildProcess {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let timedOut = false;
  const env = Object.fromEntries(Object.entries(o.env).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv;
  const io = o.inherit ? 'inherit' : 'pipe';
  const child = spawnChild(file, args, { cwd: o.cwd, env, stdio: [o.noStdin && o.input === undefined ? 'ignore' : 'pipe', o.stream && o.discardStdout ? 'ignore' : io, io] });
  if (child.pid !== undefined) o.onSpawn?.();
  const onAbort = () => child.kill('SIGTERM');
  const timer = o.timeoutMs
    ? setTimeout(() => {
        timedOut = true;
        child.kill('SIGTERM');
      }, o.timeoutMs)
    : undefined;
  if (o.signal?.aborted) onAbort();
  else o.signal?.addEventListener('abort', onAbort, { once: true });
  if (!o.stream) {
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
  }
  // EPIPE from a command that exits without reading all of its input: its exit code tells.
  child.stdin?.on('error', () => {});
  if (o.input instanceof Readable) o.input.pipe(child.stdin!);
  else if (o.input !== undefined) child.stdin!.end(o.input);
  const ended = new Promise<Outcome>((resolve) => {
    let settled = false;
    const done = (r: Outcome) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      // Not started (ENOENT, EACCES): there will be no exit.
      if (child.pid === undefined) done({ code: e.code, stdout: '', stderr: e.message });
    });
    child.on('close', (code, signal) => {
      const stdout = Buffer.concat(out);
      done({
        exitCode: code ?? undefined,
        signal: signal ?? undefined,
        ...(o.stream ? {} : { stdout: o.binary ? new Uint8Array(stdout.buffer, stdout.byteOffset, stdout.length) : stdout.toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }),
        isCanceled: o.signal?.aborted === true,
        timedOut,
      });
    });
  });
  return Object.assign(ended, {
    get pid() {
      return child.pid;
    },
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    kill: (sig?: NodeJS.Signals | number) => child.kill(sig),
    ref: () => void child.ref(),
    unref: () => void child.unref(),
  }) as ChildProcess;
}

/**
 * Commands this process has run. The first goes to Node's spawn, the rest through the shell
 * runner (shell-runner.ts): a process that runs one command (`tiu status`) forks Node once either
 * way, without the runner's start.
 */
let commandsRun = 0;

export function createSystem(log: Logger = createLogger()): System {
  const env = (extra?: Record<string, string | undefined>) => ({ ...process.env, LC_ALL: 'C', ...extra });

  /** Turns how a command ended into run()'s result or error. */
  function finish(file: string, command: string, options: RunOptions, r: Outcome): RunResult {
    const errCode = r.code ?? r.cause?.code;
    if (r.exitCode === undefined && errCode === 'ENOENT') throw missingToolError(file);
    const stdoutBuffer = r.stdout instanceof Uint8Array ? Buffer.from(r.stdout) : undefined;
    const stdout = typeof r.stdout === 'string' ? r.stdout : '';
    const stderr = typeof r.stderr === 'string' ? r.stderr : Buffer.from(r.stderr ?? []).toString('utf8');
    const exitCode = r.exitCode ?? -1;
    log.debug(`exit ${r.signal ?? exitCode}: ${command}`);
    if (r.isCanceled) throw new TiuError('INTERRUPTED', `interrupted while running ${file}`);
    if (r.timedOut) throw new TiuError('TOOL_FAILED', `${file} timed out after ${options.timeoutMs} ms`, { details: { command } });
    if (exitCode !== 0 && !options.allowFailure) {
      const text = lastLines(stderr || stdout);
      const nospace = /No space left on device|ENOSPC/i.test(stderr);
      throw new TiuError(nospace ? 'NO_SPACE' : 'TOOL_FAILED', `${file} failed (${r.signal ? `signal ${r.signal}` : `exit ${exitCode}`})${text ? `: ${text}` : ''}`, {
        hint: nospace ? 'free space or choose another location' : 'rerun with --debug to see the full command and its output',
        details: { command, exitCode, signal: r.signal, stderr },
      });
    }
    return { command, exitCode, stdout, stdoutBuffer, stderr };
  }

  const sys: System = {
    log,
    spawn(file, args, options = {}) {
      log.debug(`run: ${formatCommand(file, args)}`);
      return spawnPlain(file, args, { ...options, env: env(options.env) });
    },
    async run(file, args, options = {}) {
      const command = formatCommand(file, args);
      log.debug(`run: ${command}`);
      if (!options.onLine && !options.inherit) {
        const e = env(options.env);
        if (commandsRun++ > 0 && !(options.input instanceof Readable) && shellRunnerOn()) {
          const whole = Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>;
          if (runnable(file, args, whole, options.cwd)) {
            const exe = lookupExecutable(file, whole.PATH);
            if (exe === undefined) return finish(file, command, options, { code: 'ENOENT', stdout: '', stderr: '' });
            const { input } = options as { input?: string | Buffer };
            const ran = runInShell(file, exe, args, { cwd: options.cwd, env: whole, input, binary: options.binary, signal: options.signal, timeoutMs: options.timeoutMs, onSpawn: options.onSpawn });
            if (ran) return finish(file, command, options, await ran);
          }
        }
        return finish(file, command, options, await spawnPlain(file, args, { ...options, env: e, noStdin: true, stream: false }));
      }
      const { execa } = await import('execa');
      const child = execa(file, args, {
        cwd: options.cwd,
        env: env(options.env),
        extendEnv: false,
        input: options.input,
        reject: false,
        stripFinalNewline: false,
        encoding: options.binary ? 'buffer' : 'utf8',
        stdout: options.inherit ? 'inherit' : 'pipe',
        stderr: options.inherit ? 'inherit' : 'pipe',
        timeout: options.timeoutMs,
        cancelSignal: options.signal,
        maxBuffer: 1024 * 1024 * 1024,
      } as never) as unknown as ChildProcess;
      if (child.pid !== undefined) options.onSpawn?.();
      if (options.onLine && !options.inherit) {
        for (const stream of ['stdout', 'stderr'] as const) {
          let pending = '';
          child[stream]?.on('data', (chunk: Buffer) => {
            pending += chunk.toString('utf8');
            const parts = pending.split(/[\r\n]/);
            pending = parts.pop() ?? '';
            for (const p of parts) if (p) options.onLine!(p, stream);
          });
        }
      }
      return finish(file, command, options, (await child) as unknown as Outcome);
    },
    async which(file) {
      const { access, constants } = await import('node:fs/promises');
      for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
        if (!dir) continue;
        const p = `${dir}/${file}`;
        try {
          await access(p, constants.X_OK);
          return p;
        } catch {}
      }
      return undefined;
    },
  };
  return sys;
}

/** Whether a process with this pid exists (EPERM means it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
