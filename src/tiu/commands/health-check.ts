/**
 * `tiu health-check [--root R]`: check the booted snapshot, mark it good or bad, roll back and
 * reboot once on a new snapshot's failure (docs/boot.md). Run at boot by tiu-health.service.
 * `--sync-only`: only make the boot entries follow the snapshots (installer, manual fixes).
 * Exit 0 healthy (or synced), 1 unhealthy.
 */
import { readFile } from 'node:fs/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { rebootAllowedByCmdline } from '../boot/health.ts';
import { runHealthCheck } from '../boot/health-run.ts';
import { syncBoot } from '../boot/sync.ts';
import { finishFactoryReset } from '../device/factory-reset.ts';
import { openDevice } from '../device/open.ts';

export interface HealthCheckOptions {
  root: string;
  syncOnly?: boolean;
  dryRun?: boolean;
  reboot?: boolean;
  pluginTimeout?: string;
  json?: boolean;
}

export async function run(ctx: Context, o: HealthCheckOptions): Promise<number> {
  await using dev = await openDevice(ctx.sys, o.root, { lock: true, snapper: ctx.config.snapper, bootloader: ctx.config.bootloader });
  if (o.syncOnly) {
    const r = await syncBoot(dev);
    const p = r.plan;
    if (o.json) {
      ctx.out(JSON.stringify({ root: o.root, syncOnly: true, bootloader: r.kind, location: r.location ?? null, added: p.add.length, removed: p.remove.length, default: p.setDefault ?? null }, null, 2));
      return 0;
    }
    ctx.out(
      r.kind === 'none'
        ? 'no boot loader to update (bootloader = none, or none detected)'
        : `${r.kind} (${r.location}): ${p.add.length} entries added, ${p.remove.length} removed${p.setDefault ? `, default snapshot ${p.setDefault.num}${p.setDefault.fallback !== undefined ? ` on trial, fallback ${p.setDefault.fallback}` : ''}` : ', default unchanged'}`,
    );
    return 0;
  }
  const timeout = Number(o.pluginTimeout ?? '120');
  if (!Number.isFinite(timeout) || timeout <= 0) throw new TiuError('USAGE', `--plugin-timeout must be a positive number of seconds, got '${o.pluginTimeout}'`);
  // Tests and containers have no meaningful /proc/cmdline: TIU_KERNEL_CMDLINE stands in for it.
  const cmdline = ctx.env.kernelCmdline ?? (await readFile('/proc/cmdline', 'utf8').catch(() => ''));
  const r = await runHealthCheck(dev, {
    dryRun: !!o.dryRun || ctx.env.healthDry,
    rebootAllowed: o.reboot !== false && rebootAllowedByCmdline(cmdline),
    pluginTimeoutMs: timeout * 1000,
    // Under --json the progress lines go to the log (stderr, the journal), the result to stdout.
    say: (line) => (o.json ? ctx.log.info(line) : ctx.out(line)),
  });
  if (r.decision.verdict === 'healthy') {
    // A factory reset's old data goes only after the reset snapshot booted healthy.
    const f = await finishFactoryReset(dev);
    if (f.finished !== undefined) {
      // Deleted snapshots must lose their boot entries too.
      if (f.deletedSnapshots.length) await syncBoot(dev);
      (o.json ? (l: string) => ctx.log.info(l) : ctx.out)(`health-check: factory reset of snapshot ${f.finished} finished: ${f.deletedSubvolumes.length} old data subvolumes deleted${f.deletedSnapshots.length ? `, snapshots ${f.deletedSnapshots.join(', ')} deleted` : ''}${f.remapped.length ? `, snapshots ${f.remapped.join(', ')} kept (now mounting the new data)` : ''}`);
    }
  }
  if (o.json) {
    const d = r.decision;
    ctx.out(JSON.stringify({ root: o.root, verdict: d.verdict, booted: d.booted ?? null, checks: r.checks.map((c) => ({ name: c.name, ok: c.ok, skipped: !!c.skipped, detail: c.detail })), actions: d.actions, messages: d.messages }, null, 2));
  }
  return r.decision.verdict === 'healthy' || r.decision.verdict === 'not-a-snapshot' ? 0 : 1;
}
