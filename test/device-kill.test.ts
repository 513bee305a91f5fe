/**
 * Crash safety: `tiu update` killed with SIGKILL at random moments, and interrupted with SIGINT.
 * After each kill the default is the old snapshot or the complete new one, and the next tiu
 * command leaves no unfinished snapshot and no stale mount behind.
 */
import { ERROR_CODES } from '../src/core/errors.ts';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execa } from 'execa';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, TIU, type ArchiveSet } from './helpers/device.ts';
import { isReadonly } from '../src/snapshot/btrfs.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;
const KILLS = Number(process.env.TIU_KILLS ?? 30);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-kill-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

interface Snap {
  number: number;
  default: boolean;
  inProgress: boolean;
  version: string | null;
}

async function status(root: string): Promise<Snap[]> {
  const r = await cli(['status', '--root', root, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout).snapshots;
}

function updateArgs(root: string): string[] {
  return [TIU, 'update', '--source', A.v2, '--root', root, '--keyring', A.keys.keyring];
}

/** The files behind a block device (major:minor): a loop device's backing file, or those of a dm device's loop slaves. */
async function backingFiles(devno: string): Promise<string[]> {
  const sysfs = `/sys/dev/block/${devno}`;
  const own = await readFile(`${sysfs}/loop/backing_file`, 'utf8').then((s) => [s.trim()], () => []);
  const slaves = await readdir(`${sysfs}/slaves`).catch(() => [] as string[]);
  const below = await Promise.all(slaves.map((s) => readFile(`/sys/class/block/${s}/loop/backing_file`, 'utf8').then((x) => x.trim(), () => '')));
  return [...own, ...below.filter(Boolean)];
}

/**
 * Image mounts (/run/tiu/mnt/image-*) left by the tiu runs of THIS test: those whose loop device
 * is backed by a file of this test (its archives, or a copy below the device root). Other tiu
 * processes on the machine (other tests, other checkouts) have mounts of their own files.
 */
async function staleMounts(root: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const out: string[] = [];
  for (const l of info.split('\n')) {
    const f = l.split(' ');
    const target = f[4] ?? '';
    if (!/\/tiu\/mnt\/image-/.test(target)) continue;
    const files = await backingFiles(f[2] ?? '');
    if (files.some((b) => b.startsWith(work + '/') || b.startsWith(root + '/'))) out.push(target);
  }
  return out;
}

describe('crash safety of tiu update', () => {
  it(`SIGKILL at ${KILLS} random moments: old default or complete new one, cleaned up by the next command`, async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem, { sizeMiB: 800 });
    // How long does a whole update take here?
    const t0 = Date.now();
    const full = await execa(process.execPath, updateArgs(dev.root), { reject: false });
    expect(full.exitCode, String(full.stderr)).toBe(0);
    const duration = Date.now() - t0;
    expect((await cli(['rollback', '1', '--root', dev.root])).exitCode).toBe(0);

    const outcomes = { old: 0, new: 0 };
    for (let i = 0; i < KILLS; i++) {
      const child = execa(process.execPath, updateArgs(dev.root), { reject: false });
      // Spread the kills over the whole run (node's start-up included).
      const at = Math.floor(((i + Math.random()) / KILLS) * duration);
      await new Promise((r) => setTimeout(r, at));
      child.kill('SIGKILL');
      await child;

      // The default is the old snapshot or a complete new one (checked by content).
      const list = await status(dev.root);
      const def = list.find((s) => s.default)!;
      if (def.number === 1) outcomes.old++;
      else {
        outcomes.new++;
        expect(def.inProgress).toBe(false);
        expect(def.version).toBe('2.0');
        const snap = join(dev.root, `.snapshots/${def.number}/snapshot`);
        expect(await isReadonly(sys, snap)).toBe(true);
        expect(await readFile(join(snap, 'usr/share/t/trap'), 'utf8')).toBe('BBBB');
        expect(await readFile(join(snap, 'usr/lib/tiu/image/manifest.json'), 'utf8')).toMatch(/"version": "2\.0"/);
        expect(await readFile(join(snap, 'etc/passwd'), 'utf8')).toMatch(/^svc:/m);
      }
      // The next tiu command cleans up whatever the killed run left.
      const c = await cli(['cleanup', '--keep', '100', '--root', dev.root]);
      expect(c.exitCode, c.stderr).toBe(0);
      const after = await status(dev.root);
      expect(after.filter((s) => s.inProgress)).toEqual([]);
      if ((await staleMounts(dev.root)).length) {
        // A `mount` the killed tiu had started can finish after tiu died (and after the
        // cleanup looked): the next command after that removes it.
        expect((await cli(['cleanup', '--keep', '100', '--root', dev.root])).exitCode).toBe(0);
      }
      expect(await staleMounts(dev.root)).toEqual([]);
      if (def.number !== 1) expect((await cli(['rollback', '1', '--root', dev.root])).exitCode).toBe(0);
    }
    // Kills landed both before and after the switch.
    expect(outcomes.old).toBeGreaterThan(0);
    expect(outcomes.old + outcomes.new).toBe(KILLS);
    // And a normal update still works afterwards.
    const last = await execa(process.execPath, updateArgs(dev.root), { reject: false });
    expect(last.exitCode, String(last.stderr)).toBe(0);
  }, 900_000);

  it('SIGINT discards the new snapshot, keeps the default and exits 51 (INTERRUPTED)', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const child = execa(process.execPath, [...updateArgs(dev.root), '--debug'], { reject: false });
    // Interrupt once the new snapshot exists.
    await new Promise<void>((resolve) => {
      child.stderr!.on('data', (d: Buffer) => {
        if (/new snapshot \d+ from 1/.test(d.toString())) resolve();
      });
      void child.then(() => resolve());
    });
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(ERROR_CODES.INTERRUPTED.exit);
    expect(r.exitCode).toBe(51);
    expect(String(r.stderr)).toMatch(/\[INTERRUPTED\]/);
    const list = await status(dev.root);
    expect(list.map((s) => [s.number, s.default])).toEqual([[1, true]]);
  });
});
