/**
 * `tiu daemon`: the update service on the system bus (src/tiu/daemon/, docs/dbus.md). Started
 * by D-Bus activation through tiu-daemon.service; runs until SIGTERM/SIGINT. Policies from
 * tiu.conf's [daemon] section: bandwidth limit, no download on metered connections, automatic
 * download on start.
 */
import type { Context } from '../context.ts';
import { loadKeyring } from '../archive/trust.ts';
import { Updater } from '../daemon/updater.ts';
import { onInterrupt } from '../guard.ts';
import { UpdaterInterface, serve, isMetered, BUS_NAME } from '../daemon/dbus.ts';

export async function run(ctx: Context, o: { root: string; source?: string }): Promise<number> {
  const c = ctx.config;
  let iface: UpdaterInterface | undefined;
  let bus: Awaited<ReturnType<typeof serve>>['bus'] | undefined;
  const updater = new Updater({
    sys: ctx.sys,
    root: o.root,
    source: o.source ?? c.source,
    cacheDir: o.root === '/' ? c.cacheDir : `${o.root.replace(/\/+$/, '')}${c.cacheDir}`,
    keyringPem: () => loadKeyring(c),
    allowedSigners: c.allowedSigners,
    compatible: c.compatible,
    bootloader: c.bootloader,
    snapper: c.snapper,
    rateLimit: c.daemonBandwidthLimit || undefined,
    mayDownload: async () => (c.daemonDownloadOnMetered || !bus || !(await isMetered(bus)) ? { ok: true } : { ok: false, why: 'the connection is metered (NetworkManager) and [daemon] download_on_metered is false' }),
    onChange: (patch) => iface?.changed(patch),
  });
  iface = new UpdaterInterface(updater);
  await using served = await serve(updater, iface);
  bus = served.bus;
  ctx.log.info(`${BUS_NAME} ready (source ${o.source ?? c.source ?? 'not configured'})`);
  if (c.daemonAutomaticDownload && (o.source ?? c.source)) {
    if (await updater.check()) await updater.startDownload().catch((e) => ctx.log.warn(`automatic download: ${(e as Error).message}`));
  }
  let release = () => {};
  await new Promise<void>((resolve) => {
    release = onInterrupt(() => resolve());
  });
  release();
  if (updater.status.state === 'downloading') await updater.pause().catch(() => {});
  return 0;
}
