/** `tiu rollback [N]`: make N (default: the previous good snapshot) the default. */
import type { Context } from '../context.ts';
import { openDevice, facts, parseSnapshotNumber } from '../device/open.ts';
import { rollbackTarget } from '../device/policy.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { activateBoot } from '../device/boot.ts';

export async function run(ctx: Context, n: string | undefined, o: { root: string; force?: boolean; json?: boolean }): Promise<number> {
  const store = await openDevice(ctx.sys, o.root, ctx.config.snapper);
  await using _lock = await acquireLock(ctx.sys, o.root);
  const list = await facts(store);
  const target = rollbackTarget(list, n === undefined ? undefined : parseSnapshotNumber(n), !!o.force);
  const current = list.find((s) => s.isDefault)?.num;
  const result = { root: o.root, default: target, previous: current ?? null, changed: target !== current };
  if (target === current) {
    ctx.out(o.json ? JSON.stringify(result, null, 2) : `snapshot ${target} is already the default`);
    return 0;
  }
  await store.setDefault(target);
  // The bootloader follows: entries, default, and no boot trial for an older, known snapshot.
  await activateBoot(ctx.sys, { root: o.root, bootloader: ctx.config.bootloader, snapper: ctx.config.snapper });
  ctx.out(o.json ? JSON.stringify(result, null, 2) : `snapshot ${target} is now the default (was ${current ?? 'none'}); reboot to boot it`);
  return 0;
}
