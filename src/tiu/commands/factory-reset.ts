/**
 * `tiu factory-reset`: erase all user data at the next boot (src/tiu/device/factory-reset.ts,
 * docs/factory-reset.md). Asks for confirmation on a terminal unless --yes; without a terminal
 * and without --yes it refuses (RESET_REFUSED), so a script cannot wipe a device by accident.
 */
import { createInterface } from 'node:readline/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { factoryReset } from '../device/factory-reset.ts';
import { openDevice } from '../device/open.ts';

export interface FactoryResetCommandOptions {
  root: string;
  keepSnapshots?: boolean;
  yes?: boolean;
  json?: boolean;
}

async function confirm(ctx: Context, root: string): Promise<void> {
  if (!process.stdin.isTTY) {
    throw new TiuError('RESET_REFUSED', 'factory reset not confirmed: no terminal to ask on', { hint: 'pass --yes to confirm that all user data may be erased' });
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`This erases ALL user data on ${root} at the next boot (/etc, /var, /home, /root, /srv, /opt, /usr/local).\nType "erase" to continue: `);
    if (answer.trim() !== 'erase') throw new TiuError('RESET_REFUSED', 'factory reset not confirmed', { hint: 'type erase, or pass --yes' });
  } finally {
    rl.close();
  }
  ctx.log.debug('factory reset confirmed on the terminal');
}

export async function run(ctx: Context, o: FactoryResetCommandOptions): Promise<number> {
  if (!o.yes) await confirm(ctx, o.root);
  // Test hook for the crash tests: SIGKILL ourselves when this stage starts.
  const stopAt = ctx.env.testResetKillAt;
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper, bootloader: ctx.config.bootloader });
  const r = await factoryReset(dev, {
    keepSnapshots: !!o.keepSnapshots,
    onStage: stopAt ? (s) => s === stopAt && process.kill(process.pid, 'SIGKILL') : undefined,
  });
  if (o.json) {
    ctx.out(JSON.stringify({ snapshot: r.snapshot, base: r.base, version: r.version ?? null, keepSnapshots: r.marker.keepSnapshots, old: r.marker.old, new: r.marker.new, removedDataSets: r.removedDataSets }, null, 2));
    return 0;
  }
  ctx.out(`snapshot ${r.snapshot}: factory reset of ${r.version ?? `snapshot ${r.base}`} is the new default; reboot to erase all user data`);
  ctx.out(`the old data is deleted only after the reset boot succeeded${r.marker.keepSnapshots ? '; the other snapshots are kept' : ', together with the other snapshots'}`);
  return 0;
}
