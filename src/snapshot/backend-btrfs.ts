/**
 * Plain btrfs backend: snapshots made with `btrfs subvolume snapshot`, metadata written by tiu
 * in snapper's info.xml format (so `snapper list` shows them if snapper is installed later).
 */
import { mkdir } from 'node:fs/promises';
import { readBounded } from '../core/boundedread.ts';
import { join } from 'node:path';
import { TiuError } from '../core/errors.ts';
import { createSubvolume, deleteSubvolume, setReadonly, snapshotSubvolume, trySubvolumeInfo } from './btrfs.ts';
import { mergeUserdata, parseInfoXml, writeInfoXmlAtomic, MAX_INFO_XML_BYTES, type SnapshotInfo } from './infoxml.ts';
import { removeSnapshotDir, snapshotDirOf, type CreateRequest, type MetadataBackend, type StoreContext } from './backend.ts';

/** Reads and parses `.snapshots/N/info.xml`, bounded in size; checks that it names snapshot N. */
export async function readInfoFile(dir: string, num: number): Promise<SnapshotInfo> {
  // A regular file only, bounded: a FIFO or a huge info.xml must not hang `tiu status`.
  const text = (await readBounded(join(dir, 'info.xml'), { max: MAX_INFO_XML_BYTES, what: `info.xml of snapshot ${num}` })).toString('utf8');
  const info = parseInfoXml(text);
  if (info.num !== num) throw new TiuError('INPUT_INVALID', `info.xml in ${dir} says it is snapshot ${info.num}`);
  return info;
}

/** Creates `.snapshots/N` exclusively, moving on to N+1 while a number is taken. */
async function reserveDir(ctx: StoreContext, first: number): Promise<number> {
  for (let num = first; num < first + 1000; num++) {
    try {
      await mkdir(snapshotDirOf(ctx, num), { mode: 0o755 });
      return num;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  throw new TiuError('SNAPSHOT_FAILED', `no free snapshot number from ${first} on in ${ctx.snapshotsDir}`);
}

/** Reserves the number, makes the subvolume (`make`), writes info.xml; undoes it all on failure. */
async function createWith(ctx: StoreContext, req: Omit<CreateRequest, 'from'>, make: (path: string) => Promise<void>, what: string): Promise<number> {
  const num = await reserveDir(ctx, req.num);
  const dir = snapshotDirOf(ctx, num);
  const path = join(dir, 'snapshot');
  try {
    await make(path);
    await writeInfoXmlAtomic(dir, {
      num,
      type: 'single',
      date: new Date(Math.floor(Date.now() / 1000) * 1000),
      description: req.description,
      cleanup: req.cleanup,
      userdata: req.userdata,
    });
    return num;
  } catch (e) {
    if (await trySubvolumeInfo(ctx.sys, path).catch(() => undefined)) await deleteSubvolume(ctx.sys, path).catch(() => {});
    await removeSnapshotDir(dir).catch(() => {});
    throw e instanceof TiuError && e.code !== 'TOOL_FAILED' ? e
      : new TiuError('SNAPSHOT_FAILED', `cannot create snapshot ${num} ${what}: ${(e as Error).message}`, { cause: e, hint: 'check free space (btrfs filesystem usage) and rerun with --debug' });
  }
}

export const btrfsBackend: MetadataBackend & Required<Pick<MetadataBackend, 'createEmpty'>> = {
  name: 'btrfs',

  async readInfos(ctx, nums) {
    const out = new Map<number, SnapshotInfo | Error>();
    await Promise.all(nums.map(async (num) => {
      try {
        out.set(num, await readInfoFile(snapshotDirOf(ctx, num), num));
      } catch (e) {
        out.set(num, e as Error);
      }
    }));
    return out;
  },

  create(ctx, req) {
    return createWith(ctx, req, (path) => snapshotSubvolume(ctx.sys, join(snapshotDirOf(ctx, req.from), 'snapshot'), path, { readonly: req.readonly }), `from ${req.from}`);
  },

  createEmpty(ctx, req) {
    return createWith(ctx, req, async (path) => {
      await createSubvolume(ctx.sys, path);
      if (req.readonly) await setReadonly(ctx.sys, path, true);
    }, 'from nothing');
  },

  async modify(ctx, num, change) {
    const dir = snapshotDirOf(ctx, num);
    const info = await readInfoFile(dir, num);
    if (change.description !== undefined) info.description = change.description;
    if (change.userdata) info.userdata = mergeUserdata(info.userdata, change.userdata);
    await writeInfoXmlAtomic(dir, info);
  },

  async deleteSnapshot(ctx, num, options) {
    const dir = snapshotDirOf(ctx, num);
    const path = join(dir, 'snapshot');
    if (await trySubvolumeInfo(ctx.sys, path)) await deleteSubvolume(ctx.sys, path, { commitAfter: options.commitAfter });
    await removeSnapshotDir(dir);
  },
};
