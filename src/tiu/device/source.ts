/**
 * What an update is applied from: a full archive (verified block by block, then mounted) or a
 * delta against the base snapshot (docs/delta-format.md; the image is never mounted). Either way
 * the caller gets the new signed manifest, the new index, a directory holding that index at
 * INDEX_PATH, and — for a delta — the content source the executor reads from.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { System } from '../../core/system.ts';
import { openArchive, type OpenedArchive } from '../archive/open.ts';
import { mountImage } from '../archive/mount.ts';
import { guardDisposable } from '../guard.ts';
import { checkCompatible, type Manifest } from '../archive/manifest.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import { isDeltaFile, openDelta } from '../delta/open.ts';
import { TiuError } from '../../core/errors.ts';
import { prepareDeltaSource, type DeltaSource } from '../delta/apply.ts';
import { readImageIndex, type RecordedImage } from './state.ts';
import { hashPath } from '../../core/fileindex/hash.ts';
import { sameImage } from './policy.ts';
import { INDEX_PATH } from './paths.ts';
import { readSignature } from './extract.ts';

export interface UpdateSource extends AsyncDisposable {
  kind: 'image' | 'delta';
  manifest: Manifest;
  manifestBytes: Buffer;
  /** The new image's CMS SignedData (DER), recorded in the snapshot for `tiu verify --system`. */
  signatureDer: Buffer;
  verification: 'dm-verity' | 'userspace' | 'signed-index';
  target: IndexEntry[];
  /** The mounted image, or (delta) a directory with only the rebuilt index at INDEX_PATH. */
  imageRoot: string;
  /** The new image's /etc, when it is mounted (dry runs show the merge against it). */
  etcDir?: string;
  /** Set for a delta: where the executor takes content from. */
  content?: DeltaSource;
}

/**
 * A full archive holding the very image the trusted base was made from (the same signed index
 * digest): nothing is read from it, so it is not mounted. Its blocks are still all checked, in
 * `verified` (started when the archive was opened); the caller awaits it before creating anything.
 */
export interface SameImageSource extends AsyncDisposable {
  kind: 'same-image';
  manifest: Manifest;
  manifestBytes: Buffer;
  signatureDer: Buffer;
  verification: 'userspace';
  verified: Promise<void>;
}

export interface OpenUpdateOptions {
  path: string;
  keyringPem: string;
  allowedSigners?: string[];
  compatible?: string;
  baseNum: number;
  baseDir: string;
  recorded: RecordedImage | undefined;
  onProgress?: (phase: string, fraction: number) => void;
  /**
   * Whether the base is trusted (its recorded index describes it): asked only when a full
   * archive's signed index digest equals the base's recorded one.
   */
  baseTrusted?: () => Promise<boolean>;
  /** The file, opened ahead of the device ({@link prefetchUpdateSource}); else opened now. */
  prefetched?: PrefetchedSource;
  /**
   * Called with a full archive's authenticated manifest, before its blocks are known to be good
   * (the caller may start reading what it will need then, while the check finishes).
   */
  onManifest?: (m: Manifest) => void;
}

/** A full archive opened and authenticated, its blocks being verified (`stop` ends that early). */
interface OpenedArchiveSource {
  archive: OpenedArchive;
  verified: Promise<void>;
  stop: AbortController;
}

/**
 * An update file opened ahead of the device ({@link prefetchUpdateSource}); {@link openUpdateSource}
 * takes it over. Disposing it closes what was not taken (the block check stopped first).
 */
export interface PrefetchedSource extends AsyncDisposable {
  readonly path: string;
  /** The opened archive, once (undefined: a delta, which the taker opens); rejects with what opening it threw. */
  take(): Promise<OpenedArchiveSource | undefined>;
}

export interface SourceTrust {
  keyringPem: string;
  allowedSigners?: string[];
}

/**
 * Opens, authenticates and starts verifying every block of a full archive before the device is
 * opened: the signature check and the first blocks are done while the device's lock, snapshot
 * list and base are being read (child processes this thread only waits on). Nothing is reported
 * here: an error surfaces when {@link PrefetchedSource.take} is awaited, where opening it later
 * would have thrown (so a bad root is still reported before a bad archive). The device's
 * compatible string is checked by {@link openUpdateSource}, which knows it. A delta is opened
 * there too: checked ahead of the device, its signatures grew the heap early and the apply
 * step's peak RSS by ~4 MiB, for ~20 ms saved.
 */
