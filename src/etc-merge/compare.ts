/**
 * Comparing etc entries: what counts as a change. Pure.
 *
 * mtime is never compared (rebuilt images differ in mtime only). Content means the type plus
 * the sha256 (files), the target (symlinks) or the device numbers; metadata means mode (not for
 * symlinks, whose mode is meaningless), owner (uid and gid) and xattrs.
 */
import { createHash } from 'node:crypto';
import type { EtcEntry, EtcChange, MetaField, EtcTree } from './types.ts';
import { comparePaths } from '../core/fileindex/types.ts';
import { metaDiff as indexMetaDiff, sameContent } from '../core/fileindex/compare.ts';

/** Same type and same content (metadata aside). Both undefined counts as equal. */
export function contentEqual(a: EtcEntry | undefined, b: EtcEntry | undefined): boolean {
  if (!a || !b) return a === b;
  return sameContent(a, b);
}

/** Which metadata fields differ (mode is ignored for symlinks; mtime never counts). */
export function metaDiff(a: EtcEntry, b: EtcEntry): MetaField[] {
  return indexMetaDiff(a, b) as MetaField[];
}

export function sameEntry(a: EtcEntry | undefined, b: EtcEntry | undefined): boolean {
  if (!a || !b) return a === b;
  return contentEqual(a, b) && metaDiff(a, b).length === 0;
}

/** What differs between two present entries, for reports. */
export function entryDiff(a: EtcEntry, b: EtcEntry): NonNullable<EtcChange['what']> {
  if (a.type !== b.type) return ['type'];
  const what: NonNullable<EtcChange['what']> = [];
  if (!contentEqual(a, b)) what.push(a.type === 'symlink' ? 'target' : 'content');
  what.push(...metaDiff(a, b));
  return what;
}

/**
 * A short digest of everything the merge compares about an entry (not mtime). Records the
 * state of a local /etc a merge was computed from, so a later pass can find paths edited since.
 */
export function entryDigest(e: EtcEntry): string {
  const xattrs = Object.keys(e.xattrs ?? {})
    .sort()
    .map((k) => [k, e.xattrs![k]]);
  const parts = [e.type, e.type === 'symlink' ? 0 : e.mode, e.uid, e.gid, e.sha256 ?? '', e.size ?? '', e.target ?? '', e.rdev ? `${e.rdev.major}:${e.rdev.minor}` : '', xattrs];
  return createHash('sha256').update(JSON.stringify(parts), 'latin1').digest('hex').slice(0, 32);
}

/** Digest of every path of a tree (see {@link entryDigest}); keys are byte-string paths. */
export function treeDigests(tree: EtcTree): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of [...tree.keys()].sort(comparePaths)) out[p] = entryDigest(tree.get(p)!);
  return out;
}

/** Parent path (`.` for top-level entries). */
export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '.' : p.slice(0, i);
}

/** Whether `p` is strictly below directory `dir`. */
export function isBelow(p: string, dir: string): boolean {
  return dir === '.' ? p !== '.' : p.startsWith(dir + '/');
}
