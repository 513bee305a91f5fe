/** `tiu cleanup`: delete old snapshots (number algorithm) and leftovers of interrupted runs. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { openDevice } from '../device/open.ts';
import { planCleanup } from '../device/policy.ts';
import { cleanupInterrupted, deleteSnapshot } from '../device/transaction.ts';
import { activateBoot } from '../device/boot.ts';

export async function run(ctx: Context, o: { root: string; keep?: string; dryRun?: boolean; json?: boolean }): Promise<number> {
  const keep = o.keep === undefined ? ctx.config.keep : Number(o.keep);
  if (!Number.isInteger(keep) || keep < 0) throw new TiuError('USAGE', `--keep must be a whole number, got '${o.keep}'`);
  const say = (line: string) => !o.json && ctx.out(line);
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper, bootloader: ctx.config.bootloader });
  const interrupted = o.dryRun ? [] : await cleanupInterrupted(dev);
  for (const n of interrupted) say(`deleted snapshot ${n} (left over by an interrupted run)`);
  const plan = planCleanup(await dev.facts(), keep);
  const deleted: { number: number; reason: string }[] = [];
  if (plan.delete.length === 0) say('nothing to delete');
  for (const d of plan.delete) {
    if (o.dryRun) {
      say(`would delete snapshot ${d.num} (${d.reason})`);
      continue;
    }
    await deleteSnapshot(dev, d.num);
    deleted.push({ number: d.num, reason: d.reason });
    say(`deleted snapshot ${d.num} (${d.reason})`);
  }
  // Remove the deleted snapshots' boot entries.
  if (!o.dryRun && plan.delete.length > 0) await activateBoot(dev);
  if (o.json) {
    const planned = plan.delete.map((d) => ({ number: d.num, reason: d.reason }));
    ctx.out(JSON.stringify({ root: o.root, keep, dryRun: !!o.dryRun, interrupted, planned, deleted }, null, 2));
  }
  return 0;
}