export function prefetchUpdateSource(path: string, trust: SourceTrust, onProgress?: (phase: string, fraction: number) => void, sys?: System): PrefetchedSource {
  const opened = isDeltaFile(path).then((delta) => (delta ? undefined : openArchiveSource(sys, path, trust, onProgress)));
  opened.catch(() => {});
  let taken = false;
  return {
    path,
    take() {
      if (taken) return Promise.reject(new TiuError('INTERNAL', `${path}: prefetched source taken twice`));
      taken = true;
      return opened;
    },
    async [Symbol.asyncDispose]() {
      if (taken) return;
      taken = true;
      const o = await opened.catch(() => undefined);
      if (o) {
        // (not taken: the device could not be opened; the block check is stopped, not finished)
        o.stop.abort();
        await o.verified.catch(() => {});
        await o.archive.close().catch(() => {});
      }
    },
  };
}

async function openArchiveSource(sys: System | undefined, path: string, trust: SourceTrust, onProgress?: (phase: string, fraction: number) => void): Promise<OpenedArchiveSource> {
  // (sys: veritysetup checks the blocks on the other core, from the moment the manifest is read;
  // this thread has the signature, the lock and the snapshots to do meanwhile)
  const archive = await openArchive(path, { ...trust, sys });
  onProgress?.('verifying', 0);
  // Every block is checked before anything is mounted; started now, so that the checks of the
  // device and the base (and, for the same image, everything else) happen meanwhile.
  const stop = new AbortController();
  const verified = archive.verifyData((d, t) => onProgress?.('verifying', t ? d / t : 1), stop.signal);
  verified.catch(() => {});
  return { archive, verified, stop };
}

export async function openUpdateSource(sys: System, o: OpenUpdateOptions): Promise<UpdateSource | SameImageSource> {
  const trust = { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners };
  const prefetched = await o.prefetched?.take();
  // (a prefetch that gave no archive was given a delta)
  if (!prefetched && (o.prefetched || (await isDeltaFile(o.path)))) {
    o.onProgress?.('verifying', 0);
    const delta = await openDelta(o.path, { ...trust, compatible: o.compatible });
    const workDir = await mkdtemp(join(tmpdir(), 'tiu-delta-apply-'));
    let content: DeltaSource | undefined;
    const dispose = async () => {
      await content?.close();
      await delta[Symbol.asyncDispose]();
      await rm(workDir, { recursive: true, force: true });
    };
    try {
      content = await prepareDeltaSource(sys, delta, { baseNum: o.baseNum, baseDir: o.baseDir, recorded: o.recorded, workDir });
      o.onProgress?.('verifying', 1);
      // Its work directory is removed by the top-level guard too if tiu dies meanwhile.
      return guardDisposable<UpdateSource>({ kind: 'delta', manifest: delta.manifest, manifestBytes: delta.manifestBytes, signatureDer: delta.signatureDer, verification: 'signed-index', target: content.target, imageRoot: content.indexRoot, content, [Symbol.asyncDispose]: dispose });
    } catch (e) {
      await dispose();
      throw e;
    }
  }
  const { archive, verified, stop } = prefetched ?? (await openArchiveSource(sys, o.path, trust, o.onProgress));
  try {
    const m = archive.manifest;
    checkCompatible(m, o.compatible);
    o.onManifest?.(m);
    // (the recorded index file itself must have the signed digest too, and the paths the update
    // leaves alone must be the same ones; else the usual path)
    if (o.recorded && sameImage(m, o.recorded.manifest) && (await o.baseTrusted?.()) && (await hashPath(o.recorded.indexPath).catch(() => '')) === m.index.sha256) {
      const signatureDer = await readSignature(archive);
      return guardDisposable<SameImageSource>({
        kind: 'same-image', manifest: m, manifestBytes: archive.manifestBytes, signatureDer, verification: 'userspace', verified,
        [Symbol.asyncDispose]: async () => {
          // (the check reads through the descriptor: it must have settled before that closes)
          await verified.catch(() => {});
          await archive[Symbol.asyncDispose]();
        },
      });
    }
    await verified;
    const image = await mountImage(sys, archive, { verifiedInUserspace: true });
    // Once only: extract lets the image go as soon as it has read the last of it (the unmount
    // then runs beside the boot preparation and the seal), and again at the end of its scope.
    let disposed: Promise<void> | undefined;
    const dispose = () =>
      (disposed ??= (async () => {
        await image[Symbol.asyncDispose]();
        await archive[Symbol.asyncDispose]();
      })());
    try {
      const target = await readImageIndex(`${image.dir}/${INDEX_PATH}`, m.index.sha256);
      return { kind: 'image', manifest: m, manifestBytes: archive.manifestBytes, signatureDer: await readSignature(archive), verification: image.verification, target, imageRoot: image.dir, etcDir: `${image.dir}/etc`, [Symbol.asyncDispose]: dispose };
    } catch (e) {
      await dispose();
      throw e;
    }
  } catch (e) {
    stop.abort();
    await verified.catch(() => {});
    await archive.close().catch(() => {});
    throw e;
  }
}

