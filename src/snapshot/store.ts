/**
 * The snapshots of one root R: list, create, modify, switch the default, delete.
 *
 * R looks like a running MicroOS system: a mounted snapshot subvolume (`@/.snapshots/N/snapshot`)
 * with the snapshots subvolume mounted at R/.snapshots. Snapshot N lives at
 * R/.snapshots/N/snapshot with R/.snapshots/N/info.xml beside it; the btrfs default subvolume is
 * the snapshot that boots next.
 *
 * Callers must hold the root's lock ({@link acquireLock}) around changes: the store itself does
 * not lock, so that one transaction can make several calls.
 */
import { access, readdir, readFile, realpath, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError, fromErrno } from '../core/errors.ts';
import { missingToolError, type System } from '../core/system.ts';
import { assertBtrfs, createSubvolume, deleteSubvolume, isSubvolumeRoot, isSubvolumeRootSync, snapshotSubvolume, subvolumeInfo, getDefaultSubvolume, listSubvolumeEntries, listSubvolumes, readonlyByAccess, setDefaultSubvolume, setDefaultSubvolumeAt, sealSubvolume, setReadonly, subvolumeChanges, trySubvolumeInfo, type Subvolume, type SubvolumeListEntry } from './btrfs.ts';
import { assertXmlText, validateUserdata, type SnapshotInfo } from './infoxml.ts';
import { isWritableMount, mountAt, mountContaining, mountedSubvolume, parseMountinfo, snapshotNumberOf } from './mountinfo.ts';
import { nextSnapshotNumber, raiseHighWater, readHighWater, snapshotNumberFromName } from './numbering.ts';
import { btrfsBackend } from './backend-btrfs.ts';
import { snapshotDirOf, type MetadataBackend, type StoreContext } from './backend.ts';
import { SNAPPER_CONFIG } from './modes.ts';
import type { SnapperMode } from './modes.ts';

/** A snapshot as {@link SnapshotStore.list} reports it: its info.xml plus what btrfs says. */
export interface SnapshotEntry extends SnapshotInfo {
  /** R/.snapshots/N/snapshot */
  path: string;
  readonly: boolean;
  /** The btrfs default subvolume: boots next. */
  isDefault: boolean;
  /** Mounted at R (the running system when R is /). */
  isMounted: boolean;
  /** info.xml is missing or invalid: description/userdata are empty, date is the directory's mtime. */
  missingInfo?: boolean;
  /** Why the metadata could not be read (with missingInfo). */
  infoError?: string;
}

export interface CreateSnapshotOptions {
  /**
   * Number of the snapshot to start from; undefined makes an empty subvolume (the first
   * snapshot of a freshly installed root; always with tiu's own info.xml).
   */
  from?: number;
  /**
   * Directories that are separate subvolumes inside each snapshot (e.g. etc): snapshotted from
   * `from`'s (when it has one there), or created empty. A snapshot does not include them by itself.
   */
  nested?: readonly string[];
  description?: string;
  /** Keys with '' values are left out. */
  userdata?: Record<string, string>;
  /** snapper cleanup algorithm; '' for none. */
  cleanup?: 'number' | '';
  /** Writable snapshot (default true); false makes it read-only. */
  readWrite?: boolean;
}

export { SNAPPER_MODES, type SnapperMode } from './modes.ts';

export interface OpenStoreOptions {
  /** 'auto' (default): snapper if installed and R has a snapper config; 'yes': require it; 'no': plain btrfs. */
  snapper?: SnapperMode;
  /** The caller already checked that R is on btrfs (openDevice does it once). */
  btrfsChecked?: boolean;
}

