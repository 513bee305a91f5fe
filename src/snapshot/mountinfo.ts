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
