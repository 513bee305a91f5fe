/**
 * The apply step's read-ahead (src/tiu/apply/readahead.ts): it reads regular files beneath its
 * root only — never a FIFO, a device, a symlink or anything through a symlinked directory — skips
 * what the workers have passed and what is too large, and stop() waits for its reads.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { SafeRoot } from '../src/core/safepath.ts';
import { startReadAhead } from '../src/tiu/apply/readahead.ts';

let work: string;
let root: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-readahead-'));
  root = join(work, 'root');
  await mkdir(join(root, 'sub'), { recursive: true });
  await mkdir(join(work, 'outside'));
  await writeFile(join(work, 'outside/secret'), 'x'.repeat(100));
  for (const n of ['a', 'b', 'sub/c']) await writeFile(join(root, n), n.repeat(1000));
  await writeFile(join(root, 'big'), Buffer.alloc(300 * 1024, 1));
  await writeFile(join(root, 'empty'), '');
  await execa('mkfifo', [join(root, 'fifo')]);
  await execa('mknod', [join(root, 'null'), 'c', '1', '3']);
  await symlink(join(work, 'outside/secret'), join(root, 'link'));
  await symlink(join(work, 'outside'), join(root, 'dirlink'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const names = ['a', 'fifo', 'null', 'link', 'dirlink/secret', 'big', 'empty', 'missing', 'b', 'sub/c'];

describe('read-ahead', () => {
  it('reads the small regular files beneath its root, and nothing else', async () => {
    await using r = await SafeRoot.open(root, { what: 'the test tree' });
    const ra = startReadAhead(names.length, (i) => [{ root: r, path: names[i]! }], () => 0, { maxBytes: 256 * 1024, inFlight: 2 });
    await ra.finished;
    // a, b, sub/c: the FIFO (it would block an open without O_NONBLOCK), the device, the
    // symlinks, the large and the empty file are skipped, the missing one too, without an error.
    expect(ra.files).toBe(3);
  });

  it('skips what the workers have passed, and stops issuing reads once stopped', async () => {
    await using r = await SafeRoot.open(root, { what: 'the test tree' });
    let position = 8; // the workers are at 'b' already
    const ra = startReadAhead(names.length, (i) => [{ root: r, path: names[i]! }], () => position, { maxBytes: 256 * 1024, inFlight: 4 });
    await ra.finished;
    expect(ra.files).toBe(2);
    position = 0;
    const stopped = startReadAhead(names.length, (i) => [{ root: r, path: names[i]! }], () => position, { maxBytes: 256 * 1024, inFlight: 1 });
    await stopped.stop();
    // (one read was in flight when it stopped; none was issued after)
    expect(stopped.files).toBe(1);
  });
});
