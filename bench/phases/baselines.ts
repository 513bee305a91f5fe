/**
 * Device-side baseline repositories, made once outside the timing from the same image trees tiu
 * applies: casync indexes + chunk stores, and an OSTree archive-mode "server" repo with v1 and v2.
 */
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchContext } from '../lib/context.ts';

export interface CasyncSetup {
  /** Per version: index file and a store holding all of its chunks. */
  v1: { idx: string; store: string };
  v2: { idx: string; store: string };
}

export async function prepareCasync(ctx: BenchContext, dir: string, img1: string, img2: string): Promise<CasyncSetup> {
  await mkdir(dir, { recursive: true });
  const out = {
    v1: { idx: join(dir, 'v1.caidx'), store: join(dir, 'store-v1') },
    v2: { idx: join(dir, 'v2.caidx'), store: join(dir, 'store-v2') },
  };
  for (const [v, img] of [[out.v1, img1], [out.v2, img2]] as const) {
    await ctx.sys.run('casync', ['make', `--store=${v.store}`, v.idx, img + '/']);
  }
  return out;
}

/** Chunk file name -> size, for every chunk of a casync store. */
export async function storeChunks(store: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const sub of await readdir(store)) {
    const d = join(store, sub);
    if (!(await stat(d)).isDirectory()) continue;
    for (const f of await readdir(d)) if (f.endsWith('.cacnk')) out.set(f, (await stat(join(d, f))).size);
  }
  return out;
}

/** Chunks (and their compressed bytes) in `neu` that `old` lacks. Pure. */
export function newChunks(old: Map<string, number>, neu: Map<string, number>): { chunks: number; bytes: number; total: number } {
  let chunks = 0;
  let bytes = 0;
  let total = 0;
  for (const [name, size] of neu) {
    total += size;
    if (!old.has(name)) {
      chunks++;
      bytes += size;
    }
  }
  return { chunks, bytes, total };
}

export const OSTREE_REFS = { v1: 'tiu-bench/v1', v2: 'tiu-bench/v2' } as const;

/** An archive-mode repo with the two image trees committed (what an update server would hold). */
export async function prepareOstree(ctx: BenchContext, repo: string, img1: string, img2: string): Promise<string> {
  await mkdir(repo, { recursive: true });
  await ctx.sys.run('ostree', ['init', `--repo=${repo}`, '--mode=archive']);
  await ctx.sys.run('ostree', ['commit', `--repo=${repo}`, `--branch=${OSTREE_REFS.v1}`, `--tree=dir=${img1}`]);
  await ctx.sys.run('ostree', ['commit', `--repo=${repo}`, `--branch=${OSTREE_REFS.v2}`, `--tree=dir=${img2}`]);
  return repo;
}

/** Total size of the regular files below `dir`. */
export async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size;
  }
  return n;
}
