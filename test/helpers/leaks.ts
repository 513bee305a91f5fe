/**
 * What a test's own tiu runs left attached: loop devices whose backing file is one of the test's
 * archives (an image mount keeps its loop device attached, plain or under dm-verity), and the
 * mounts on those loop devices. Filtered to the test's own files so that the device's loop file,
 * other test files and other users of the shared machine do not count.
 */
import { execa } from 'execa';
import { readdir, realpath } from 'node:fs/promises';
import { basename } from 'node:path';

export interface Leftovers {
  loops: string[];
  mounts: string[];
}

/** Loop devices backed by `files` (a path ending in '/' matches everything below it), and mounts that use them. */
export async function leftovers(files: string[]): Promise<Leftovers> {
  const matches = (back: string) => {
    const b = back.replace(/ \(deleted\)$/, '');
    return files.some((f) => (f.endsWith('/') ? b.startsWith(f) : b === f));
  };
  const lo = JSON.parse((await execa('losetup', ['-l', '-J', '-O', 'NAME,BACK-FILE'])).stdout || '{}') as { loopdevices?: { name: string; 'back-file': string | null }[] };
  const own = (lo.loopdevices ?? []).filter((l) => matches(l['back-file'] ?? ''));
  const names = new Set(own.map((l) => l.name));
  // A dm-verity device over one of those loops counts too (its slaves in sysfs name the loop).
  const onOwn = async (source: string) => {
    if (names.has(source)) return true;
    if (!source.startsWith('/dev/mapper/')) return false;
    const dm = basename(await realpath(source).catch(() => source));
    const slaves = await readdir(`/sys/block/${dm}/slaves`).catch(() => [] as string[]);
    return slaves.some((s) => names.has(`/dev/${s}`));
  };
  const mounts: string[] = [];
  for (const line of (await execa('findmnt', ['-rn', '-o', 'TARGET,SOURCE'])).stdout.split('\n')) {
    const [target, source] = line.split(' ');
    if (target && source && (await onOwn(source))) mounts.push(`${target} on ${source}`);
  }
  return { loops: own.map((l) => `${l.name} (${l['back-file']})`), mounts };
}
