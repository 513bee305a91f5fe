/**
 * `tiu update`'s no-op path: when the (signature-checked) archive holds the image the default
 * snapshot already has, say so, create nothing, and exit 0 — or 77 with --unchanged-exit-77, as
 * `rpm-ostree upgrade --unchanged-exit-77` does, so a script can tell "nothing to do".
 */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { installedState, isUpToDate } from '../device/uptodate.ts';
import { openDevice } from '../device/open.ts';

/** The exit code of an update that found nothing to do, when asked for a distinct one. */
export const UNCHANGED_EXIT = 77;

/** Returns the exit code if the update is a no-op (and reports it), else undefined. */
export async function sameAsInstalled(ctx: Context, file: string, o: { root: string; keyring?: string; json?: boolean; unchangedExit77?: boolean }): Promise<number | undefined> {
  await using dev = await openDevice(ctx.sys, o.root, { snapper: ctx.config.snapper });
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  const installed = await installedState(dev);
  // Only the signature is checked here: the digest compared is the signed one.
  await using a = await openArchive(file, { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: ctx.config.compatible });
  if (!installed || !isUpToDate(installed, a.manifest)) return undefined;
  const m = a.manifest;
  if (o.json) {
    ctx.out(JSON.stringify({ status: 'unchanged', root: o.root, number: installed.number, version: m.version, pending: !installed.booted }, null, 2));
  } else {
    ctx.out(`already up to date: snapshot ${installed.number} holds ${m.compatible} ${m.version}${installed.booted ? '' : '; reboot to activate it'} (use --reinstall to make a new snapshot anyway)`);
  }
  return o.unchangedExit77 ? UNCHANGED_EXIT : 0;
}