export interface SnapshotStore {
  /** Real path of R. */
  readonly root: string;
  /** R/.snapshots */
  readonly snapshotsDir: string;
  readonly backend: 'btrfs' | 'snapper';
  /** R/.snapshots/N/snapshot (whether or not it exists). */
  snapshotPath(num: number): string;
  /** All snapshots (directories with a snapshot subvolume), sorted by number. */
  list(): Promise<SnapshotEntry[]>;
  /** One snapshot; SNAPSHOT_NOT_FOUND if there is none with that number. */
  get(num: number): Promise<SnapshotEntry>;
  /** Numeric directories without a snapshot subvolume: remains of interrupted runs. */
  leftovers(): Promise<number[]>;
  /** Snapshots `from` into a new number (never one used before); returns it. */
  create(options: CreateSnapshotOptions): Promise<number>;
  /** Merges `patch` into the userdata; null or '' removes a key. */
  setUserdata(num: number, patch: Record<string, string | null>): Promise<void>;
  setDescription(num: number, description: string): Promise<void>;
  setReadonly(num: number, readonly: boolean): Promise<void>;
  /** The btrfs generation of snapshot `num`'s subvolume (changes with every write). */
  generation(num: number): Promise<number>;
  /** Flushes the filesystem, makes snapshot `num` read-only, and returns its generation then. */
  seal(num: number): Promise<number>;
  /** Makes `num` the btrfs default subvolume, i.e. what boots next. One atomic switch. */
  setDefault(num: number): Promise<void>;
  /** The snapshot that is the default subvolume, if the default is a snapshot. */
  getDefault(): Promise<number | undefined>;
  /** The snapshot mounted at R, if R is a mounted snapshot. */
  getMounted(): Promise<number | undefined>;
  /**
   * Deletes snapshot `num` (with nested subvolumes) and its directory, or a leftover directory.
   * Refuses (SNAPSHOT_REFUSED) the default and the mounted snapshot.
   */
  delete(num: number, options?: { commitAfter?: boolean }): Promise<void>;
}

const CLEANUP_RE = /^[a-z_-]{0,32}$/;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function chooseBackend(sys: System, root: string, mode: SnapperMode): Promise<MetadataBackend> {
  if (mode === 'no') return btrfsBackend;
  const config = join(root, 'etc/snapper/configs', SNAPPER_CONFIG);
  const [installed, configured] = await Promise.all([sys.which('snapper'), exists(config)]);
  if (mode === 'yes') {
    if (!installed) throw missingToolError('snapper');
    if (!configured) {
      throw new TiuError('ROOT_LAYOUT', `${root} has no snapper config (${config})`, {
        hint: `create one (cp /usr/share/snapper/config-templates/default ${config}) or use the plain btrfs backend`,
      });
    }
  } else if (!installed || !configured) {
    sys.log.debug(`snapshots: plain btrfs backend (snapper ${installed ? 'installed' : 'not installed'}, config ${configured ? 'present' : 'absent'})`);
    return btrfsBackend;
  }
  // Loaded only here: snapper's JSON schemas (zod) are not needed by roots without snapper.
  const [{ snapperBackend }, { snapperCapabilities }] = await Promise.all([import('./backend-snapper.ts'), import('./snapper.ts')]);
  return snapperBackend(await snapperCapabilities(sys));
}

/**
 * Opens the snapshot store of root `root`. Checks that R is on btrfs and R/.snapshots is a
 * subvolume, and picks the backend. No changes on disk.
 */
export async function openSnapshotStore(sys: System, root: string, options: OpenStoreOptions = {}): Promise<SnapshotStore> {
  let real: string;
  try {
    real = await realpath(root);
  } catch (e) {
    throw fromErrno(e, `root ${root}`) ?? e;
  }
  if (!options.btrfsChecked) await assertBtrfs(sys, real);
  const snapshotsDir = join(real, '.snapshots');
  // The usual layout mounts .snapshots itself: the mount table names its subvolume (no child
  // process); otherwise btrfs is asked.
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const mounted = mountAt(mounts, snapshotsDir);
  const fromMount = mounted && (await isSubvolumeRoot(snapshotsDir)) ? mountedSubvolume(mounted) : undefined;
  const snapsInfo = fromMount ?? (await trySubvolumeInfo(sys, snapshotsDir));
  if (!snapsInfo) {
    throw new TiuError('ROOT_LAYOUT', `${snapshotsDir} is not a btrfs subvolume`, {
      hint: `mount the snapshots subvolume there (mount -o subvol=@/.snapshots <device> ${snapshotsDir})`,
    });
  }
  const ctx: StoreContext = { sys, root: real, snapshotsDir, snapshotsSubvol: snapsInfo.path };
  const snapshotsId = snapsInfo.id;
  // On a read-write mount, access(2) tells read-only snapshots without `btrfs subvolume list -r`.
  const holder = mountContaining(mounts, snapshotsDir);
  const probeReadonly = holder !== undefined && holder.fsType === 'btrfs' && isWritableMount(holder);
  const backend = await chooseBackend(sys, real, options.snapper ?? 'auto');
  return createStore(ctx, backend, snapshotsId, probeReadonly);
}

