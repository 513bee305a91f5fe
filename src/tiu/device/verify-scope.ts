/**
 * What `tiu verify --system` compares, and how a difference is reported. Pure: the executor
 * (verify-system.ts) streams the recorded index and a scan of the snapshot through
 * {@link systemDifferences}, which holds one entry of each side at a time.
 */
import { diffIndexStreams, type ChangeField } from '../../core/fileindex/diff.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { dirsTouchedByTiu, excludedMatcher, isTiuManaged, protectedMatcher } from './paths.ts';

export type DifferenceKind = 'modified' | 'missing' | 'extra';

export interface SystemDifference {
  /** Relative byte-string path (as in the index). */
  path: string;
  kind: DifferenceKind;
  /** For `modified`: what differs (type, size, sha256, target, rdev, mode, uid, gid, mtime, xattrs, hardlink). */
  fields: ChangeField[];
}

/**
 * Which paths take part in the comparison. Left out: /etc (the device's own, merged
 * configuration), the contents of the image's excluded directories (/var, /home, ...), and
 * tiu's own state. A path the index does not list is only tolerated where tiu itself creates
 * it: mount points of the separate subvolumes (and their parents) and the directories of tiu's
 * state; anywhere else it is `extra`.
 */
export function verifyScope(excluded: readonly string[]): { compared: (p: string) => boolean; toleratedExtra: (p: string) => boolean } {
  const isExcluded = excludedMatcher(excluded);
  const isProtected = protectedMatcher(excluded);
  const tiuDirs = new Set(dirsTouchedByTiu());
  return {
    compared: (p) => p !== 'etc' && !p.startsWith('etc/') && !isExcluded(p) && !isTiuManaged(p),
    toleratedExtra: (p) => isProtected(p) || tiuDirs.has(p),
  };
}

async function* only(entries: AsyncIterable<IndexEntry>, keep: (p: string) => boolean): AsyncGenerator<IndexEntry, void, undefined> {
  for await (const e of entries) if (keep(e.path)) yield e;
}

/**
 * The differences between what the signed index says (`recorded`) and what the snapshot holds
 * (`actual`, a scan with content digests), both in tree order, in tree order. A file without a
 * digest on the actual side counts as modified (a missing digest cannot prove equality).
 */
export async function* systemDifferences(
  recorded: AsyncIterable<IndexEntry>,
  actual: AsyncIterable<IndexEntry>,
  excluded: readonly string[],
): AsyncGenerator<SystemDifference, void, undefined> {
  const scope = verifyScope(excluded);
  for await (const c of diffIndexStreams(only(recorded, scope.compared), only(actual, scope.compared), { includeSame: false })) {
    if (c.kind === 'added') {
      if (!(c.new!.type === 'dir' && scope.toleratedExtra(c.path))) yield { path: c.path, kind: 'extra', fields: [] };
    } else if (c.kind === 'removed') {
      yield { path: c.path, kind: 'missing', fields: [] };
    } else {
      yield { path: c.path, kind: 'modified', fields: c.fields.length ? c.fields : ['hardlink'] };
    }
  }
}

/** One line per difference, like `rpm -V`'s: the kind, what differs, the path. */
export function formatDifference(d: SystemDifference, display: (p: string) => string): string {
  const what = d.kind === 'modified' ? `modified (${d.fields.join(', ')})` : d.kind;
  return `${what.padEnd(9)} /${display(d.path)}`;
}
