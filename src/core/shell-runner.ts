/**
 * Commands started by small long-lived shells instead of a fork of Node each.
 *
 * Node (libuv) starts every command with a plain fork(): the kernel copies the page tables of the
 * whole Node process (60-100 MiB mapped during an update) and marks its writable pages
 * copy-on-write, so after each command Node takes a page fault on the first write to every page
 * it touches again, the garbage collector's included. On a guest whose page faults are expensive
 * (a paravirtualised MMU, ~12 µs each) a command cost Node's main thread 5.5-8 ms to start and
 * thousands of faults afterwards, and an update runs a dozen or more (btrfs, mount, veritysetup,
 * sh). Here Node forks once, a `sh` of ~1 MiB, and writes each command to its stdin as one line;
 * the shell forks it (3.4-4.5 ms a command here, none of it on Node's thread) and writes, after
 * the command's own output, a line with a random marker and the exit status to each of its
 * stdout and stderr.
 *
 * Same command as Node's spawn would start: the executable is looked up on the given
 * environment's PATH here (a missing tool is ENOENT, as before); every word is quoted (never a
 * shell string from the caller); the environment is exactly the given one (the shell's own holds
 * only a PATH no command has, and it unsets what its `cd` exports); stdin is /dev/null or a private file
 * holding `input`, opened and unlinked by the shell before the command starts.
 *
 * A shell runs one command at a time; up to {@link MAX_SHELLS} run side by side, and a command
 * that finds them all busy goes to Node's spawn. Each shell leads a process group of its own, in a
 * session of its own: a Ctrl-C on the terminal reaches tiu alone, which stops its commands itself
 * (abort signals, timeouts: SIGTERM to the shell's group, the shell is replaced).
 *
 * Anything a shell cannot carry (a stream as input, a NUL byte, an environment variable whose
 * name is not a shell name) goes to Node's spawn; TIU_NO_SHELL_RUNNER=1 sends everything there
 * (read through env.ts like every TIU_* variable).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { accessSync, constants as fsc, rmSync, statSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { readTiuEnv } from './env.ts';
import type { Outcome } from './system.ts';

export interface RunnerRequest {
  cwd?: string;
  /** The whole environment of the command (undefined values already removed). */
  env: Record<string, string>;
  input?: string | Buffer;
  binary?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
  onSpawn?: () => void;
}

/** Shells at most: a command beyond them goes to Node's spawn. */
export const MAX_SHELLS = 3;

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Quotes one word for sh: single quotes, each ' as '\''. Byte-exact for any string without NUL. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The line a shell runs for one command: `word args` in `cwd` with exactly `env` (prefix
 * assignments of a simple command: exported to it alone; a PATH among them is the one the shell
 * looks `word` up on), stdin from `input` (a file the shell opens and unlinks first, with `rm`)
 * or /dev/null, then the marker lines. Pure, for the tests.
 */
export function commandLine(token: string, word: string, args: readonly string[], r: { cwd: string; env: Record<string, string>; input?: string; rm?: string }): string {
  const q = shellQuote;
  const vars = Object.entries(r.env).map(([k, v]) => `${k}=${q(v)}`);
  const open = r.input ? `exec 3<${q(r.input)}; ${q(r.rm ?? 'rm')} -f -- ${q(r.input)}; ` : '';
  const stdin = r.input ? '<&3 3<&-' : '</dev/null';
  const close = r.input ? '; exec 3<&-' : '';
  // An asynchronous list, waited for: its `cd` stays in the child, and the shell says nothing of
  // how it ended (a foreground command killed by a signal would get a "Killed" on the shell's
  // stderr, from dash and bash alike; that stderr is /dev/null anyway, see Shell). The command's
  // stderr, and cd's, is fd 4. (In an asynchronous list without job control SIGINT and SIGQUIT
  // are ignored: tiu stops a command with SIGTERM.)
  const cmd = [...vars, ...[word, ...args].map(q)].join(' ');
  return `${open}cd -P -- ${q(r.cwd)} 2>&4 && unset PWD OLDPWD && ${cmd} ${stdin} 2>&4 4>&- & wait $!; printf '\\n%s %d\\n' ${token} "$?"; printf '\\n%s\\n' ${token} >&4${close}\n`;
}

