/**
 * `tiu publish`'s delta step: after a full image is published, deltas to it from the last N
 * full images of the same device on the same channel are made (`tiu delta`, signed with the
 * archive signing key) and published as `delta` targets whose base is the old image's index.
 * A device whose installed image is one of those bases downloads the delta instead of the
 * whole image (src/tiu/repo/update.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { System } from '../../core/system.ts';
import type { Manifest } from '../archive/manifest.ts';
import { createDelta } from '../delta/create.ts';
import { loadRepo, repoImages } from './repository.ts';
import { publish, storedTargetFile, type PublishOptions } from './ops.ts';
import type { RepoImage } from './model.ts';

/** Default number of earlier versions a publication makes deltas from. */
export const DEFAULT_DELTAS = 2;

/** publish's options for the full archive just published (and its verified manifest), plus the delta step's. */
export interface PublishDeltasOptions extends Omit<PublishOptions, 'kind' | 'base'> {
  /** How many earlier full images (newest first) get a delta. */
  count: number;
  keyPem: string;
  certPem: string;
  chainPem?: string;
  keyringPem: string;
  allowedSigners?: string[];
}

/** The full images a new publication gets deltas from: same device and channel, older, newest first. */
export function deltaBases(images: readonly RepoImage[], m: Manifest, channel: string, count: number): RepoImage[] {
  return images
    .filter((i) => i.kind === 'full' && i.compatible === m.compatible && i.channels[channel] !== undefined && i.index !== m.index.sha256 && i.version !== m.version)
    .sort((a, b) => b.build - a.build)
    .slice(0, Math.max(0, count));
}

/** Makes and publishes the deltas; returns the published delta targets. */
export async function publishDeltas(sys: System, o: PublishDeltasOptions): Promise<RepoImage[]> {
  const bases = deltaBases(repoImages(await loadRepo(o.dir)), o.manifest, o.channel, o.count);
  const out: RepoImage[] = [];
  const work = await mkdtemp(join(tmpdir(), 'tiu-publish-delta-'));
  try {
    for (const b of bases) {
      const file = join(work, `from-${b.version}.tiud`);
      await createDelta(sys, { old: storedTargetFile(o.dir, b), new: o.archive, output: file, keyPem: o.keyPem, certPem: o.certPem, chainPem: o.chainPem, keyringPem: o.keyringPem, allowedSigners: o.allowedSigners });
      out.push(await publish({ dir: o.dir, keysDir: o.keysDir, archive: file, manifest: o.manifest, channel: o.channel, phased: o.phased, kind: 'delta', base: b.index, now: o.now }));
      await rm(file, { force: true });
    }
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