/**
 * The listing with every path below the snapshots subvolume (id `snapshotsId`, path `prefix`
 * from the top level) made relative to the top level, as `btrfs subvolume show` prints them.
 */
export function fullPaths<S extends SubvolumeListEntry>(listed: readonly S[], snapshotsId: number, prefix: string): S[] {
  const byId = new Map(listed.map((s) => [s.id, s]));
  const below = (s: S): boolean => {
    for (let p: number | undefined = s.topLevel, hops = 0; p !== undefined && hops < 4096; hops++) {
      if (p === snapshotsId) return true;
      p = byId.get(p)?.topLevel;
    }
    return false;
  };
  return listed.map((s) => (prefix && below(s) && !s.path.startsWith(`${prefix}/`) ? { ...s, path: `${prefix}/${s.path}` } : s));
}

async function isDirEmpty(p: string): Promise<boolean> {
  try {
    if (!(await stat(p)).isDirectory()) return false;
    return (await readdir(p)).length === 0;
  } catch {
    return false;
  }
}

function notFound(num: number, root: string): TiuError {
  return new TiuError('SNAPSHOT_NOT_FOUND', `snapshot ${num} does not exist in ${root}/.snapshots`, { hint: 'see `tiu list` for the snapshots there are' });
}

function checkNum(num: number): void {
  if (!Number.isInteger(num) || num < 1 || num > 0xffffffff) throw new TiuError('USAGE', `'${num}' is not a snapshot number`);
}

/** How long a listing of subvolumes is reused at most (changes made by other processes). */
const MEMO_MS = 2000;

