/**
 * Snapshot numbers are never reused: the next number is one more than the largest of every
 * numeric directory in /.snapshots and a persisted high-water mark (`.snapshots/.tiu-last-number`),
 * which is raised before a snapshot is deleted and after one is created. A reused number could
 * make a bootloader entry, a health-check state or a log line point at a different system.
 */
import { join } from 'node:path';
import { readBounded } from '../core/boundedread.ts';
import { TiuError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/atomic.ts';

/** Name of the high-water mark file inside the snapshots directory (snapper ignores non-numeric names). */
export const HIGH_WATER_FILE = '.tiu-last-number';
const MAX_NUM = 0xffffffff;

/** The snapshot number a directory name stands for: canonical decimal, 1..2^32-1, else undefined. */
export function snapshotNumberFromName(name: string): number | undefined {
  if (!/^[1-9]\d{0,9}$/.test(name)) return undefined;
  const n = Number(name);
  return n <= MAX_NUM ? n : undefined;
}

/** The number for a new snapshot. Pure. */
export function nextSnapshotNumber(existing: readonly number[], highWater: number | undefined): number {
  let max = highWater ?? 0;
  for (const n of existing) if (n > max) max = n;
  if (max >= MAX_NUM) throw new TiuError('SNAPSHOT_FAILED', 'snapshot numbers are exhausted');
  return max + 1;
}

/** Parses the high-water file's content (one decimal number and a newline). Pure. */
export function parseHighWater(text: string): number | undefined {
  const m = /^(\d{1,10})\n?$/.exec(text);
  if (!m || Number(m[1]) > MAX_NUM) return undefined;
  return Number(m[1]);
}

/**
 * Reads the high-water mark of `snapshotsDir`; undefined if the file does not exist.
 * A damaged file is an error, not 0: ignoring it could hand out a number again.
 */
export async function readHighWater(snapshotsDir: string): Promise<number | undefined> {
  const file = join(snapshotsDir, HIGH_WATER_FILE);
  let text: string;
  try {
    text = (await readBounded(file, { max: 4096, what: file })).toString('utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const n = parseHighWater(text);
  if (n === undefined) {
    throw new TiuError('ROOT_LAYOUT', `${file} is damaged (expected one number)`, {
      hint: `write the largest snapshot number ever used into it (e.g. echo 42 > ${file})`,
    });
  }
  return n;
}

/** Raises the high-water mark to `num` (never lowers it); atomic replace with fsync. */
export async function raiseHighWater(snapshotsDir: string, num: number): Promise<void> {
  const current = await readHighWater(snapshotsDir);
  if (current !== undefined && current >= num) return;
  await writeFileAtomic(join(snapshotsDir, HIGH_WATER_FILE), `${num}\n`, { mkdir: false });
}
