/** `tiu pin N` / `tiu unpin N`: protect a snapshot from cleanup, or not. */
import type { Context } from '../context.ts';
import { openDevice, parseSnapshotNumber } from '../device/open.ts';
import { UD } from '../device/paths.ts';
import { TiuError } from '../../core/errors.ts';

export function run(ctx: Context, n: string, o: { root: string; json?: boolean }): Promise<number> {
  return setPinned(ctx, n, o, true);
}

/** Sets or clears the pin (userdata tiu-pinned and snapper's important). */
export async function setPinned(ctx: Context, n: string, o: { root: string; json?: boolean }, pinned: boolean): Promise<number> {
  const num = parseSnapshotNumber(n);
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper });
  const { store } = dev;
  if (!(await store.list()).some((s) => s.num === num)) throw new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${num} does not exist`, { hint: 'see tiu status for the numbers' });
  await store.setUserdata(num, pinned ? { [UD.pinned]: 'yes', [UD.important]: 'yes' } : { [UD.pinned]: null, [UD.important]: null });
  if (o.json) ctx.out(JSON.stringify({ root: o.root, number: num, pinned }, null, 2));
  else ctx.out(pinned ? `snapshot ${num} pinned: cleanup keeps it` : `snapshot ${num} unpinned`);
  return 0;
}
