/**
 * Factory reset, the pure part: which subvolumes hold user data, where the fresh ones go, how
 * fstab maps mount points to subvolumes, and the pending-reset marker (parsed strictly: it is
 * read at boot to decide what to delete). See docs/factory-reset.md.
 */
import { TiuError } from '../../core/errors.ts';

/** Mount points whose subvolumes a factory reset replaces with empty ones (user data). */
export const RESET_MOUNTPOINTS = ['var', 'home', 'root', 'opt', 'srv', 'usr/local'] as const;

/** Where the fresh data subvolumes of reset snapshot N live, from the top level: `@/.tiu-data/N/<mountpoint>`. */
export function dataSetDir(num: number): string {
  return `@/.tiu-data/${num}`;
}

/** The marker file beside info.xml of the reset snapshot. */
export const MARKER_NAME = 'tiu-factory-reset.json';
/** Userdata key on the reset snapshot: `pending` until the reset boot succeeded, then `done`. */
export const UD_RESET = 'tiu-factory-reset';

/** Mount point (no leading slash) -> subvolume path from the top level (no leading slash). */
export type SubvolMap = Record<string, string>;

export interface ResetMarker {
  format: 'tiu-factory-reset';
  version: 1;
  /** The reset snapshot. */
  snapshot: number;
  /** The snapshot it was made from. */
  base: number;
  /** The data subvolumes in use before the reset (deleted after the reset boot succeeded). */
  old: SubvolMap;
  /** The fresh ones, mounted by the reset snapshot's fstab. */
  new: SubvolMap;
  /** Keep the other snapshots (their fstab is pointed at the new data) instead of deleting them. */
  keepSnapshots: boolean;
}

const SUBVOL_RE = /^@(\/[A-Za-z0-9._-]+)+$/;

/** A subvolume path tiu may create or delete: below `@`, plain names, no `.`/`..` components. */
export function subvolPathProblem(p: string): string | undefined {
  if (!SUBVOL_RE.test(p)) return 'not a path below @ made of plain names';
  if (p.split('/').some((c) => c === '.' || c === '..')) return 'contains . or ..';
  if (p === '@/.snapshots' || p.startsWith('@/.snapshots/')) return 'is the snapshots subvolume';
  return undefined;
}

function unescapeFstab(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The `subvol=` of each btrfs line of an fstab, by mount point (no leading slash; `/` itself
 * is left out). Comments and other file systems are ignored.
 */
export function fstabSubvolumes(text: string): SubvolMap {
  const out: SubvolMap = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const f = line.split(/\s+/);
    if (f.length < 4 || f[2] !== 'btrfs') continue;
    const mp = unescapeFstab(f[1]!).replace(/^\/+|\/+$/g, '');
    if (!mp) continue;
    const sub = f[3]!.split(',').find((o) => o.startsWith('subvol='));
    if (sub) out[mp] = sub.slice('subvol='.length).replace(/^\/+/, '');
  }
  return out;
}

/**
 * The fstab with the `subvol=` option of the given mount points replaced (every other line and
 * option kept byte for byte). Throws RESET_FAILED if a mount point has no btrfs line.
 */
export function remapFstab(text: string, mapping: SubvolMap): string {
  const seen = new Set<string>();
  const lines = text.split('\n').map((raw) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return raw;
    const f = line.split(/\s+/);
    if (f.length < 4 || f[2] !== 'btrfs') return raw;
    const mp = unescapeFstab(f[1]!).replace(/^\/+|\/+$/g, '');
    const to = mapping[mp];
    if (to === undefined) return raw;
    seen.add(mp);
    const opts = f[3]!.split(',').filter((o) => !o.startsWith('subvol=') && !o.startsWith('subvolid='));
    f[3] = [`subvol=/${to}`, ...opts].join(',');
    return f.join(' ');
  });
  const missing = Object.keys(mapping).filter((m) => !seen.has(m));
  if (missing.length) throw new TiuError('RESET_FAILED', `/etc/fstab has no btrfs line for ${missing.map((m) => `/${m}`).join(', ')}`, { hint: 'the device does not have the MicroOS layout tiu install makes (docs/snapshots.md)' });
  return lines.join('\n');
}