function createStore(ctx: StoreContext, backend: MetadataBackend, snapshotsId: number, probeReadonly: boolean): SnapshotStore {
  const { sys, root, snapshotsDir } = ctx;
  const subvolPathOf = (num: number) => (ctx.snapshotsSubvol ? `${ctx.snapshotsSubvol}/${num}/snapshot` : `${num}/snapshot`);

  async function numericDirs(): Promise<number[]> {
    const names = await readdir(snapshotsDir);
    return names.map(snapshotNumberFromName).filter((n): n is number => n !== undefined).sort((a, b) => a - b);
  }

  /**
   * The subvolume list and the default subvolume, each a child process, are reused while this
   * process changed no subvolume (see subvolumeChanges) and for at most MEMO_MS: one update asked
   * for them 5 and 8 times. Deleting always lists afresh.
   */
  const memo = <T>(read: () => Promise<T>): ((fresh?: boolean) => Promise<T>) => {
    let kept: { changes: number; at: number; value: Promise<T> } | undefined;
    return (fresh = false) => {
      const now = Date.now();
      if (!fresh && kept && kept.changes === subvolumeChanges() && now - kept.at < MEMO_MS) return kept.value;
      const value = read();
      const entry = { changes: subvolumeChanges(), at: now, value };
      kept = entry;
      // Aged from when the answer arrived (a slow child must not leave it stale at once).
      value.then(() => (entry.at = Date.now()), () => {
        if (kept === entry) kept = undefined;
      });
      return value;
    };
  };
  // Listed from .snapshots: btrfs prints the paths of subvolumes below the listed one relative
  // to it (and R may be `<top>/@` at install time, or a mounted snapshot): made full here.
  const subvolumes = memo(listBelowSnapshots);
  /** The host path of a subvolume below the snapshots subvolume (path from the top level). */
  const hostPath = (p: string) => join(snapshotsDir, p.slice(ctx.snapshotsSubvol.length + (ctx.snapshotsSubvol ? 1 : 0)));
  const belowSnapshots = (p: string) => ctx.snapshotsSubvol === '' || p.startsWith(`${ctx.snapshotsSubvol}/`);

  /**
   * The subvolumes below the snapshots subvolume (all the store manages), with read-only flags:
   * probed with access(2) where that is reliable (one child process instead of two), else listed.
   */
  async function listBelowSnapshots(): Promise<Subvolume[]> {
    if (probeReadonly) {
      const listed = fullPaths(await listSubvolumeEntries(sys, snapshotsDir), snapshotsId, ctx.snapshotsSubvol).filter((s) => belowSnapshots(s.path));
      const probed = listed.map((s) => ({ ...s, readonly: readonlyByAccess(hostPath(s.path)) }));
      if (probed.every((s) => s.readonly !== undefined)) return probed as Subvolume[];
      sys.log.debug('snapshots: read-only flags not probed (a subvolume is not reachable); listing them');
    }
    return fullPaths(await listSubvolumes(sys, snapshotsDir), snapshotsId, ctx.snapshotsSubvol).filter((s) => belowSnapshots(s.path));
  }
  const defaultSubvolume = memo(() => getDefaultSubvolume(sys, root));

  async function getDefault(fresh = false): Promise<number | undefined> {
    const def = await defaultSubvolume(fresh);
    return snapshotNumberOf(def.path, ctx.snapshotsSubvol);
  }

  async function getMounted(): Promise<number | undefined> {
    const mount = mountAt(parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8')), root);
    if (mount) return mount.fsType === 'btrfs' ? snapshotNumberOf(mount.root, ctx.snapshotsSubvol) : undefined;
    // R is not a mount point (e.g. a directory path to a snapshot): ask btrfs which subvolume it is.
    const info = await trySubvolumeInfo(sys, root);
    return info ? snapshotNumberOf(info.path, ctx.snapshotsSubvol) : undefined;
  }

  async function scan(fresh = false): Promise<{ dirs: number[]; subvols: Subvolume[]; byPath: Map<string, Subvolume> }> {
    const [dirs, subvols] = await Promise.all([numericDirs(), subvolumes(fresh)]);
    return { dirs, subvols, byPath: new Map(subvols.map((s) => [s.path, s])) };
  }

  /**
   * The numbered directories that hold a snapshot subvolume, with its read-only flag. Where
   * access(2) tells read-only subvolumes apart (a read-write mount), each `N/snapshot` is checked
   * in-process (inode 256 is a subvolume root); otherwise from btrfs' listing.
   */
  async function snapshotSubvolumes(): Promise<Map<number, boolean>> {
    const dirs = await numericDirs();
    if (probeReadonly) {
      const found = new Map<number, boolean>();
      let complete = true;
      for (const num of dirs) {
        const path = join(snapshotsDir, String(num), 'snapshot');
        if (!isSubvolumeRootSync(path)) continue;
        const readonly = readonlyByAccess(path);
        if (readonly === undefined) {
          complete = false;
          break;
        }
        found.set(num, readonly);
      }
      if (complete) return found;
    }
    const { byPath } = await scan();
    return new Map(dirs.flatMap((num) => {
      const subvol = byPath.get(subvolPathOf(num));
      return subvol ? [[num, subvol.readonly] as const] : [];
    }));
  }

  async function list(): Promise<SnapshotEntry[]> {
    // The default and the mount are independent of the listing: asked at the same time.
    const defP = getDefault();
    const mountedP = getMounted();
    defP.catch(() => {});
    mountedP.catch(() => {});
    const found = await snapshotSubvolumes();
    const nums = [...found.keys()];
    const [infos, def, mounted] = await Promise.all([backend.readInfos(ctx, nums), defP, mountedP]);
    const out: SnapshotEntry[] = [];
    for (const num of nums) {
      const info = infos.get(num);
      const base = { path: join(snapshotsDir, String(num), 'snapshot'), readonly: found.get(num)!, isDefault: num === def, isMounted: num === mounted };
      if (info && !(info instanceof Error)) {
        out.push({ ...info, ...base });
      } else {
        const mtime = (await stat(snapshotDirOf(ctx, num))).mtimeMs;
        out.push({
          num, type: 'single', date: new Date(Math.floor(mtime / 1000) * 1000), description: '', cleanup: '', userdata: {},
          ...base, missingInfo: true, infoError: info?.message ?? 'no info.xml',
        });
      }
    }
    return out;
  }

  async function get(num: number): Promise<SnapshotEntry> {
    checkNum(num);
    const entry = (await list()).find((e) => e.num === num);
    if (!entry) throw notFound(num, root);
    return entry;
  }

  /**
   * The subvolume of snapshot `num`, checked without listing every subvolume (a child process
   * each time this process changed one): its directory must be a subvolume root.
   */
  async function subvolumeOf(num: number): Promise<string> {
    checkNum(num);
    const path = join(snapshotsDir, String(num), 'snapshot');
    if (!(await isSubvolumeRoot(path))) throw notFound(num, root);
    return path;
  }

  /** Snapshot `num`'s metadata (info.xml, or what snapper lists), or why it has none; throws as {@link get} would when it does not exist. */
  async function infoOf(num: number): Promise<SnapshotInfo | Error> {
    await subvolumeOf(num);
    return (await backend.readInfos(ctx, [num])).get(num) ?? new Error('no info.xml');
  }

  async function withInfo(num: number): Promise<void> {
    const info = await infoOf(num);
    if (!(info instanceof Error)) return;
    throw new TiuError('SNAPSHOT_FAILED', `snapshot ${num} has no valid info.xml (${info.message})`, {
      hint: 'delete the snapshot, or repair its info.xml by hand',
    });
  }

  /** The nested subvolumes of a new snapshot: snapshots of `from`'s, or empty ones. */
  async function createNested(num: number, from: number | undefined, nested: readonly string[]): Promise<void> {
    const dir = join(snapshotsDir, String(num), 'snapshot');
    for (const n of nested) {
      const dst = join(dir, n);
      if (from === undefined) {
        await createSubvolume(sys, dst);
        continue;
      }
      const src = join(snapshotsDir, String(from), 'snapshot', n);
      if (!(await isSubvolumeRoot(src))) continue;
      // A snapshot does not include nested subvolumes: it has an empty directory there.
      if (await isDirEmpty(dst)) await rmdir(dst);
      await snapshotSubvolume(sys, src, dst, { readonly: false });
    }
  }

  /** Subvolume ids seen by generation(): a number is never reused, so its id cannot change. */
  const knownIds = new Map<number, number>();

  const store: SnapshotStore = {
    root,
    snapshotsDir,
    backend: backend.name,
    snapshotPath: (num) => join(snapshotsDir, String(num), 'snapshot'),
    list,
    get,
    getDefault: () => getDefault(),
    getMounted,

    async leftovers() {
      const { dirs, byPath } = await scan(true);
      return dirs.filter((n) => !byPath.has(subvolPathOf(n)));
    },

    async create(options) {
      if (options.from !== undefined) checkNum(options.from);
      const description = options.description ?? '';
      const cleanup = options.cleanup ?? '';
      assertXmlText(description, 'the description');
      if (!CLEANUP_RE.test(cleanup)) throw new TiuError('USAGE', `invalid cleanup algorithm '${cleanup}'`);
      const userdata = Object.fromEntries(Object.entries(options.userdata ?? {}).filter(([, v]) => v !== ''));
      validateUserdata(userdata);
      const entries = await list();
      if (options.from !== undefined && !entries.some((e) => e.num === options.from)) throw notFound(options.from, root);
      const highWater = await readHighWater(snapshotsDir);
      const num = nextSnapshotNumber(await numericDirs(), highWater);
      await raiseHighWater(snapshotsDir, num);
      const req = {
        num,
        from: options.from,
        known: entries.filter((e) => !e.missingInfo).map((e) => e.num),
        description,
        cleanup,
        userdata,
        readonly: options.readWrite === false,
      };
      // Nothing to snapshot: an empty subvolume with tiu's own info.xml (snapper has no "create from nothing").
      const created = options.from === undefined ? await btrfsBackend.createEmpty(ctx, req) : await backend.create(ctx, { ...req, from: options.from });
      await raiseHighWater(snapshotsDir, created);
      sys.log.debug(`snapshots: created ${created} from ${options.from ?? 'nothing'} (${backend.name})`);
      try {
        await createNested(created, options.from, options.nested ?? []);
      } catch (e) {
        await store.delete(created).catch(() => {});
        throw e;
      }
      return created;
    },

    async setUserdata(num, patch) {
      validateUserdata(patch);
      await withInfo(num);
      await backend.modify(ctx, num, { userdata: patch });
    },

    async setDescription(num, description) {
      assertXmlText(description, 'the description');
      await withInfo(num);
      await backend.modify(ctx, num, { description });
    },

    async setReadonly(num, readonly) {
      await setReadonly(sys, await subvolumeOf(num), readonly);
    },

    async generation(num) {
      const info = await subvolumeInfo(sys, store.snapshotPath(num));
      knownIds.set(num, info.id);
      return info.generation;
    },

    async seal(num) {
      return sealSubvolume(sys, await subvolumeOf(num));
    },

    async setDefault(num) {
      const hasInfo = !((await infoOf(num)) instanceof Error);
      if (backend.setDefault && hasInfo) await backend.setDefault(ctx, num);
      else {
        const id = knownIds.get(num);
        if (id !== undefined) await setDefaultSubvolume(sys, root, id);
        else await setDefaultSubvolumeAt(sys, await subvolumeOf(num));
      }
      const now = await getDefault(true);
      if (now !== num) {
        throw new TiuError('SNAPSHOT_FAILED', `setting snapshot ${num} as default did not take effect (default is ${now ?? 'not a snapshot'})`, {
          hint: 'check `btrfs subvolume get-default /`',
        });
      }
    },

    async delete(num, options = {}) {
      checkNum(num);
      knownIds.delete(num);
      const { dirs, subvols, byPath } = await scan(true);
      if (!dirs.includes(num)) throw notFound(num, root);
      const subvol = byPath.get(subvolPathOf(num));
      const commitAfter = options.commitAfter ?? false;
      // Raise the mark first: once the directory is gone nothing else remembers the number.
      await raiseHighWater(snapshotsDir, Math.max(...dirs));
      if (!subvol) {
        await btrfsBackend.deleteSnapshot(ctx, num, { commitAfter, hasInfo: false });
        return;
      }
      const [def, mounted] = await Promise.all([getDefault(true), getMounted()]);
      if (num === def) {
        throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${num} is the default (it boots next); refusing to delete it`, { hint: 'make another snapshot the default first (tiu rollback)' });
      }
      if (num === mounted) {
        throw new TiuError('SNAPSHOT_REFUSED', `snapshot ${num} is mounted at ${root}; refusing to delete it`, { hint: 'boot (or mount) another snapshot first' });
      }
      // Nested subvolumes (e.g. made by container tools inside the snapshot) block the deletion: remove them deepest first.
      const nested = subvols.filter((s) => s.path.startsWith(`${subvol.path}/`)).sort((a, b) => b.path.length - a.path.length);
      for (const s of nested) {
        // A subvolume cannot be unlinked from a read-only parent: make the parent writable first.
        const parent = subvols.find((p) => p.id === s.topLevel);
        if (parent?.readonly) await setReadonly(sys, hostPath(parent.path), false);
        await deleteSubvolume(sys, hostPath(s.path));
      }
      const infos = await backend.readInfos(ctx, [num]);
      await backend.deleteSnapshot(ctx, num, { commitAfter, hasInfo: !(infos.get(num) instanceof Error) });
      sys.log.debug(`snapshots: deleted ${num} (${backend.name})`);
    },
  };
  return store;
}
