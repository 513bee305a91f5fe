/** `tiu etc diff`: this system's /etc against the vendor /etc of its image. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { etcDiff } from '../../etc-merge/apply.ts';
import { displayPath } from '../../core/fileindex/types.ts';
import { VENDOR_ETC_DIR } from '../device/paths.ts';
import { stat } from 'node:fs/promises';

export async function run(ctx: Context, o: { root: string; json?: boolean }): Promise<number> {
  const root = o.root.replace(/\/+$/, '') || '';
  const vendor = `${root}/${VENDOR_ETC_DIR}`;
  if (!(await stat(vendor).then(() => true, () => false))) {
    throw new TiuError('ROOT_LAYOUT', `${vendor} does not exist: this system was not installed or updated by tiu`, { hint: 'run it on a tiu-managed system (or pass --root)' });
  }
  const changes = await etcDiff(ctx.sys, vendor, `${root}/etc`);
  if (o.json) {
    ctx.out(JSON.stringify(changes.map((c) => ({ ...c, path: displayPath(c.path) })), null, 2));
    return 0;
  }
  const mark = { added: 'A', modified: 'M', deleted: 'D' } as Record<string, string>;
  for (const c of changes) ctx.out(`${mark[c.change] ?? '?'} /etc/${displayPath(c.path)}${c.what && c.what.length ? `  (${c.what.join(', ')})` : ''}`);
  if (changes.length === 0) ctx.out('no local changes to /etc');
  return 0;
}
