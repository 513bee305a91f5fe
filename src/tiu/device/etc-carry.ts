/**
 * When the local /etc can be carried over as it is: the new image's vendor /etc equals the
 * base's, so a three-way merge would give the local /etc unchanged (extract.ts). Pure.
 */
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { sameEntry } from './trusted.ts';

/** The entries of `index` below etc/, re-rooted (`etc` → `.`), hardlinks resolved to plain files. */
export function etcTreeOfIndex(index: readonly IndexEntry[]): Map<string, IndexEntry> {
  // (the whole index by path only when /etc has a hardlink to resolve)
  let byPath: Map<string, IndexEntry> | undefined;
  const out = new Map<string, IndexEntry>();
  for (const e of index) {
    if (!isEtc(e.path)) continue;
    const first = e.hardlink !== undefined ? (byPath ??= new Map(index.map((x) => [x.path, x]))).get(e.hardlink) : undefined;
    const { hardlink: _h, sparse: _s, ...rest } = e;
    out.set(e.path === 'etc' ? '.' : e.path.slice(4), { ...rest, size: rest.size ?? first?.size, sha256: rest.sha256 ?? first?.sha256, path: e.path === 'etc' ? '.' : e.path.slice(4) });
  }
  return out;
}

/** Whether `p` is /etc or below it. Pure. */
export function isEtc(p: string): boolean {
  return p === 'etc' || p.startsWith('etc/');
}

/**
 * Whether the vendor /etc of two indexes is the same, as a merge would see it: every entry below
 * etc/ with its attributes, and hardlinks resolved; and the new image has no hardlink across the
 * /etc boundary. Pure.
 */
export function sameVendorEtc(a: readonly IndexEntry[], b: readonly IndexEntry[]): boolean {
  // A hardlink between /etc and the rest of the new image: /etc cannot be left out of the tree step.
  for (const e of b) if (e.hardlink !== undefined && isEtc(e.hardlink) !== isEtc(e.path)) return false;
  const x = etcTreeOfIndex(a);
  const y = etcTreeOfIndex(b);
  if (x.size !== y.size) return false;
  for (const [p, e] of x) {
    const f = y.get(p);
    if (!f || !sameEntry(e, f)) return false;
  }
  return true;
}

