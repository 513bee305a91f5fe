/**
 * The shell runner (src/core/shell-runner.ts): after a process's first command, System.run starts
 * commands through small long-lived shells instead of a fork of Node each. The command must be
 * the one Node's spawn would start: same argv bytes, same environment, same directory, same
 * stdin, stdout and stderr apart, exit codes and signals, missing tools, timeouts and aborts.
 * Each case compares with Node's spawn (TIU_NO_SHELL_RUNNER=1) where it can.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createSystem, type RunOptions } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { TiuError } from '../src/core/errors.ts';
import { commandLine, MAX_SHELLS, runnable, shellQuote } from '../src/core/shell-runner.ts';

const sys = createSystem(createLogger('warn'));

/** Runs once through the runner and once through Node's spawn. */
async function both(file: string, args: string[], o: RunOptions = {}) {
  await sys.run('true', []); // (the process's first command goes to Node's spawn)
  const shell = await sys.run(file, args, o);
  process.env.TIU_NO_SHELL_RUNNER = '1';
  try {
    return { shell, node: await sys.run(file, args, o) };
  } finally {
    delete process.env.TIU_NO_SHELL_RUNNER;
  }
}

async function failure(p: Promise<unknown>): Promise<TiuError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(TiuError);
  return e as TiuError;
}

/**
 * Writes a script that gets `sys` (a System whose first command has run) and `guard`
 * (src/tiu/guard.ts) and runs `body`, into a temporary directory; calls `use` with its path.
 */