/**
 * The names dash and bash run as builtins even with a PATH given (`echo`, `printf`, `kill`,
 * `pwd` behave differently from the programs Node would start): these go by their path.
 */
const BUILTINS = new Set(['alias', 'bg', 'break', 'cd', 'chdir', 'command', 'continue', 'echo', 'eval', 'exec', 'exit', 'export', 'false', 'fc', 'fg', 'getopts', 'hash', 'jobs', 'kill', 'local', 'printf', 'pwd', 'read', 'readonly', 'return', 'set', 'shift', 'test', '[', 'times', 'trap', 'true', 'type', 'ulimit', 'umask', 'unalias', 'unset', 'wait', '.', ':', 'source', 'let', 'enable', 'builtin', 'declare', 'typeset', 'disown', 'suspend', 'logout', 'mapfile', 'readarray', 'shopt', 'caller', 'compgen', 'complete', 'compopt', 'dirs', 'popd', 'pushd', 'history', 'help', 'bind']);

/**
 * The word the shell runs for `file` found at `exe`: the name itself, so the program sees the
 * argv[0] Node's spawn would give it (`xz: file: …` in its messages, not `/usr/bin/xz: …`), and
 * the shell finds the same file on the same PATH; the path where a name is a shell builtin or the
 * command has no PATH (Node's spawn then searches /usr/bin:/bin, the shell its own).
 */
export function commandWord(file: string, exe: string, env: Record<string, string>): string {
  return file.includes('/') || BUILTINS.has(file) || env.PATH === undefined ? exe : file;
}

/** Signal names by number, for a shell's exit status 128 + n. */
const SIGNALS = new Map(Object.entries(constants.signals).map(([name, n]) => [n as number, name]));

/**
 * The executable `file` would run as, looked up on `path` like libuv's execvp: a name with a slash
 * as it is, else the first regular, executable file of that name in PATH's directories.
 */
