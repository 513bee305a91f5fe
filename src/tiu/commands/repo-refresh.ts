/** `tiu repo refresh`: re-sign snapshot and timestamp with fresh expiry (run from cron/CI). */
import type { Context } from '../context.ts';
import { refresh } from '../repo/ops.ts';
import { parseDuration } from '../repo/repository.ts';
import { keysDirOf } from '../repo/cli-util.ts';

export async function run(ctx: Context, o: { repo: string; keys?: string; timestampExpires?: string; snapshotExpires?: string; json?: boolean }): Promise<number> {
  const repo = await refresh({
    dir: o.repo, keysDir: keysDirOf(o.repo, o.keys),
    timestampExpiry: o.timestampExpires ? parseDuration(o.timestampExpires) : undefined,
    snapshotExpiry: o.snapshotExpires ? parseDuration(o.snapshotExpires) : undefined,
  });
  const r = { snapshot: { version: repo.snapshot.signed.version, expires: repo.snapshot.signed.expires }, timestamp: { version: repo.timestamp.signed.version, expires: repo.timestamp.signed.expires } };
  if (o.json) ctx.out(JSON.stringify(r));
  else ctx.out(`snapshot ${r.snapshot.version} expires ${r.snapshot.expires}; timestamp ${r.timestamp.version} expires ${r.timestamp.expires}`);
  return 0;
}
