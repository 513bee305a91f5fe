/** `tiu repo promote <version> --from C --to D [--phased N]`. */
import type { Context } from '../context.ts';
import { promote } from '../repo/ops.ts';
import { keysDirOf, percent } from '../repo/cli-util.ts';

export async function run(ctx: Context, version: string, o: { repo: string; keys?: string; from: string; to: string; phased?: string; compatible?: string; json?: boolean }): Promise<number> {
  const hits = await promote({ dir: o.repo, keysDir: keysDirOf(o.repo, o.keys), version, from: o.from, to: o.to, phased: o.phased === undefined ? undefined : percent(o.phased, 100), compatible: o.compatible });
  if (o.json) ctx.out(JSON.stringify({ promoted: hits.map((h) => ({ path: h.path, channels: h.channels })) }));
  else for (const h of hits) ctx.out(`${h.path}: on ${Object.entries(h.channels).map(([c, e]) => `${c} (${e.phased}%)`).join(', ')}`);
  return 0;
}
