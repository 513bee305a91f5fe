/**
 * Pure decisions over the snapshot list: status rows, which snapshot a rollback picks, which
 * snapshots cleanup deletes, and whether an archive holds a snapshot's own image. No I/O: tests
 * feed lists, commands feed the store's list.
 */
import { TiuError } from '../../core/errors.ts';
import { UD } from './paths.ts';
import type { Manifest } from '../archive/manifest.ts';

/**
 * Whether manifest `a` describes the image tree `b` recorded: the same signed index digest and
 * the same excluded paths (what an update leaves alone). Then an update from a trusted base holding
 * `b` has nothing to change in the tree (extract.ts: the same-image path).
 */
export function sameImage(a: Pick<Manifest, 'index' | 'excluded'>, b: Pick<Manifest, 'index' | 'excluded'>): boolean {
  return a.index.sha256 === b.index.sha256 && a.excluded.length === b.excluded.length && a.excluded.every((x, i) => x === b.excluded[i]);
}

export interface SnapshotFacts {
  num: number;
  date: string;
  description: string;
  cleanup: string;
  userdata: Record<string, string>;
  isDefault: boolean;
  isMounted: boolean;
}

export type Health = 'good' | 'bad' | 'unknown';

export interface StatusRow {
  number: number;
  date: string;
  version: string | null;
  description: string;
  booted: boolean;
  default: boolean;
  inProgress: boolean;
  health: Health;
  pinned: boolean;
  tiu: boolean;
}

export function health(s: SnapshotFacts): Health {
  const h = s.userdata[UD.health];
  return h === 'good' || h === 'bad' ? h : 'unknown';
}

export function statusRows(list: readonly SnapshotFacts[]): StatusRow[] {
  return [...list]
    .sort((a, b) => a.num - b.num)
    .map((s) => ({
      number: s.num,
      date: s.date,
      version: s.userdata[UD.version] ?? null,
      description: s.description,
      booted: s.isMounted,
      default: s.isDefault,
      inProgress: s.userdata[UD.inProgress] === 'yes',
      health: health(s),
      pinned: s.userdata[UD.pinned] === 'yes',
      tiu: s.userdata[UD.version] !== undefined,
    }));
}

/**
 * The snapshot `tiu rollback` makes the default. With `requested`, that one (refusing unfinished
 * or bad ones unless forced). Without: the booted snapshot if an update is pending (undo it),
 * else the newest snapshot older than the default that is good, else the newest older not-bad one.
 */
export function rollbackTarget(list: readonly SnapshotFacts[], requested: number | undefined, force: boolean): number {
  const def = list.find((s) => s.isDefault);
  if (requested !== undefined) {
    const s = list.find((x) => x.num === requested);
    if (!s) throw new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${requested} does not exist`, { hint: 'see tiu status for the snapshots' });
    if (!force && s.userdata[UD.inProgress] === 'yes') throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${requested} is unfinished (an update was interrupted)`, { hint: 'pick another snapshot, or --force' });
    if (!force && health(s) === 'bad') throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${requested} is marked bad (it failed its health check)`, { hint: 'pick another snapshot, or --force' });
    return requested;
  }
  const usable = list.filter((s) => s.userdata[UD.inProgress] !== 'yes' && health(s) !== 'bad' && !s.isDefault);
  const booted = list.find((s) => s.isMounted);
  if (booted && def && booted.num !== def.num && usable.some((s) => s.num === booted.num)) return booted.num;
  const older = usable.filter((s) => !def || s.num < def.num).sort((a, b) => b.num - a.num);
  const pick = older.find((s) => health(s) === 'good') ?? older[0];
  if (!pick) throw new TiuError('SNAPSHOT_NOT_FOUND', 'there is no earlier usable snapshot to roll back to', { hint: 'see tiu status; name a snapshot explicitly (tiu rollback N)' });
  return pick.num;
}

export interface CleanupDecision {
  delete: { num: number; reason: string }[];
  keep: { num: number; reason: string }[];
}

/**
 * Snapper's number algorithm, tiu's protections: never the default, the booted, a pinned or the
 * last good snapshot; unfinished leftovers (not default, not booted) always go; of the rest with
 * cleanup "number", the newest `keep` stay. Snapshots without a cleanup algorithm are the admin's.
 */
export function planCleanup(list: readonly SnapshotFacts[], keep: number): CleanupDecision {
  const out: CleanupDecision = { delete: [], keep: [] };
  const lastGood = [...list].filter((s) => health(s) === 'good' && s.userdata[UD.inProgress] !== 'yes').sort((a, b) => b.num - a.num)[0]?.num;
  const candidates: SnapshotFacts[] = [];
  for (const s of [...list].sort((a, b) => b.num - a.num)) {
    if (s.isDefault) out.keep.push({ num: s.num, reason: 'default' });
    else if (s.isMounted) out.keep.push({ num: s.num, reason: 'booted' });
    else if (s.userdata[UD.inProgress] === 'yes') out.delete.push({ num: s.num, reason: 'left over by an interrupted run' });
    else if (s.userdata[UD.pinned] === 'yes') out.keep.push({ num: s.num, reason: 'pinned' });
    else if (s.num === lastGood) out.keep.push({ num: s.num, reason: 'last good' });
    else if (s.cleanup !== 'number') out.keep.push({ num: s.num, reason: 'no cleanup algorithm' });
    else candidates.push(s);
  }
  candidates.forEach((s, i) => (i < keep ? out.keep : out.delete).push({ num: s.num, reason: i < keep ? `among the newest ${keep}` : `older than the newest ${keep}` }));
  out.delete.sort((a, b) => a.num - b.num);
  out.keep.sort((a, b) => a.num - b.num);
  return out;
}