/** The reset plan: which data subvolumes are replaced by which fresh ones. Pure. */
export function planReset(o: { snapshot: number; base: number; baseFstab: string; keepSnapshots: boolean }): ResetMarker {
  const current = fstabSubvolumes(o.baseFstab);
  const old: SubvolMap = {};
  const fresh: SubvolMap = {};
  for (const mp of RESET_MOUNTPOINTS) {
    const was = current[mp];
    if (was === undefined) throw new TiuError('RESET_FAILED', `/etc/fstab mounts no btrfs subvolume at /${mp}`, { hint: 'the device does not have the MicroOS layout tiu install makes (docs/snapshots.md)' });
    const problem = subvolPathProblem(was);
    if (problem) throw new TiuError('RESET_FAILED', `/etc/fstab mounts ${JSON.stringify(was)} at /${mp}: ${problem}`);
    old[mp] = was;
    fresh[mp] = `${dataSetDir(o.snapshot)}/${mp}`;
  }
  return { format: 'tiu-factory-reset', version: 1, snapshot: o.snapshot, base: o.base, old, new: fresh, keepSnapshots: o.keepSnapshots };
}

/** Parses a marker file strictly (at most 16 KiB, every field checked). Throws RESET_FAILED. */
export function parseMarker(text: string): ResetMarker {
  const bad = (why: string): never => {
    throw new TiuError('RESET_FAILED', `invalid factory-reset marker: ${why}`, { hint: 'the marker beside the reset snapshot\'s info.xml was damaged; finish or undo by hand (docs/factory-reset.md)' });
  };
  if (text.length > 16 * 1024) bad('larger than 16 KiB');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return bad((e as Error).message);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('not an object');
  const m = v as Record<string, unknown>;
  const keys = ['format', 'version', 'snapshot', 'base', 'old', 'new', 'keepSnapshots'];
  for (const k of Object.keys(m)) if (!keys.includes(k)) bad(`unknown field ${JSON.stringify(k)}`);
  if (m.format !== 'tiu-factory-reset' || m.version !== 1) bad('not a version 1 tiu-factory-reset marker');
  for (const k of ['snapshot', 'base'] as const) if (!Number.isSafeInteger(m[k]) || (m[k] as number) < 1) bad(`${k} is not a snapshot number`);
  if (typeof m.keepSnapshots !== 'boolean') bad('keepSnapshots is not a boolean');
  const map = (k: 'old' | 'new'): SubvolMap => {
    const x = m[k];
    if (typeof x !== 'object' || x === null || Array.isArray(x)) return bad(`${k} is not an object`);
    const out: SubvolMap = {};
    for (const mp of RESET_MOUNTPOINTS) {
      const p = (x as Record<string, unknown>)[mp];
      if (typeof p !== 'string') return bad(`${k}./${mp} is missing`);
      const problem = subvolPathProblem(p);
      if (problem) bad(`${k}./${mp} ${JSON.stringify(p)}: ${problem}`);
      out[mp] = p;
    }
    if (Object.keys(x).length !== RESET_MOUNTPOINTS.length) bad(`${k} has extra mount points`);
    return out;
  };
  const old = map('old');
  const fresh = map('new');
  for (const mp of RESET_MOUNTPOINTS) if (!fresh[mp]!.startsWith(`${dataSetDir(m.snapshot as number)}/`)) bad(`new./${mp} is not in the reset snapshot's data set`);
  return { format: 'tiu-factory-reset', version: 1, snapshot: m.snapshot as number, base: m.base as number, old, new: fresh, keepSnapshots: m.keepSnapshots as boolean };
}

/** What the boot step does for a reset snapshot, given the facts. Pure. */
export function decideFinish(f: { booted: number | undefined; marker: ResetMarker; health: string | undefined; status: string | undefined }): 'finish' | 'wait' | 'done' {
  if (f.status === 'done') return 'done';
  return f.booted === f.marker.snapshot && f.health === 'good' ? 'finish' : 'wait';
}
