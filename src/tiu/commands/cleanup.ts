/** `tiu cleanup`: delete old snapshots (number algorithm) and leftovers of interrupted runs. */
import type { Context } from '../context.ts';
import { TiuError } from '../errors.ts';
import { openDevice, facts } from '../device/open.ts';
import { planCleanup } from '../device/policy.ts';
import { cleanupInterrupted, deleteSnapshot } from '../device/transaction.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { activateBoot } from '../device/boot.ts';

export async function run(ctx: Context, o: { root: string; keep?: string; dryRun?: boolean }): Promise<number> {
  const keep = o.keep === undefined ? ctx.config.keep : Number(o.keep);
  if (!Number.isInteger(keep) || keep < 0) throw new TiuError('USAGE', `--keep must be a whole number, got '${o.keep}'`);
  const store = await openDevice(ctx.sys, o.root, ctx.config.snapper);
  await using _lock = await acquireLock(ctx.sys, o.root);
  if (!o.dryRun) for (const n of await cleanupInterrupted(ctx.sys, store, o.root)) ctx.out(`deleted snapshot ${n} (left over by an interrupted run)`);
  const plan = planCleanup(await facts(store), keep);
  if (plan.delete.length === 0) {
    ctx.out('nothing to delete');
    return 0;
  }
  for (const d of plan.delete) {
    if (o.dryRun) {
      ctx.out(`would delete snapshot ${d.num} (${d.reason})`);
      continue;
    }
    await deleteSnapshot(ctx.sys, store, o.root, d.num);
    ctx.out(`deleted snapshot ${d.num} (${d.reason})`);
  }
  // Remove the deleted snapshots' boot entries.
  if (!o.dryRun) await activateBoot(ctx.sys, { root: o.root, bootloader: ctx.config.bootloader, snapper: ctx.config.snapper });
  return 0;
}
