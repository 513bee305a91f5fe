/** Paths inside a root tree (an image tree or a snapshot), resolved as that system would. */
import { lstat, readlink } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The host path of `rel` inside the tree, with symlinks resolved as they would be on the running
 * system (absolute targets relative to `root`, `..` never above it), so that an absolute link
 * such as `etc/os-release -> /usr/lib/os-release` reads the tree's file and not the build
 * host's. Undefined if the path does not exist in the tree or the links loop.
 */
export async function resolveInTree(root: string, rel: string): Promise<string | undefined> {
  const todo = rel.split('/').filter((c) => c && c !== '.');
  const done: string[] = [];
  for (let hops = 0; todo.length; ) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, c);
    let st;
    try {
      st = await lstat(host);
    } catch {
      return undefined;
    }
    if (!st.isSymbolicLink()) {
      done.push(c);
      continue;
    }
    if (++hops > 40) return undefined;
    const target = await readlink(host);
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter((x) => x && x !== '.'));
  }
  return join(root, ...done);
}
