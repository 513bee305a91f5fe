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

/**
 * Whether a URL's archive that the server reports unchanged (304) and that was applied before is
 * still what the default snapshot holds: the `.meta` records the applied image's signed index
 * digest. After a rollback (or a --base update, or a snapshot changed by hand) it is not, and the
 * "unchanged" source must be fetched and applied again. Returns undefined when it is still
 * installed, else why not (for the log). Changes nothing.
 */
export async function appliedImageGone(ctx: Context, root: string, appliedIndexSha256: string | undefined): Promise<string | undefined> {
  if (!appliedIndexSha256) return 'the cache does not record which image it was';
  await using dev = await openDevice(ctx.sys, root, { snapper: ctx.config.snapper });
  const installed = await installedState(dev);
  if (installed && isUpToDate(installed, { index: { sha256: appliedIndexSha256 } })) return undefined;
  if (!installed) return `${root} has no default snapshot`;
  return installed.indexSha256 === appliedIndexSha256 ? `snapshot ${installed.number} (the default) changed since it was sealed` : `snapshot ${installed.number} (the default) holds another image (a rollback?)`;
}

/** The signed index digest of an archive file (signature checked), for the download's `.meta`. */
export async function indexDigestOf(ctx: Context, file: string, keyring: string | undefined): Promise<string> {
  const keyringPem = await loadKeyring(ctx.config, keyring);
  await using a = await openArchive(file, { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: ctx.config.compatible });
  return a.manifest.index.sha256;
}
