/**
 * The one seam between tiu and the machine: running external commands.
 *
 * All other code receives a {@link System} instead of importing a process spawner, so commands
 * are always argv arrays (never shell strings), every command is logged at debug level, and
 * failures become {@link TiuError}s carrying the command, exit code, signal and stderr.
 */
import type { Readable, Writable } from 'node:stream';
import { execa } from 'execa';
import { TiuError } from './errors.ts';
import { createLogger, type Logger } from './log.ts';
import { spawnStreaming } from './spawn-stream.ts';

export interface RunOptions {
  cwd?: string;
  /** Extra environment variables (merged over process.env; `undefined` removes one). */
  env?: Record<string, string | undefined>;
  /** Data written to the command's stdin. */
  input?: string | Buffer;
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
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
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

export function createSystem(log: Logger = createLogger()): System {
  const env = (extra?: Record<string, string | undefined>) => ({ ...process.env, LC_ALL: 'C', ...extra });

  const sys: System = {
    log,
    spawn(file, args, options = {}) {
      log.debug(`run: ${formatCommand(file, args)}`);
      if (options.stream) return spawnStreaming(file, args, options, env(options.env));
      return execa(file, args, {
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
    },
    async run(file, args, options = {}) {
      const command = formatCommand(file, args);
      const child = sys.spawn(file, args, options);
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
      const r = (await child) as unknown as {
        exitCode?: number; signal?: string; stdout: string | Uint8Array; stderr: string | Uint8Array; code?: string; failed: boolean; isCanceled?: boolean; timedOut?: boolean; cause?: unknown;
      };
      const errCode = (r as { code?: string }).code ?? ((r.cause as { code?: string } | undefined)?.code);
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