async function withScript(body: string, use: (script: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tiu-runner-'));
  const src = (m: string) => JSON.stringify(join(import.meta.dirname, '../src', m));
  try {
    const script = join(dir, 'script.mjs');
    writeFileSync(
      script,
      `import { createSystem } from ${src('core/system.ts')};
      import { createLogger } from ${src('core/log.ts')};
      import * as guard from ${src('tiu/guard.ts')};
      const sys = createSystem(createLogger('warn'));
      await sys.run('true', []);
      ${body}`,
    );
    await use(script);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

afterEach(() => {
  delete process.env.TIU_NO_SHELL_RUNNER;
});

describe('shell runner', () => {
  it('starts commands from a shell, not as children of Node (TIU_NO_SHELL_RUNNER=1: Node again)', async () => {
    const { shell, node } = await both('sh', ['-c', 'echo $PPID']);
    expect(Number(node.stdout)).toBe(process.pid);
    const parent = Number(shell.stdout);
    expect(parent).not.toBe(process.pid);
    // the parent is a shell of its own session, and the same shell serves the next command
    expect((await sys.run('ps', ['-o', 'comm=,sid=', '-p', String(parent)])).stdout.trim().split(/\s+/)).toEqual(['sh', String(parent)]);
    expect(Number((await sys.run('sh', ['-c', 'echo $PPID'])).stdout)).toBe(parent);
  });

  it('passes every argument byte for byte (quotes, $, backslashes, newlines, UTF-8, empty, leading dashes)', async () => {
    const args = [`it's`, '"q"', '$HOME `id` $(id)', 'back\\slash\\', 'two\nlines', 'üñí ✓', '', '-n', '--', '*', ' spaced ', "''", '\t'];
    const { shell, node } = await both('sh', ['-c', 'for a; do printf "%s\\0" "$a"; done', 'sh', ...args], { binary: true });
    expect(shell.stdoutBuffer!.toString('utf8').split('\0').slice(0, -1)).toEqual(args);
    expect(shell.stdoutBuffer!.equals(node.stdoutBuffer!)).toBe(true);
  });

  it('the program sees argv[0] as given, and a name the shell has as a builtin is the program', async () => {
    const a = await both('sh', ['-c', 'echo "$0"']);
    expect(a.shell.stdout).toBe('sh\n');
    expect(a.node.stdout).toBe('sh\n');
    const xz = await both('xz', ['-d', '/tiu-no-such-file.xz'], { allowFailure: true });
    expect(xz.shell.stderr).toMatch(/^xz: \/tiu-no-such-file\.xz: /);
    expect(xz.shell.stderr).toBe(xz.node.stderr);
    // coreutils' echo takes -e; dash's builtin would print it
    const e = await both('echo', ['-e', 'a\\tb']);
    expect(e.shell.stdout).toBe('a\tb\n');
    expect(e.node.stdout).toBe(e.shell.stdout);
  });

  it('gives the command exactly the environment Node would (extra and removed variables, odd values)', async () => {
    process.env.TIU_RUNNER_GONE = 'x';
    try {
      const env = { TIU_A: `it's "x" $y \\ \n next`, TIU_B: '', TIU_RUNNER_GONE: undefined, PWD: '/nowhere' };
      const { shell, node } = await both('env', ['-0'], { env, binary: true });
      const vars = (b: Buffer) => b.toString('utf8').split('\0').filter((v) => v && !v.startsWith('TIU_NO_SHELL_RUNNER=')).sort();
      expect(vars(shell.stdoutBuffer!)).toEqual(vars(node.stdoutBuffer!));
      expect(vars(shell.stdoutBuffer!)).toContain(`TIU_A=${env.TIU_A}`);
      expect(vars(shell.stdoutBuffer!).some((v) => v.startsWith('TIU_RUNNER_GONE='))).toBe(false);
      // (the shell's own cd sets PWD and OLDPWD: the command has the caller's, or none)
      expect(vars(shell.stdoutBuffer!)).toContain('PWD=/nowhere');
      expect(vars(shell.stdoutBuffer!).some((v) => v.startsWith('OLDPWD='))).toBe(process.env.OLDPWD !== undefined);
    } finally {
      delete process.env.TIU_RUNNER_GONE;
    }
  });

  it('a variable whose name is no shell name sends the command to Node, which passes it', async () => {
    await sys.run('true', []);
    // (env itself: sh would not pass such a name on)
    const r = await sys.run('env', [], { env: { 'TIU-ODD': 'v' } });
    expect(r.stdout.split('\n')).toContain('TIU-ODD=v');
    expect(runnable('a', ['b'], { 'TIU-ODD': 'v' }, undefined)).toBe(false);
    expect(runnable('a', ['b\0'], {}, undefined)).toBe(false);
    expect(runnable('a', ['b'], { A: 'v' }, '/tmp')).toBe(true);
  });

  it('runs in cwd, else in the current directory; a missing cwd fails', async () => {
    const { shell, node } = await both('pwd', [], { cwd: '/usr/share' });
    expect(shell.stdout).toBe('/usr/share\n');
    expect(node.stdout).toBe(shell.stdout);
    expect((await sys.run('pwd', [])).stdout).toBe(`${process.cwd()}\n`);
    const e = await failure(sys.run('pwd', [], { cwd: '/tiu-no-such-dir' }));
    expect(e.code).toMatch(/TOOL_(FAILED|MISSING)/);
  });

  it('input reaches stdin byte for byte (text, binary, 4 MiB) and its file is gone afterwards', async () => {
    const big = randomBytes(4 << 20);
    for (const input of ['hello\n', Buffer.from([0, 255, 10, 0]), big]) {
      const { shell } = await both('cat', [], { input, binary: true });
      expect(shell.stdoutBuffer!.equals(Buffer.from(input))).toBe(true);
    }
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith(`tiu-input-${process.pid}-`))).toEqual([]);
  });

  it('stdout and stderr apart and whole, whatever they hold (8 MiB of random bytes, no final newline)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tiu-runner-'));
    try {
      const data = randomBytes(8 << 20);
      writeFileSync(join(dir, 'data'), data);
      const r = await both('sh', ['-c', 'printf "err "; cat "$1"; printf "no newline" >&2', 'sh', join(dir, 'data')], { binary: true, cwd: dir });
      for (const x of [r.shell, r.node]) {
        expect(x.stdoutBuffer!.equals(Buffer.concat([Buffer.from('err '), data]))).toBe(true);
        expect(x.stderr).toBe('no newline');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('exit codes as they are; a command killed by a signal names it; nothing of the shell in stderr', async () => {
    const { shell, node } = await both('sh', ['-c', 'echo out; echo err >&2; exit 3'], { allowFailure: true });
    expect(shell).toMatchObject({ exitCode: 3, stdout: 'out\n', stderr: 'err\n' });
    expect(node).toMatchObject({ exitCode: 3, stdout: 'out\n', stderr: 'err\n' });
    const e = await failure(sys.run('sh', ['-c', 'echo before >&2; kill -KILL $$']));
    expect(e.message).toBe('sh failed (signal SIGKILL): before');
  });

  it('a missing tool is TOOL_MISSING, looked up on the PATH the command gets', async () => {
    await sys.run('true', []);
    expect((await failure(sys.run('tiu-no-such-tool-xyz', []))).code).toBe('TOOL_MISSING');
    expect((await failure(sys.run('sh', ['-c', 'true'], { env: { PATH: '/tiu-empty' } }))).code).toBe('TOOL_MISSING');
    expect((await sys.run('/bin/sh', ['-c', 'echo "$PATH"'], { env: { PATH: '/tiu-empty' } })).stdout).toBe('/tiu-empty\n');
  });

  it(`${MAX_SHELLS} commands at once in shells, more go to Node; all side by side`, async () => {
    await sys.run('true', []);
    const t0 = Date.now();
    const rs = await Promise.all(Array.from({ length: MAX_SHELLS + 2 }, () => sys.run('sh', ['-c', 'sleep 0.5; echo $PPID'])));
    expect(Date.now() - t0).toBeLessThan(1400);
    const parents = rs.map((r) => Number(r.stdout));
    expect(parents.filter((p) => p === process.pid).length).toBe(2);
    expect(new Set(parents.filter((p) => p !== process.pid)).size).toBe(MAX_SHELLS);
  });

  it('a timeout and an abort end the command and its children; the next command runs', async () => {
    await sys.run('true', []);
    const t0 = Date.now();
    const e = await failure(sys.run('sh', ['-c', 'sleep 30 & sleep 30; wait'], { timeoutMs: 200 }));
    expect(e.message).toBe('sh timed out after 200 ms');
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    expect((await failure(sys.run('sleep', ['30'], { signal: ac.signal }))).code).toBe('INTERRUPTED');
    expect(Date.now() - t0).toBeLessThan(5000);
    // no sleep 30 left behind
    expect((await sys.run('pgrep', ['-f', '^sleep 30$'], { allowFailure: true })).stdout).toBe('');
    expect((await sys.run('echo', ['still'])).stdout).toBe('still\n');
  });

  it('an abort that comes as the command ends never costs the next command its shell', async () => {
    await sys.run('true', []);
    let next = 0;
    for (let i = 0; i < 60; i++) {
      const ac = new AbortController();
      const p = sys.run('sh', ['-c', 'echo x; echo y >&2'], { signal: ac.signal, allowFailure: true }).catch(() => undefined);
      setTimeout(() => ac.abort(), i % 6);
      await p;
      expect((await sys.run('echo', [String(i)])).stdout).toBe(`${i}\n`);
      next++;
    }
    expect(next).toBe(60);
  });

  it('a process whose only work is an aborted command waits for its end (the shell keeps Node running)', async () => {
    await withScript(
      `for (let i = 0; i < 10; i++) {
        const ac = new AbortController();
        setTimeout(() => ac.abort(), 30);
        const code = await sys.run('sleep', ['5'], { signal: ac.signal }).then(() => 'ran', (e) => e.code);
        process.stdout.write(code + ' ');
      }`,
      async (script) => {
        const r = await sys.run(process.execPath, [script], { allowFailure: true });
        expect(r.stderr).toBe('');
        expect(r.stdout).toBe('INTERRUPTED '.repeat(10));
        expect(r.exitCode).toBe(0);
      },
    );
  });

  it('SIGINT to tiu ends the commands its shells run, as a Ctrl-C ended those of its process group', async () => {
    await withScript(
      `guard.installGuard(false);
      guard.onInterrupt(() => {});
      const p = sys.run('sleep', ['30']).then(() => 'ran', (e) => e.code);
      process.stdout.write('started\\n');
      process.stdout.write((await p) + '\\n');`,
      async (script) => {
        const t0 = Date.now();
        const child = sys.spawn(process.execPath, [script], { stream: true });
        child.stdout!.once('data', () => setTimeout(() => child.kill('SIGINT'), 200));
        let out = '';
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        await child;
        expect(out).toBe('started\nINTERRUPTED\n');
        expect(Date.now() - t0).toBeLessThan(10_000);
      },
    );
  });

  it('quotes for sh (pure)', () => {
    expect(shellQuote(`a'b`)).toBe(`'a'\\''b'`);
    const line = commandLine('T', '/bin/x', ['a b'], { cwd: '/', env: { K: 'v' } });
    expect(line).toContain(`K='v' '/bin/x' 'a b' </dev/null`);
    expect(line.endsWith('\n')).toBe(true);
    expect(line.split('\n').length).toBe(2);
  });
});
