/** `tiu repo status [--json]`: roles (versions, expiry, keys) and every image with its channels. */
import type { Context } from '../context.ts';
import { status } from '../repo/ops.ts';

export async function run(ctx: Context, o: { repo: string; json?: boolean }): Promise<number> {
  const s = await status(o.repo);
  if (o.json) {
    ctx.out(JSON.stringify(s, null, 2));
    return 0;
  }
  for (const [role, r] of Object.entries(s.roles)) ctx.out(`${role.padEnd(9)} version ${r.version}, expires ${r.expires}, keys ${r.keyids.map((k) => k.slice(0, 12)).join(' ')}`);
  ctx.out('');
  for (const i of s.images) {
    ctx.out(`${i.compatible} ${i.version} build ${i.build} ${i.kind} ${i.length} bytes: ${Object.entries(i.channels).map(([c, e]) => `${c}${e.phased < 100 ? ` ${e.phased}%` : ''}`).join(', ')}`);
  }
  if (s.images.length === 0) ctx.out('no images published yet (tiu publish ARCHIVE --repo DIR --channel stable)');
  return 0;
}
