/**
 * The command seam (src/core/system.ts): commands start through Node's own spawn (run() and
 * spawn()), line callbacks through execa. Both must report the same way: output, exit codes,
 * missing tools, timeouts, interruption, stdin. (Not in the unit project: it runs sh, cat, sleep.)
 */
import { describe, expect, it } from 'vitest';
import { createSystem } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { TiuError } from '../src/core/errors.ts';

const sys = createSystem(createLogger('warn'));

async function failure(p: Promise<unknown>): Promise<TiuError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(TiuError);
  return e as TiuError;
}

describe('System.run', () => {
  it('returns stdout and stderr, with LC_ALL=C and the extra environment', async () => {
    const r = await sys.run('sh', ['-c', 'printf "%s %s" "$LC_ALL" "$TIU_X"; printf err >&2'], { env: { TIU_X: 'x y' } });
    expect(r).toMatchObject({ exitCode: 0, stdout: 'C x y', stderr: 'err', command: `sh -c 'printf "%s %s" "$LC_ALL" "$TIU_X"; printf err >&2'` });
  });

  it('an environment variable set to undefined is removed, not passed as "undefined"', async () => {
    process.env.TIU_SYSTEM_TEST = 'present';
    try {
      const r = await sys.run('sh', ['-c', 'echo "${TIU_SYSTEM_TEST-unset}"'], { env: { TIU_SYSTEM_TEST: undefined } });
      expect(r.stdout).toBe('unset\n');
    } finally {
      delete process.env.TIU_SYSTEM_TEST;
    }
  });

  it('a non-zero exit is TOOL_FAILED with the last stderr lines, or returned with allowFailure', async () => {
    const e = await failure(sys.run('sh', ['-c', 'echo one >&2; echo two >&2; exit 3']));
    expect(e.code).toBe('TOOL_FAILED');
    expect(e.message).toBe('sh failed (exit 3): one | two');
    const r = await sys.run('sh', ['-c', 'exit 4'], { allowFailure: true });
    expect(r.exitCode).toBe(4);
  });

  it('ENOSPC in stderr is NO_SPACE', async () => {
    const e = await failure(sys.run('sh', ['-c', 'echo "write: No space left on device" >&2; exit 1']));
    expect(e.code).toBe('NO_SPACE');
  });

  it('a missing command is TOOL_MISSING (with the package for known tools)', async () => {
    const e = await failure(sys.run('tiu-no-such-tool-xyz', []));
    expect(e.code).toBe('TOOL_MISSING');
    expect(e.message).toBe("required tool 'tiu-no-such-tool-xyz' is not installed");
  });

  it('input goes to stdin; without input stdin is empty (a reader does not wait)', async () => {
    expect((await sys.run('cat', [], { input: 'hello\n' })).stdout).toBe('hello\n');
    const t0 = Date.now();
    expect((await sys.run('cat', [], { timeoutMs: 5000 })).stdout).toBe('');
    expect(Date.now() - t0).toBeLessThan(4000);
  });

  it('binary output is returned byte-exact', async () => {
    const r = await sys.run('printf', ['\\377\\000\\001'], { binary: true });
    expect([...r.stdoutBuffer!]).toEqual([0xff, 0, 1]);
  });

  it('a command over its timeout is killed: TOOL_FAILED "timed out"', async () => {
    const t0 = Date.now();
    const e = await failure(sys.run('sleep', ['30'], { timeoutMs: 200 }));
    expect(e.code).toBe('TOOL_FAILED');
    expect(e.message).toBe('sleep timed out after 200 ms');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('an abort signal kills the command: INTERRUPTED', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const e = await failure(sys.run('sleep', ['30'], { signal: ac.signal }));
    expect(e.code).toBe('INTERRUPTED');
    const pre = new AbortController();
    pre.abort();
    expect((await failure(sys.run('sleep', ['30'], { signal: pre.signal }))).code).toBe('INTERRUPTED');
  });

  it('a command killed by a signal is TOOL_FAILED naming the signal', async () => {
    const e = await failure(sys.run('sh', ['-c', 'kill -KILL $$']));
    expect(e.message).toBe('sh failed (signal SIGKILL)');
  });

  it('the execa path (line callbacks) reports the same', async () => {
    const lines: string[] = [];
    const r = await sys.run('sh', ['-c', 'echo a; echo b >&2'], { onLine: (l) => lines.push(l) });
    expect(r.stdout).toBe('a\n');
    expect(lines.sort()).toEqual(['a', 'b']);
    const e = await failure(sys.run('sh', ['-c', 'echo bad >&2; exit 2'], { onLine: () => {} }));
    expect(e.message).toBe('sh failed (exit 2): bad');
    expect((await failure(sys.run('tiu-no-such-tool-xyz', [], { onLine: () => {} }))).code).toBe('TOOL_MISSING');
  });
});

describe('System.spawn', () => {
  it('streams stdout (not collected), keeps stdin open until closed, reports the exit', async () => {
    const child = sys.spawn('cat', [], { stream: true });
    const got: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => got.push(c));
    child.stdin!.write('one\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(Buffer.concat(got).toString()).toBe('one\n');
    child.stdin!.end('two\n');
    const r = await child;
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBeUndefined();
    expect(Buffer.concat(got).toString()).toBe('one\ntwo\n');
    expect(child.pid).toBeGreaterThan(0);
  });

  it('collects output when not streaming; kill ends it with the signal', async () => {
    const child = sys.spawn('sh', ['-c', 'echo started; exec sleep 30']);
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    child.kill('SIGTERM');
    const r = await child;
    expect(r.signal).toBe('SIGTERM');
    expect(r.stdout).toBe('started\n');
  });

  it('a missing command resolves with code ENOENT (no exception)', async () => {
    const r = await sys.spawn('tiu-no-such-tool-xyz', []);
    expect(r.code).toBe('ENOENT');
    expect(r.exitCode).toBeUndefined();
  });

  it('an abort signal kills it and marks it canceled', async () => {
    const ac = new AbortController();
    const child = sys.spawn('sleep', ['30'], { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const r = await child;
    expect(r.isCanceled).toBe(true);
  });
});
