/**
 * What an update really changes: the bytes of regular files whose content differs between two
 * trees (sha256 differs, or the path is new or was not a regular file before). This is the
 * floor for the disk growth of applying the update into a snapshot of the old tree.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';

export interface FileFacts {
  kind: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mtimeMs: number;
  /** Hex sha256 of the content, regular files only. */
  sha256?: string;
}

/** Path (relative, raw bytes as latin1) -> facts. */
export type TreeScan = Map<string, FileFacts>;

export interface ContentDiff {
  /** Regular files whose content is new or differs. */
  changedFiles: number;
  /** Sum of their sizes. */
  changedBytes: number;
  /** Of those, paths that did not exist as regular files before. */
  newFiles: number;
  /** Regular files with the same content but another mtime (a size+mtime tool rewrites them). */
  mtimeOnlyFiles: number;
  mtimeOnlyBytes: number;
  /** Paths of the old tree that the new one lacks. */
  removedPaths: number;
  /** Regular files of the new tree and their bytes. */
  files: number;
  bytes: number;
}

/** Compares two scans. Pure. */
export function diffContent(old: TreeScan, neu: TreeScan): ContentDiff {
  const d: ContentDiff = { changedFiles: 0, changedBytes: 0, newFiles: 0, mtimeOnlyFiles: 0, mtimeOnlyBytes: 0, removedPaths: 0, files: 0, bytes: 0 };
  for (const [path, f] of neu) {
    if (f.kind !== 'file') continue;
    d.files++;
    d.bytes += f.size;
    const o = old.get(path);
    if (!o || o.kind !== 'file') {
      d.changedFiles++;
      d.changedBytes += f.size;
      d.newFiles++;
    } else if (o.sha256 !== f.sha256) {
      d.changedFiles++;
      d.changedBytes += f.size;
    } else if (o.mtimeMs !== f.mtimeMs) {
      d.mtimeOnlyFiles++;
      d.mtimeOnlyBytes += f.size;
    }
  }
  for (const path of old.keys()) if (!neu.has(path)) d.removedPaths++;
  return d;
}

async function sha256File(path: Buffer): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Walks `root` (not following symlinks) and hashes every regular file, streaming. */
export async function scanTree(root: string): Promise<TreeScan> {
  const out: TreeScan = new Map();
  const rootBuf = Buffer.from(root);
  const walk = async (rel: Buffer): Promise<void> => {
    const dir = rel.length ? Buffer.concat([rootBuf, Buffer.from('/'), rel]) : rootBuf;
    const names = (await readdir(dir, { encoding: 'buffer' })) as Buffer[];
    for (const name of names) {
      const childRel = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
      const abs = Buffer.concat([rootBuf, Buffer.from('/'), childRel]);
      const st = await lstat(abs);
      const kind: FileFacts['kind'] = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      const facts: FileFacts = { kind, size: st.size, mtimeMs: st.mtimeMs };
      if (kind === 'file') facts.sha256 = await sha256File(abs);
      out.set(childRel.toString('latin1'), facts);
      if (kind === 'dir') await walk(childRel);
    }
  };
  await walk(Buffer.alloc(0));
  return out;
}
