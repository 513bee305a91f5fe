/**
 * V8's code cache across runs (`module.enableCompileCache`), kept in one directory per installed
 * tiu: Node never removes the entries of files that are gone, and every tiu version's bundle has
 * new chunk names, so a single directory grew by a few MB per update, forever (158 MB on the CI
 * machine after a week). The directory is named after the entry file's inode and mtime; the first
 * run of a new install removes the caches no install has created or refreshed for a week.
 */
import module from 'node:module';
import { existsSync, lstatSync, readdirSync, rmSync, statSync } from 'node:fs';

export const COMPILE_CACHE_ROOT = '/var/cache/tiu/compile-cache';
/** Caches older than this are removed by the first run of another install. */
export const COMPILE_CACHE_MAX_AGE_MS = 7 * 24 * 3600 * 1000;

/** The cache directory's name for the tiu whose entry file is `entryFile` (changes when it is replaced). */
export function compileCacheKey(entryFile: string): string {
  const st = statSync(entryFile);
  return `tiu-${st.ino.toString(36)}-${Math.trunc(st.mtimeMs).toString(36)}`;
}

/**
 * Removes the entries of `root` other than `keep` that were last modified before `before` (ms
 * since the epoch); never follows a symlink. Returns the names removed.
 */
export function pruneCompileCaches(root: string, keep: string, before: number): string[] {
  const removed: string[] = [];
  for (const name of readdirSync(root)) {
    if (name === keep) continue;
    const st = lstatSync(`${root}/${name}`, { throwIfNoEntry: false });
    if (!st || st.mtimeMs >= before) continue;
    rmSync(`${root}/${name}`, { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/**
 * Enables the code cache in `root`/<key of entryFile>; when that directory is new (the first run
 * of this install), prunes the stale ones beside it. Returns the directory.
 */
export function enableCompileCache(entryFile: string, root = COMPILE_CACHE_ROOT, now = Date.now()): string {
  const key = compileCacheKey(entryFile);
  const dir = `${root}/${key}`;
  const fresh = !existsSync(dir);
  module.enableCompileCache?.(dir);
  if (fresh) pruneCompileCaches(root, key, now - COMPILE_CACHE_MAX_AGE_MS);
  return dir;
}
