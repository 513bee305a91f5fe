/** `tiu etc sync`: re-merge /etc edits made on the running snapshot after the update was prepared. */
import type { Context } from '../context.ts';
import { openDevice } from '../device/open.ts';
import { UD } from '../device/paths.ts';
import { removeSyncpoint, syncEtc } from '../device/etc.ts';

export async function run(ctx: Context, o: { root: string }): Promise<number> {
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper });
  const list = await dev.facts();
  const next = list.find((s) => s.isDefault);
  const base = next?.userdata[UD.base] === undefined ? undefined : Number(next.userdata[UD.base]);
  if (!next || base === undefined || base === next.num || !list.some((s) => s.num === base)) {
    ctx.out('nothing to sync: no pending update prepared by tiu');
    return 0;
  }
  const r = await syncEtc(ctx.sys, { baseDir: dev.snapshotDir(base), newDir: dev.snapshotDir(next.num) });
  // Once the snapshot runs, its /etc is the live one and its syncpoint has done its job (the
  // boot-time run above carried the last edits of an unclean shutdown). Without syncpoints the
  // unit skips tiu at every later boot and shutdown.
  if (next.isMounted) await removeSyncpoint(ctx.sys, dev.snapshotDir(next.num));
  if (r.changed === 0) {
    ctx.out(`/etc of snapshot ${base} has not changed since snapshot ${next.num} was prepared`);
    return 0;
  }
  const e = r.report!;
  ctx.out(`carried ${r.changed} changed path(s) of /etc from snapshot ${base} into snapshot ${next.num}: ${e.keptLocal.length} kept local, ${e.merged.length} merged, ${e.conflicts.length} conflicts`);
  for (const c of e.conflicts) ctx.out(`  conflict: /etc/${c.path}: ${c.reason}${c.tiunew ? ` (other version in /etc/${c.tiunew})` : ''}`);
  return 0;
}
