/**
 * `tiu verify --system`: is a snapshot still exactly the image it was made from? (as
 * `ostree fsck` / `rpm -V`). Re-checks the recorded manifest's CMS signature against the
 * keyring, the recorded index against the signed digest, then streams the index and a scan of
 * the snapshot (every file hashed) through the pure comparison in verify-scope.ts. Reads only;
 * never follows a symlink (lstat walk, O_NOFOLLOW hashing) and never leaves the snapshot's
 * subvolume (nested subvolumes and mount points are listed, not entered). Memory is bounded:
 * both sides are streams and at most `maxReported` differences are kept.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import { parseManifest, type Manifest } from '../archive/manifest.ts';
import { verifySignedData, type SignerSummary } from '../sign/verify.ts';
import { readIndex } from '../../core/fileindex/io.ts';
import { scanTree } from '../../core/fileindex/scan.ts';
import type { Device } from './open.ts';
import { INDEX_PATH, MANIFEST_COPY_PATH, SIGNATURE_COPY_PATH, VENDOR_ETC_DIR } from './paths.ts';
import { systemDifferences, type DifferenceKind, type SystemDifference } from './verify-scope.ts';

export interface VerifySystemOptions {
  /** Snapshot to check (default: the booted one, else the default). */
  snapshot?: number;
  keyringPem: string;
  allowedSigners?: string[];
  /** How many differences are kept in the result (the counts are always complete). Default 1000. */
  maxReported?: number;
  /** Called for each difference as it is found. */
  onDifference?: (d: SystemDifference) => void;
  onProgress?: (entries: number, bytes: number) => void;
}

export interface VerifySystemResult {
  root: string;
  snapshot: number;
  version: string;
  compatible: string;
  signer: SignerSummary;
  ok: boolean;
  counts: Record<DifferenceKind, number>;
  /** The first `maxReported` differences, in tree order (paths as UTF-8 for display). */
  differences: SystemDifference[];
  truncated: boolean;
  /** Entries of the snapshot scanned, bytes hashed. */
  scanned: { entries: number; bytes: number };
}

async function readRecorded(path: string, what: string, n: number): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TiuError('SYSTEM_UNVERIFIABLE', `snapshot ${n} has no recorded ${what} (${code ?? (e as Error).message})`, {
      hint: 'only snapshots made by tiu install/extract (this version or later) record their signed manifest; update once to get one',
    });
  }
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Which snapshot `--system` checks by default: the booted one, else the default. */
async function pickSnapshot(dev: Device, wanted: number | undefined): Promise<number> {
  const list = await dev.store.list();
  if (wanted !== undefined) {
    if (!list.some((s) => s.num === wanted)) throw new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${wanted} does not exist`, { hint: 'see tiu status for the snapshots' });
    return wanted;
  }
  const pick = list.find((s) => s.isMounted) ?? list.find((s) => s.isDefault);
  if (!pick) throw new TiuError('SNAPSHOT_NOT_FOUND', `${dev.root} has neither a booted nor a default snapshot`, { hint: 'pass --snapshot N' });
  return pick.num;
}

/**
 * Checks a snapshot against its recorded, signed image. Throws a TiuError when the evidence
 * itself fails (signature: ARCHIVE_*; recorded files missing: SYSTEM_UNVERIFIABLE; index digest:
 * ARCHIVE_INDEX); otherwise returns the differences (`ok` false when there are any).
 */
export async function verifySystem(dev: Device, o: VerifySystemOptions): Promise<VerifySystemResult> {
  const { sys } = dev;
  const num = await pickSnapshot(dev, o.snapshot);
  const dir = dev.snapshotDir(num);

  // 1. The signature, then the manifest copy must be exactly the signed content.
  const der = await readRecorded(`${dir}/${SIGNATURE_COPY_PATH}`, 'manifest signature', num);
  const verified = await verifySignedData(der, { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners });
  const manifest: Manifest = parseManifest(verified.content);
  const copy = await readRecorded(`${dir}/${MANIFEST_COPY_PATH}`, 'manifest', num);
  const differences: SystemDifference[] = [];
  const counts: Record<DifferenceKind, number> = { modified: 0, missing: 0, extra: 0 };
  const max = o.maxReported ?? 1000;
  const note = (d: SystemDifference) => {
    counts[d.kind]++;
    if (differences.length < max) differences.push(d);
    o.onDifference?.(d);
  };
  if (!copy.equals(verified.content)) note({ path: MANIFEST_COPY_PATH, kind: 'modified', fields: ['sha256'] });

  // 2. The index must be the signed one before a single entry of it is believed.
  const indexPath = `${dir}/${INDEX_PATH}`;
  const digest = await fileSha256(indexPath).catch(async (e) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') await readRecorded(indexPath, 'index', num);
    throw e;
  });
  if (digest !== manifest.index.sha256) {
    throw new TiuError('ARCHIVE_INDEX', `snapshot ${num}: the recorded index does not match the signed manifest (sha256 ${digest}, signed ${manifest.index.sha256})`, {
      hint: 'the snapshot\'s tiu state was modified; treat the system as tampered with',
    });
  }

  // 3. Stream both sides through the comparison.
  const scanned = { entries: 0, bytes: 0 };
  const scan = scanTree(sys, dir, {
    exclude: manifest.excluded,
    skip: (p) => p === VENDOR_ETC_DIR || p === 'etc',
    oneFileSystem: true,
    onProgress: (e, b) => {
      scanned.entries = e;
      scanned.bytes = b;
      o.onProgress?.(e, b);
    },
  });
  // The digest is checked again at the end of the stream (the file could change in between).
  const recorded = readIndex(indexPath, { sha256: manifest.index.sha256 });
  for await (const d of systemDifferences(recorded, scan, manifest.excluded)) note(d);

  const total = counts.modified + counts.missing + counts.extra;
  return {
    root: dev.root,
    snapshot: num,
    version: manifest.version,
    compatible: manifest.compatible,
    signer: verified.signer,
    ok: total === 0,
    counts,
    differences,
    truncated: total > differences.length,
    scanned,
  };
}
