/**
 * Loop-file btrfs "devices" for the device-side benchmark.
 *
 * A golden image (v1 installed by `tiu install`, plus an OSTree repo holding v1 and a checkout of
 * it) is made once; every measured run gets a fresh copy of it, loop-attached and mounted like a
 * running system (default subvolume at `root`, `@/.snapshots` and `@/var` below it) plus the
 * top level at `top`. Disposing the device unmounts, detaches and deletes the copy.
 */
import { mkdir, readFile, rm, statfs } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { System } from '../../src/core/system.ts';

export interface Device extends AsyncDisposable {
  /** /dev/loopN */
  loop: string;
  /** The running system's root (default subvolume = snapshot 1). */
  root: string;
  /** The filesystem's top level (subvolid=5). */
  top: string;
}

/** Unmounts `target` if mounted; never throws (cleanup). */
async function umountQuiet(sys: System, target: string): Promise<void> {
  await sys.run('umount', [target], { allowFailure: true });
}

/**
 * Makes a sparse `size`-byte file holding an empty btrfs, attaches it and mounts its top level at
 * `mnt`. Returns the loop device; the caller unmounts and detaches (see detach()).
 */
export async function attachNewBtrfs(sys: System, file: string, size: string, mnt: string): Promise<string> {
  await rm(file, { force: true });
  await sys.run('truncate', ['-s', size, file]);
  await sys.run('mkfs.btrfs', ['-q', '-f', file]);
  const loop = (await sys.run('losetup', ['-f', '--show', file])).stdout.trim();
  await mkdir(mnt, { recursive: true });
  await sys.run('mount', ['-o', 'subvolid=5', loop, mnt]);
  return loop;
}

export async function detach(sys: System, loop: string): Promise<void> {
  await sys.run('losetup', ['-d', loop], { allowFailure: true });
}

/**
 * Attaches a fresh copy of `golden` and mounts it like a running system. The copy keeps the
 * golden image's holes, so it costs only the used bytes.
 */
export async function openDevice(sys: System, golden: string, work: string): Promise<Device> {
  const image = join(work, 'run.img');
  await rm(image, { force: true });
  // cp keeps the holes (a plain copy_file_range on ext4 would write the 8 GiB of zeros).
  await sys.run('cp', ['--sparse=always', golden, image]);
  const loop = (await sys.run('losetup', ['-f', '--show', image])).stdout.trim();
  const root = join(work, 'root');
  const top = join(work, 'top');
  const mounted: string[] = [];
  const dev: Device = {
    loop,
    root,
    top,
    async [Symbol.asyncDispose]() {
      for (const m of mounted.reverse()) await umountQuiet(sys, m);
      await detach(sys, loop);
      await rm(image, { force: true });
    },
  };
  try {
    await mkdir(root, { recursive: true });
    await mkdir(top, { recursive: true });
    await sys.run('mount', [loop, root]);
    mounted.push(root);
    await sys.run('mount', ['-o', 'subvol=/@/.snapshots', loop, join(root, '.snapshots')]);
    mounted.push(join(root, '.snapshots'));
    await sys.run('mount', ['-o', 'subvol=/@/var', loop, join(root, 'var')]);
    mounted.push(join(root, 'var'));
    await sys.run('mount', ['-o', 'subvolid=5', loop, top]);
    mounted.push(top);
  } catch (e) {
    await dev[Symbol.asyncDispose]();
    throw e;
  }
  return dev;
}

/** Used bytes of the filesystem at `mnt` as df shows them, after committing the transaction. */
export async function usedBytes(sys: System, mnt: string): Promise<number> {
  await sys.run('btrfs', ['filesystem', 'sync', mnt]);
  const s = await statfs(mnt);
  return (s.blocks - s.bfree) * s.bsize;
}

/** Bytes written to a block device so far (sectors written, field 7 of /sys/block/X/stat, x 512). */
export async function deviceWrittenBytes(loop: string): Promise<number> {
  const fields = (await readFile(`/sys/block/${basename(loop)}/stat`, 'utf8')).trim().split(/\s+/);
  const sectors = Number(fields[6]);
  if (!Number.isFinite(sectors)) throw new Error(`cannot read sectors written of ${loop}`);
  return sectors * 512;
}

/** The "Exclusive" column of `btrfs filesystem du -s --raw path`. */
export async function exclusiveBytes(sys: System, path: string): Promise<number> {
  const r = await sys.run('btrfs', ['filesystem', 'du', '-s', '--raw', path]);
  return parseBtrfsDuExclusive(r.stdout);
}

/** Parses `btrfs filesystem du -s --raw` output (header + one line). Pure. */
export function parseBtrfsDuExclusive(text: string): number {
  const lines = text.trim().split('\n');
  const head = lines[0]?.trim().split(/\s+/) ?? [];
  const col = head.indexOf('Exclusive');
  const row = lines[lines.length - 1]?.trim().split(/\s+/) ?? [];
  const v = Number(row[col]);
  if (col < 0 || lines.length < 2 || !Number.isFinite(v)) throw new Error(`cannot parse btrfs filesystem du output:\n${text}`);
  return v;
}

/**
 * Unmounts whatever is mounted below `work` (left by an interrupted earlier run of this
 * benchmark) and detaches loop devices whose backing file is below `work`. Touches nothing else.
 */
export async function cleanupStale(sys: System, work: string): Promise<void> {
  const mounts = (await sys.run('findmnt', ['-rn', '-o', 'TARGET'], { allowFailure: true })).stdout
    .split('\n')
    .map((l) => l.replace(/\\x20/g, ' '))
    .filter((t) => t === work || t.startsWith(work + '/'));
  for (const t of mounts.sort((a, b) => b.length - a.length)) await umountQuiet(sys, t);
  const loops = (await sys.run('losetup', ['-n', '-l', '-O', 'NAME,BACK-FILE'], { allowFailure: true })).stdout.split('\n');
  for (const line of loops) {
    const [name, ...rest] = line.trim().split(/\s+/);
    const back = rest.join(' ').replace(/ \(deleted\)$/, '');
    if (name && (back === work || back.startsWith(work + '/'))) await detach(sys, name);
  }
}
