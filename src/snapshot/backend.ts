/**
 * The seam between {@link SnapshotStore} and its two backends: plain btrfs (tiu writes info.xml
 * itself) and snapper (the `snapper` CLI writes it). Both keep the same on-disk format, so either
 * can read what the other wrote.
 */
import { readdir, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import type { SnapshotInfo } from './infoxml.ts';

/** What a backend needs to know about the root it works on. */
export interface StoreContext {
  sys: System;
  /** The root R (real path): a mounted snapshot subvolume. */
  root: string;
  /** R/.snapshots, a mounted subvolume. */
  snapshotsDir: string;
  /** Path of the snapshots subvolume from the top level, e.g. '@/.snapshots'. */
  snapshotsSubvol: string;
}

export interface CreateRequest {
  /** The number the store chose (the backend may have to take a higher one if it is taken). */
  num: number;
  from: number;
  /** Numbers of the snapshots that have valid metadata (snapper counts from the largest). */
  known: readonly number[];
  description: string;
  cleanup: string;
  userdata: Record<string, string>;
  readonly: boolean;
}

export interface MetadataChange {
  description?: string;
  /** null or '' removes a key. */
  userdata?: Record<string, string | null>;
}

export interface MetadataBackend {
  readonly name: 'btrfs' | 'snapper';
  /** Metadata of the given snapshots; an Error for one whose info.xml is missing or invalid. */
  readInfos(ctx: StoreContext, nums: readonly number[]): Promise<Map<number, SnapshotInfo | Error>>;
  /** Creates the snapshot and its info.xml; returns the number used. Cleans up after itself on failure. */
  create(ctx: StoreContext, req: CreateRequest): Promise<number>;
  /** Creates an empty snapshot subvolume (no `from`) and its info.xml (the plain btrfs backend only). */
  createEmpty?: (ctx: StoreContext, req: Omit<CreateRequest, 'from'>) => Promise<number>;
  modify(ctx: StoreContext, num: number, change: MetadataChange): Promise<void>;
  /** Deletes the snapshot subvolume (nested subvolumes are already gone) and its directory. */
  deleteSnapshot(ctx: StoreContext, num: number, options: { commitAfter: boolean; hasInfo: boolean }): Promise<void>;
  /** Sets the default through the backend; undefined when the store should use btrfs directly. */
  setDefault?: (ctx: StoreContext, num: number) => Promise<void>;
}

export function snapshotDirOf(ctx: StoreContext, num: number): string {
  return join(ctx.snapshotsDir, String(num));
}

/**
 * Removes what is left of `.snapshots/N` once its subvolume is gone: regular files (info.xml,
 * snapper's filelist-*.txt, temp files) and the directory. Never recursive, so a subvolume that
 * failed to delete cannot lose its content file by file.
 */
export async function removeSnapshotDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const name of names) {
    try {
      await unlink(join(dir, name));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EISDIR' || code === 'EPERM') {
        throw new TiuError('SNAPSHOT_FAILED', `${join(dir, name)} is still there after deleting the snapshot`, {
          hint: 'remove it by hand (btrfs subvolume delete, or rm if it is a plain directory)',
        });
      }
      if (code !== 'ENOENT') throw e;
    }
  }
  await rmdir(dir);
}
