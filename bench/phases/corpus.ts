/**
 * The corpus: the two cached Debian trees (test/fixtures/debian-tree.sh, cached in
 * /var/cache/tiu-fixtures, outside the repo), development keys, and v1.tiu (made untimed).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tiuArgv, type BenchContext } from '../lib/context.ts';

export interface Corpus {
  v1: string;
  v2: string;
  v1Tiu: string;
}

/** The path debian-tree.sh prints (its last stdout line). */
async function tree(ctx: BenchContext, which: 'v1' | 'v2'): Promise<string> {
  const r = await ctx.sys.run('bash', [join(ctx.repo, 'test/fixtures/debian-tree.sh'), which], { cwd: ctx.repo });
  const path = r.stdout.trim().split('\n').pop() ?? '';
  if (!existsSync(join(path, 'usr'))) throw new Error(`debian-tree.sh ${which} printed '${path}', which is not a root tree`);
  return path;
}

/** Makes the keys under ctx.work/keys (returned paths are those of ctx.keys). */
export async function makeKeys(ctx: BenchContext): Promise<void> {
  const [file, ...args] = tiuArgv(ctx, '-q', 'keygen', '-o', join(ctx.work, 'keys'));
  await ctx.sys.run(file!, args);
}

/** `tiu create` untimed (for inputs of other phases). */
export async function createArchive(ctx: BenchContext, tree: string, out: string, version: string, extra: string[] = []): Promise<void> {
  const [file, ...args] = tiuArgv(ctx, '-q', 'create', tree, '-o', out, '--key', ctx.keys.key, '--cert', ctx.keys.cert,
    '--compatible', 'tiu-bench', '--version', version, '--no-progress', ...extra);
  await ctx.sys.run(file!, args);
}

export async function buildCorpus(ctx: BenchContext): Promise<Corpus> {
  ctx.say('corpus: Debian trees (built once with mmdebstrap, then cached)');
  const v1 = await tree(ctx, 'v1');
  const v2 = await tree(ctx, 'v2');
  ctx.report.corpus.v1 = v1;
  ctx.report.corpus.v2 = v2;
  await makeKeys(ctx);
  const v1Tiu = join(ctx.work, 'v1.tiu');
  ctx.say('corpus: tiu create v1.tiu (untimed)');
  await createArchive(ctx, v1, v1Tiu, '1');
  return { v1, v2, v1Tiu };
}