export function lookupExecutable(file: string, path: string | undefined): string | undefined {
  const ok = (p: string) => {
    try {
      accessSync(p, fsc.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (file.includes('/')) return ok(file) ? file : undefined;
  for (const dir of (path ?? '/usr/bin:/bin').split(':')) {
    const p = `${dir || '.'}/${file}`;
    if (ok(p)) return p;
  }
  return undefined;
}

/** Whether a command can go through a shell: no NUL byte anywhere, shell names for variables. */
export function runnable(file: string, args: readonly string[], env: Record<string, string>, cwd: string | undefined): boolean {
  const clean = (s: string) => !s.includes('\0');
  return clean(file) && args.every(clean) && Object.entries(env).every(([k, v]) => NAME.test(k) && clean(v)) && (cwd === undefined || clean(cwd));
}

/**
 * Reads a stream up to each marker: `onPart` gets the bytes before it and what follows it on its
 * line. A chunk is searched with the last bytes before it (a marker may be split), so a large
 * output is joined once, not per chunk.
 */
class MarkedStream {
  private chunks: Buffer[] = [];
  private readonly overlap: number;
  private readonly marker: Buffer;
  private readonly onPart: (body: Buffer, rest: string) => void;
  constructor(marker: Buffer, onPart: (body: Buffer, rest: string) => void) {
    this.marker = marker;
    this.onPart = onPart;
    this.overlap = marker.length + 32;
  }

  private tail(n: number): Buffer {
    const parts: Buffer[] = [];
    let have = 0;
    for (let i = this.chunks.length - 1; i >= 0 && have < n; i--) {
      parts.unshift(this.chunks[i]!);
      have += this.chunks[i]!.length;
    }
    const t = Buffer.concat(parts);
    return t.subarray(Math.max(0, t.length - n));
  }

  push(chunk: Buffer): void {
    const window = this.chunks.length > 0 ? Buffer.concat([this.tail(this.overlap), chunk]) : chunk;
    this.chunks.push(chunk);
    if (window.indexOf(this.marker) < 0) return;
    let all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    for (let at = all.indexOf(this.marker); at >= 0; at = all.indexOf(this.marker)) {
      const nl = all.indexOf(0x0a, at + this.marker.length);
      if (nl < 0) break;
      const body = all.subarray(0, at);
      const rest = all.toString('latin1', at + this.marker.length, nl);
      all = all.subarray(nl + 1);
      this.onPart(body, rest);
    }
    this.chunks = all.length ? [all] : [];
  }
}

interface Job {
  req: RunnerRequest;
  out?: Buffer;
  err?: Buffer;
  status?: number;
  killed?: NodeJS.Signals;
  /** Stopped because tiu itself was interrupted (stopShellCommands). */
  stopped?: boolean;
  timedOut: boolean;
  timer?: NodeJS.Timeout;
  onAbort: () => void;
  resolve(o: Outcome): void;
}

/** One shell: one command at a time. */
class Shell {
  private readonly child: ChildProcessWithoutNullStreams;
  /**
   * The marker: 128 random bits, so no command's output (a rebuilt file's gzip stream, say) can
   * hold it and end the command early with a status of its choosing. (node:crypto taken on use:
   * `tiu status`, which runs one command, never starts a shell and loads none, layering.test.ts.)
   */
  private readonly token = `tiu-${process.getBuiltinModule('node:crypto').randomBytes(16).toString('hex')}`;
  private job: Job | undefined;
  dead = false;

  constructor() {
    // (a PATH no command's PATH equals: a command's name is looked up on its own PATH, never
    // through the shell's table of names it found before)
    this.child = spawn('/bin/sh', [], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: '/nonexistent/tiu-shell-runner' }, detached: true });
    const out = new MarkedStream(Buffer.from(`\n${this.token} `), (body, rest) => {
      if (!this.job) return;
      this.job.out = body;
      this.job.status = Number(rest);
      this.settle();
    });
    const err = new MarkedStream(Buffer.from(`\n${this.token}`), (body) => {
      if (!this.job) return;
      this.job.err = body;
      this.settle();
    });
    this.child.stdout.on('data', (c: Buffer) => out.push(c));
    this.child.stderr.on('data', (c: Buffer) => err.push(c));
    this.child.stdin.on('error', () => {});
    // The shell's stderr becomes fd 4, its own messages go nowhere.
    this.child.stdin.write('exec 4>&2 2>/dev/null\n');
    this.child.on('error', () => this.end());
    this.child.on('close', () => this.end());
    this.idle();
  }

  /** Signalled: it is on its way out (even if its command's end was read already), so no new command goes there. */
  private retired = false;

  get usable(): boolean {
    return !this.dead && !this.retired;
  }

  get busy(): boolean {
    return this.job !== undefined;
  }

  private streams(): { ref?(): void; unref?(): void }[] {
    return [this.child.stdin, this.child.stdout, this.child.stderr] as never;
  }

  /** Nothing of the shell keeps Node running while it has no command. */
  private idle(): void {
    this.child.unref();
    for (const s of this.streams()) s.unref?.();
  }

  /**
   * While it runs a command, the shell keeps Node running: its pipes, and the process itself (when
   * it is killed, its pipes close before its exit is seen, and the command ends only then).
   */
  private inUse(): void {
    this.child.ref();
    for (const s of this.streams().slice(1)) s.ref?.();
  }

  /** The shell has gone (killed with its command, or it failed): the command ends with it. */
  private end(): void {
    if (this.dead) return;
    this.dead = true;
    if (this.job) this.settle(true);
  }

  private settle(gone = false): void {
    const j = this.job;
    if (!j || (!gone && (j.err === undefined || j.status === undefined))) return;
    this.job = undefined;
    this.idle();
    if (j.timer) clearTimeout(j.timer);
    j.req.signal?.removeEventListener('abort', j.onAbort);
    const out = j.out ?? Buffer.alloc(0);
    // (a shell reports a command killed by signal n as status 128 + n: taken as that signal, as a
    // shell's caller does; an exit code of 129-159 would read the same)
    const signal = gone ? j.killed : j.status! > 128 ? SIGNALS.get(j.status! - 128) : undefined;
    j.resolve({
      exitCode: gone || signal ? undefined : j.status,
      ...(signal ? { signal } : {}),
      stdout: j.req.binary ? new Uint8Array(out.buffer, out.byteOffset, out.length) : out.toString('utf8'),
      stderr: (j.err ?? Buffer.alloc(0)).toString('utf8') || (gone && !j.killed ? 'the shell running the command exited' : ''),
      isCanceled: j.req.signal?.aborted === true || j.stopped === true,
      timedOut: j.timedOut,
    });
  }

  /** Ends the command it runs, if any (SIGTERM to its group), as interrupted. */
  stop(): void {
    const j = this.job;
    if (!j) return;
    j.stopped = true;
    this.kill(j, 'SIGTERM');
  }

  /** SIGTERM to the shell's process group: the command and the shell end. */
  private kill(j: Job, sig: NodeJS.Signals): void {
    if (this.job !== j || j.killed) return;
    j.killed = sig;
    this.retired = true;
    try {
      process.kill(-this.child.pid!, sig);
    } catch {}
  }

  run(word: string, args: readonly string[], req: RunnerRequest, input: string | undefined): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      const j: Job = { req, timedOut: false, resolve, onAbort: () => this.kill(j, 'SIGTERM') };
      this.job = j;
      this.inUse();
      if (req.timeoutMs) {
        j.timer = setTimeout(() => {
          j.timedOut = true;
          this.kill(j, 'SIGTERM');
        }, req.timeoutMs);
      }
      this.child.stdin.write(Buffer.from(commandLine(this.token, word, args, { cwd: req.cwd ?? process.cwd(), env: req.env, input, rm: rmPath }), 'utf8'));
      req.onSpawn?.();
      if (req.signal?.aborted) j.onAbort();
      else req.signal?.addEventListener('abort', j.onAbort, { once: true });
    });
  }
}

