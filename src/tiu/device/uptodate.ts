/**
 * Whether an update would change nothing: the archive's image is the one the default snapshot
 * already holds. `tiu update` then says so and creates no snapshot (a daily timer must not fill
 * the snapshot list with copies and push the last real previous version out of `keep`).
 *
 * "The same image" is the same signed per-file index digest (manifest.index.sha256, recorded in
 * the snapshot at extract time), in a default snapshot that is finished and unchanged since it
 * was sealed (read-only, same btrfs generation), so a snapshot changed by hand is updated again.
 */
import type { Manifest } from '../archive/manifest.ts';
import type { Device } from './open.ts';
import { readRecordedImage, isBaseTrusted } from './state.ts';
import { UD } from './paths.ts';

export interface InstalledState {
  /** The default snapshot (the one that boots next). */
  number: number;
  /** Whether it is also the running one (false: a reboot is pending). */
  booted: boolean;
  finished: boolean;
  /** The index digest recorded in it, if tiu recorded one. */
  indexSha256: string | undefined;
  /** Read-only and unchanged since it was sealed. */
  sealed: boolean;
}

/** The decision, pure: the archive's image is the default snapshot's and nothing is unfinished. */
export function isUpToDate(installed: InstalledState | undefined, manifest: { index: Pick<Manifest['index'], 'sha256'> }): boolean {
  return installed !== undefined && installed.finished && installed.sealed && installed.indexSha256 === manifest.index.sha256;
}

/** Reads what {@link isUpToDate} needs about the default snapshot of `root`. Changes nothing. */
export async function installedState(dev: Device): Promise<InstalledState | undefined> {
  const { sys, store } = dev;
  const num = await store.getDefault();
  if (num === undefined) return undefined;
  const info = (await store.list()).find((s) => s.num === num);
  if (!info) return undefined;
  const dir = dev.snapshotDir(num);
  const recorded = await readRecordedImage(dir);
  const sealed = recorded !== undefined && (await isBaseTrusted(sys, dir, info.userdata[UD.generation]));
  return { number: num, booted: info.isMounted, finished: info.userdata[UD.inProgress] !== 'yes', indexSha256: recorded?.manifest.index.sha256, sealed };
}
