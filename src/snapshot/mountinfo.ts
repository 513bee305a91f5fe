/**
 * Pure parsing of /proc/<pid>/mountinfo (see proc(5)), enough to tell which btrfs subvolume is
 * mounted where.
 */

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** The path inside the filesystem that is the root of this mount (for btrfs: `/<subvolume path>`). */
  root: string;
  mountPoint: string;
  /** Per-mount options (`rw,relatime`). */
  options: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/** Undoes the octal escapes (`\040` for space, `\011`, `\012`, `\134`) of mountinfo fields. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses the whole mountinfo text; lines that do not have the documented shape are skipped. */
export function parseMountinfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    if (pre.length < 6 || post.length < 3) continue;
    out.push({
      mountId: Number(pre[0]),
      parentId: Number(pre[1]),
      root: unescape(pre[3]!),
      mountPoint: unescape(pre[4]!),
      options: pre[5]!,
      fsType: post[0]!,
      source: unescape(post[1]!),
      superOptions: post[2]!,
    });
  }
  return out;
}

/** The mount visible at `mountPoint` (the last one mounted there, which hides earlier ones). */
export function mountAt(entries: readonly MountInfoEntry[], mountPoint: string): MountInfoEntry | undefined {
  let found: MountInfoEntry | undefined;
  for (const e of entries) if (e.mountPoint === mountPoint) found = e;
  return found;
}

/** The mount that holds `path` (an absolute, resolved path): the last mounted at its longest mount-point prefix. */
export function mountContaining(entries: readonly MountInfoEntry[], path: string): MountInfoEntry | undefined {
  let found: MountInfoEntry | undefined;
  for (const e of entries) {
    const inside = e.mountPoint === path || e.mountPoint === '/' || path.startsWith(`${e.mountPoint}/`);
    if (inside && (!found || e.mountPoint.length >= found.mountPoint.length)) found = e;
  }
  return found;
}

/** Whether both the mount and its filesystem are read-write (`rw` in the per-mount and the super options). */
export function isWritableMount(e: MountInfoEntry): boolean {
  return e.options.split(',').includes('rw') && e.superOptions.split(',').includes('rw');
}

/**
 * The btrfs subvolume a mount shows at its mount point, from the super options `subvolid=` and
 * `subvol=`, when the mount's root is that subvolume's root (not a directory inside it, as a
 * bind mount may show). Path from the top level without the leading slash (`@/.snapshots`), as
 * `btrfs subvolume show` prints it. Undefined when the options do not say it unambiguously.
 */
export function mountedSubvolume(e: MountInfoEntry): { id: number; path: string } | undefined {
  if (e.fsType !== 'btrfs') return undefined;
  const opts = e.superOptions.split(',');
  const ids = opts.filter((o) => o.startsWith('subvolid='));
  const subvols = opts.filter((o) => o.startsWith('subvol='));
  if (ids.length !== 1 || subvols.length !== 1) return undefined;
  const id = /^subvolid=([1-9]\d{0,18})$/.exec(ids[0]!)?.[1];
  const path = unescape(subvols[0]!.slice('subvol='.length));
  if (id === undefined || path !== e.root) return undefined;
  return { id: Number(id), path: path.replace(/^\/+/, '') };
}

/**
 * All mount points at or below `dir`, most recently mounted first: the order to unmount them
 * (mountinfo lists mounts in the order they were made; a stacked mount point appears twice).
 */
export function mountsBelow(entries: readonly MountInfoEntry[], dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return entries.map((e) => e.mountPoint).filter((p) => p === dir || p.startsWith(prefix)).reverse();
}

/**
 * The snapshot number N if `subvolPath` (from the top level, with or without leading slash) is
 * `<snapshotsPath>/N/snapshot`, else undefined.
 */
export function snapshotNumberOf(subvolPath: string, snapshotsPath: string): number | undefined {
  const p = subvolPath.replace(/^\/+/, '');
  const base = snapshotsPath.replace(/^\/+/, '');
  const prefix = base === '' ? '' : `${base}/`;
  if (!p.startsWith(prefix)) return undefined;
  const m = /^([1-9]\d{0,9})\/snapshot$/.exec(p.slice(prefix.length));
  return m ? Number(m[1]) : undefined;
}
