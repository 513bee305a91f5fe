/** `tiu rollback [N]`: make N (default: the previous good snapshot) the default. */
import type { Context } from '../context.ts';
import { openDevice, parseSnapshotNumber } from '../device/open.ts';
import { rollbackTarget } from '../device/policy.ts';
import { activateBoot } from '../device/boot.ts';

export async function run(ctx: Context, n: string | undefined, o: { root: string; force?: boolean; json?: boolean }): Promise<number> {
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper, bootloader: ctx.config.bootloader });
  const list = await dev.facts();
  const target = rollbackTarget(list, n === undefined ? undefined : parseSnapshotNumber(n), !!o.force);
  const current = list.find((s) => s.isDefault)?.num;
  const result = { root: o.root, default: target, previous: current ?? null, changed: target !== current };
  if (target === current) {
    ctx.out(o.json ? JSON.stringify(result, null, 2) : `snapshot ${target} is already the default`);
    return 0;
  }
  await dev.store.setDefault(target);
  // The bootloader follows: entries, default, and no boot trial for an older, known snapshot.
  await activateBoot(dev);
  ctx.out(o.json ? JSON.stringify(result, null, 2) : `snapshot ${target} is now the default (was ${current ?? 'none'}); reboot to boot it`);
  return 0;
}