const shells: Shell[] = [];

/** Whether commands go through the shells at all (not with TIU_NO_SHELL_RUNNER=1). */
export function shellRunnerOn(): boolean {
  return !readTiuEnv().noShellRunner;
}

/**
 * Ends every command the shells run, as interrupted: tiu got SIGINT or SIGTERM. The shells are in
 * a session of their own, so a Ctrl-C on the terminal, which ended the commands Node had started
 * (in tiu's process group), does not reach theirs; tiu's signal handler calls this instead.
 */
export function stopShellCommands(): void {
  for (const s of shells) s.stop();
}
let hasShell: boolean | undefined;
let rmPath: string | undefined;
let inputs = 0;

/**
 * Runs `file` (found at `exe`) through an idle shell, starting one if fewer than {@link MAX_SHELLS} run;
 * undefined when none is free or no shell can run (the caller uses Node's spawn).
 */
export function runInShell(file: string, exe: string, args: readonly string[], req: RunnerRequest): Promise<Outcome> | undefined {
  if (hasShell === undefined) {
    rmPath = lookupExecutable('rm', '/usr/bin:/bin');
    hasShell = lookupExecutable('/bin/sh', undefined) !== undefined && rmPath !== undefined;
  }
  if (!hasShell) return undefined;
  for (let i = shells.length - 1; i >= 0; i--) if (!shells[i]!.usable) shells.splice(i, 1);
  let shell = shells.find((s) => !s.busy);
  if (!shell) {
    if (shells.length >= MAX_SHELLS) return undefined;
    try {
      shell = new Shell();
    } catch {
      return undefined;
    }
    shells.push(shell);
  }
  let input: string | undefined;
  if (req.input !== undefined) {
    // (O_EXCL, 0600: a name someone made beforehand in the shared temp directory is refused)
    input = `${tmpdir()}/tiu-input-${process.pid}-${++inputs}-${Math.random().toString(36).slice(2)}`;
    try {
      writeFileSync(input, req.input, { flag: 'wx', mode: 0o600 });
    } catch {
      rmSync(input, { force: true });
      return undefined;
    }
  }
  return shell.run(commandWord(file, exe, req.env), args, req, input);
}
