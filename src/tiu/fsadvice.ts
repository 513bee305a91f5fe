/**
 * Turning two misleading errnos into what is really wrong: EPERM for root means an immutable or
 * append-only file (chattr +i/+a), not missing privileges; ENOSPC from setting an xattr on a
 * filesystem with free space means btrfs cannot store an attribute that large.
 */
import { statfs } from 'node:fs/promises';
import { TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import { displayPath } from '../core/fileindex/types.ts';

/** The `lsattr -d` flags of a path, or undefined (no lsattr, not supported). */
async function lsattrFlags(sys: System, path: string): Promise<string | undefined> {
  try {
    const r = await sys.run('lsattr', ['-d', '--', path], { allowFailure: true });
    if (r.exitCode !== 0) return undefined;
    return r.stdout.trim().split(/\s+/)[0];
  } catch {
    return undefined;
  }
}

/**
 * If `err` is EPERM/EACCES on `rel` (below `root`, shown below `shownRoot`) and it or its directory is immutable or
 * append-only, throws IMMUTABLE naming it and how to fix it. Otherwise returns (the caller
 * reports the original error).
 */
export async function explainEperm(sys: System, root: string, rel: string, err: unknown, shownRoot = ''): Promise<void> {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'EPERM' && code !== 'EACCES') return;
  const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '.';
  for (const p of [rel, parent]) {
    const flags = await lsattrFlags(sys, p === '.' ? root : `${root}/${p}`);
    if (!flags) continue;
    const what = flags.includes('i') ? 'immutable' : flags.includes('a') ? 'append-only' : undefined;
    if (!what) continue;
    const shown = p === '.' ? shownRoot || '/' : `${shownRoot}/${displayPath(p)}`;
    throw new TiuError('IMMUTABLE', `${shown} is ${what} (chattr +${what === 'immutable' ? 'i' : 'a'}), so tiu cannot change it`, {
      cause: err,
      hint: `run chattr -${what === 'immutable' ? 'i' : 'a'} ${shown} on the running system, then retry; nothing was made the default`,
    });
  }
}

/** Free bytes below which an ENOSPC is taken to mean a full filesystem. */
const FULL_BELOW = 64 * 1024 * 1024;

/**
 * Maps a NO_SPACE failure of setting xattrs below `root` to XATTR_UNSUPPORTED when the
 * filesystem has free space (btrfs answers ENOSPC for an xattr larger than a tree node can
 * hold). `largest` names the biggest attribute being set, for the message.
 */
export async function explainXattrNoSpace(root: string, err: unknown, largest: { path: string; name: string; bytes: number } | undefined): Promise<void> {
  if (!(err instanceof TiuError) || err.code !== 'NO_SPACE') return;
  const st = await statfs(root).catch(() => undefined);
  if (!st || st.bavail * st.bsize < FULL_BELOW) return;
  const which = largest ? `: ${largest.name} of /${displayPath(largest.path)} is ${largest.bytes} bytes` : '';
  throw new TiuError('XATTR_UNSUPPORTED', `the filesystem cannot store an extended attribute of the image${which} (btrfs limits an xattr to about one tree node, not free space)`, {
    cause: err,
    hint: 'rebuild the image without that attribute (or with a smaller value); nothing was made the default',
  });
}
