/**
 * snapper backend: `snapper --no-dbus --root R -c root ...` creates, modifies, lists and deletes
 * (the same commands transactional-update uses), so snapper's hooks and its own bookkeeping see
 * every change. snapper picks snapshot numbers itself (one more than its newest), so to keep
 * tiu's never-reuse rule, empty placeholder directories are put in the gap up to the number
 * tiu wants; snapper skips existing directories.
 */
import { mkdir, rmdir } from 'node:fs/promises';
import { TiuError } from '../core/errors.ts';
import { btrfsBackend } from './backend-btrfs.ts';
import { removeSnapshotDir, snapshotDirOf, type MetadataBackend } from './backend.ts';
import type { SnapshotInfo } from './infoxml.ts';
import { parseSnapperJsonList, runSnapper, userdataArg, type SnapperCapabilities } from './snapper.ts';
import { trySubvolumeInfo } from './btrfs.ts';
import { join } from 'node:path';

/** The snapper backend for a snapper with the given capabilities. */
export function snapperBackend(caps: SnapperCapabilities): MetadataBackend {
  const backend: MetadataBackend = {
    name: 'snapper',

    async readInfos(ctx, nums) {
      const r = await runSnapper(ctx.sys, ctx.root, ['list', '--disable-used-space'], ['--utc', '--jsonout']);
      const byNum = new Map(parseSnapperJsonList(r.stdout).map((i) => [i.num, i]));
      const out = new Map<number, SnapshotInfo | Error>();
      for (const num of nums) {
        out.set(num, byNum.get(num) ?? new TiuError('INPUT_INVALID', `snapper does not list snapshot ${num} (missing or invalid info.xml)`));
      }
      return out;
    },

    async create(ctx, req) {
      if (!req.known.includes(req.from)) {
        throw new TiuError('SNAPSHOT_REFUSED', `snapper cannot snapshot ${req.from}: it has no valid info.xml`, {
          hint: "choose another base snapshot, or use the plain btrfs backend (snapper: 'no')",
        });
      }
      const last = Math.max(0, ...req.known);
      const placeholders: number[] = [];
      try {
        for (let n = last + 1; n < req.num; n++) {
          try {
            await mkdir(snapshotDirOf(ctx, n), { mode: 0o755 });
            placeholders.push(n);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
          }
        }
        const args = ['create', '--from', String(req.from), req.readonly ? '--read-only' : '--read-write', '--print-number', '--type', 'single'];
        if (req.description) args.push(`--description=${req.description}`);
        if (req.cleanup) args.push(`--cleanup-algorithm=${req.cleanup}`);
        const userdata = Object.fromEntries(Object.entries(req.userdata).filter(([, v]) => v !== ''));
        if (Object.keys(userdata).length > 0) args.push(`--userdata=${userdataArg(userdata)}`);
        const out = (await runSnapper(ctx.sys, ctx.root, args)).stdout.trim();
        if (!/^\d+$/.test(out)) throw new TiuError('SNAPSHOT_FAILED', `snapper create printed '${out}' instead of a snapshot number`);
        const num = Number(out);
        if (num < req.num) ctx.sys.log.warn(`snapper chose snapshot number ${num}, expected ${req.num} or higher`);
        return num;
      } finally {
        for (const n of placeholders) await rmdir(snapshotDirOf(ctx, n)).catch(() => {});
      }
    },

    async modify(ctx, num, change) {
      const args = ['modify'];
      if (change.description !== undefined) args.push(`--description=${change.description}`);
      if (change.userdata && Object.keys(change.userdata).length > 0) args.push(`--userdata=${userdataArg(change.userdata)}`);
      if (args.length === 1) return;
      await runSnapper(ctx.sys, ctx.root, [...args, String(num)]);
    },

    async deleteSnapshot(ctx, num, options) {
      // snapper only knows snapshots with a valid info.xml; the rest are removed the plain way.
      if (!options.hasInfo) return btrfsBackend.deleteSnapshot(ctx, num, options);
      await runSnapper(ctx.sys, ctx.root, ['delete', ...(options.commitAfter ? ['--sync'] : []), String(num)]);
      // snapper 0.10.4 exits 0 even when it refuses; check the result instead of trusting it.
      if (await trySubvolumeInfo(ctx.sys, join(snapshotDirOf(ctx, num), 'snapshot'))) {
        throw new TiuError('SNAPSHOT_FAILED', `snapper did not delete snapshot ${num}`, { hint: 'rerun with --debug to see snapper\'s output' });
      }
      await removeSnapshotDir(snapshotDirOf(ctx, num));
    },
  };
  if (caps.modifyDefault) {
    backend.setDefault = async (ctx, num) => {
      await runSnapper(ctx.sys, ctx.root, ['modify', '--default', String(num)]);
    };
  }
  return backend;
}
