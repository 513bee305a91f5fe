/**
 * The GRUB backend (see grub-config.ts for the scripts and docs/boot.md for the design).
 *
 * Files it owns in GRUB's directory G (`$prefix`, outside every snapshot, found by detect.ts):
 *   G/grub.cfg            the selector
 *   G/tiu-snapshots.cfg   entries, `tiu_linux`, the "Snapshots (tiu)" submenu
 *   G/grubenv             only the tiu_* variables (others, e.g. saved_entry, are kept)
 * and, inside a new snapshot before it is sealed, boot/grub[2]/grub.cfg from the distribution's
 * grub-mkconfig (see {@link generateSnapshotGrubCfg}).
 */
import { mkdir, readFile, statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { System } from '../../core/system.ts';
import { TiuError, fromErrno } from '../../core/errors.ts';
import type { BootBackend, BootEntryInfo, BootTry, SnapshotBoot } from './types.ts';
import { GRUB_TRIES, parseSnapshotsCfg, renderSelector, renderSnapshotsCfg, unpinGrubCfg, type GrubEntry } from './grub-config.ts';
import { parseGrubenv, serializeGrubenv, updateGrubenv, GRUBENV_SIGNATURE } from './grubenv.ts';
import { writeFileAtomic } from '../../core/atomic.ts';
import { runInSnapshot } from './chroot.ts';
import { hasTool } from './initrd.ts';

export interface GrubOptions {
  /** GRUB's directory ($prefix) on the running system, e.g. /boot/efi/grub or /.snapshots/grub. */
  grubDir: string;
  uuid: string;
  /** The snapshots subvolume from the top level, e.g. `@/.snapshots`. */
  snapshotsSubvol: string;
  /** Whether GRUB can write grubenv; detected from the filesystem type when not given. */
  envWritable?: boolean;
}

const BTRFS_MAGIC = 0x9123683e;
const ZFS_MAGIC = 0x2fc12fc1;

/** Whether GRUB's save_env can write a file in `dir`: not on btrfs or ZFS (checksums, COW). */
export async function grubCanWrite(dir: string): Promise<boolean> {
  const st = await statfs(dir);
  return st.type !== BTRFS_MAGIC && st.type !== ZFS_MAGIC;
}

/** The GRUB entry of a snapshot: paths as GRUB reads them from the btrfs top level. Pure. */
export function grubEntryOf(s: SnapshotBoot): GrubEntry {
  const base = `/${s.subvol.replace(/^\/+|\/+$/g, '')}`;
  return {
    num: s.num,
    title: s.title,
    kernel: `${base}/${s.kernelRel}`,
    initrd: s.initrdRel ? `${base}/${s.initrdRel}` : undefined,
    uuid: s.uuid,
    subvol: s.subvol.replace(/^\/+/, ''),
    cmdline: s.cmdline,
  };
}

const TIU_VARS = ['tiu_default', 'tiu_fallback', 'tiu_boot_try', 'tiu_tries', 'tiu_oneshot'] as const;
type TiuVar = (typeof TIU_VARS)[number];

export function grubBackend(sys: System, o: GrubOptions): BootBackend {
  const envPath = join(o.grubDir, 'grubenv');
  const snapshotsCfg = join(o.grubDir, 'tiu-snapshots.cfg');
  const selector = join(o.grubDir, 'grub.cfg');
  let writable: boolean | undefined = o.envWritable;

  async function envWritable(): Promise<boolean> {
    writable ??= await grubCanWrite(o.grubDir);
    return writable;
  }

  async function readEnv(): Promise<Map<string, string>> {
    let buf: Buffer;
    try {
      buf = await readFile(envPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw fromErrno(e, envPath) ?? e;
    }
    return parseGrubenv(buf);
  }

  async function env(): Promise<Partial<Record<TiuVar, string>>> {
    const vars = await readEnv();
    const out: Partial<Record<TiuVar, string>> = {};
    for (const k of TIU_VARS) {
      const v = vars.get(k);
      if (v !== undefined && v !== '') out[k] = v;
    }
    return out;
  }

  async function writeEnv(changes: Partial<Record<TiuVar, string | undefined>>): Promise<void> {
    const before = await readEnv();
    const after = updateGrubenv(before, changes);
    // The size of an existing block is kept: GRUB writes it in place.
    const size = await readFile(envPath).then((b) => (b.subarray(0, GRUBENV_SIGNATURE.length).toString('latin1') === GRUBENV_SIGNATURE ? b.length : 1024), () => 1024);
    await writeFileAtomic(envPath, serializeGrubenv(after, size));
  }

  async function entries(): Promise<GrubEntry[]> {
    const text = await readFile(snapshotsCfg, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw fromErrno(e, snapshotsCfg) ?? e;
    });
    return parseSnapshotsCfg(text);
  }

  const num = (v: string | undefined) => (v !== undefined && /^[1-9]\d{0,9}$/.test(v) ? Number(v) : undefined);

  /** Rewrites tiu-snapshots.cfg and the selector from the entries and the current default. */
  async function render(list: GrubEntry[]): Promise<void> {
    const def = num((await env()).tiu_default);
    await writeFileAtomic(snapshotsCfg, renderSnapshotsCfg(list, def));
    const candidates = [...(def !== undefined ? [def] : []), ...list.map((e) => e.num).sort((a, b) => b - a)];
    await writeFileAtomic(
      selector,
      renderSelector({ uuid: o.uuid, snapshotsSubvol: o.snapshotsSubvol, envWritable: await envWritable(), defaultNum: def, candidates }),
    );
  }

  const backend: BootBackend = {
    kind: 'grub2',
    location: o.grubDir,

    async listEntries(): Promise<BootEntryInfo[]> {
      return (await entries()).map((e) => ({ num: e.num, id: `tiu-snapshot-${e.num}`, bad: false }));
    },

    async addEntry(s) {
      const list = (await entries()).filter((e) => e.num !== s.num);
      list.push(grubEntryOf(s));
      await render(list.sort((a, b) => a.num - b.num));
    },

    async removeEntry(n) {
      const list = await entries();
      if (!list.some((e) => e.num === n)) return;
      await render(list.filter((e) => e.num !== n));
    },

    async getDefault() {
      return num((await env()).tiu_default);
    },

    async setDefault(n, opts = {}) {
      if (!(await entries()).some((e) => e.num === n)) {
        throw new TiuError('BOOT_FAILED', `there is no GRUB entry for snapshot ${n} in ${snapshotsCfg}`, { hint: 'run tiu health-check --sync-only to write the entries' });
      }
      const cur = await env();
      if (opts.fallback !== undefined) {
        // A running trial of the same snapshot keeps its count (re-arming would allow endless tries).
        const running = num(cur.tiu_boot_try) === n && cur.tiu_tries !== undefined && num(cur.tiu_fallback) === opts.fallback;
        await writeEnv({ tiu_default: String(n), tiu_boot_try: String(n), tiu_fallback: String(opts.fallback), tiu_tries: running ? cur.tiu_tries : String(GRUB_TRIES) });
      } else {
        await writeEnv({ tiu_default: String(n), tiu_boot_try: '', tiu_fallback: '', tiu_tries: '' });
      }
      await render(await entries());
    },

    async setOneShot(n) {
      if (!(await envWritable())) {
        // GRUB could not clear it: the "one-shot" would boot forever.
        sys.log.debug(`GRUB cannot write ${envPath} (btrfs): one-shot boot not available`);
        return false;
      }
      if (!(await entries()).some((e) => e.num === n)) throw new TiuError('BOOT_FAILED', `there is no GRUB entry for snapshot ${n}`, { hint: 'run tiu health-check --sync-only' });
      await writeEnv({ tiu_oneshot: String(n) });
      return true;
    },

    async getTry(): Promise<BootTry | undefined> {
      const e = await env();
      const n = num(e.tiu_boot_try);
      if (n === undefined) return undefined;
      const left = e.tiu_tries !== undefined && /^\d+$/.test(e.tiu_tries) ? Number(e.tiu_tries) : undefined;
      // Where GRUB cannot write, it never counts: the number says nothing.
      return { num: n, triesLeft: (await envWritable()) ? left : undefined, fallback: num(e.tiu_fallback) };
    },

    async endTry(n) {
      const e = await env();
      if (num(e.tiu_boot_try) !== n) return;
      await writeEnv({ tiu_boot_try: '', tiu_tries: '', tiu_fallback: '' });
    },
  };
  return backend;
}

/** Which grub-mkconfig a snapshot has and where its grub.cfg goes (Debian vs openSUSE naming). */
export async function snapshotMkconfig(snapshotDir: string): Promise<{ tool: string; output: string } | undefined> {
  if (await hasTool(snapshotDir, 'grub-mkconfig')) return { tool: 'grub-mkconfig', output: '/boot/grub/grub.cfg' };
  if (await hasTool(snapshotDir, 'grub2-mkconfig')) return { tool: 'grub2-mkconfig', output: '/boot/grub2/grub.cfg' };
  return undefined;
}

/**
 * Runs the distribution's grub-mkconfig inside the new snapshot (chrooted, private namespace),
 * writing its own boot/grub[2]/grub.cfg, then unpins it (`rootflags=subvol=<snapshot>` →
 * `${tiu_rootflags}`). Returns false (and does nothing) when the snapshot has no grub-mkconfig.
 */
export async function generateSnapshotGrubCfg(sys: System, o: { snapshotDir: string; subvol: string }): Promise<boolean> {
  const mk = await snapshotMkconfig(o.snapshotDir);
  if (!mk) {
    sys.log.debug('grub: no grub-mkconfig in the snapshot; the selector boots tiu\'s own entries');
    return false;
  }
  const out = join(o.snapshotDir, mk.output);
  await mkdir(dirname(out), { recursive: true, mode: 0o755 });
  sys.log.info(`generating ${mk.output} in the new snapshot (${mk.tool})`);
  // os-prober would scan the host's disks from inside the update: never useful here.
  await runInSnapshot(sys, o.snapshotDir, [mk.tool, '-o', mk.output], { env: { GRUB_DISABLE_OS_PROBER: 'true' }, timeoutMs: 10 * 60_000 });
  const text = await readFile(out, 'utf8');
  const r = unpinGrubCfg(text, o.subvol);
  sys.log.debug(`grub: unpinned ${r.count} rootflags=subvol=${o.subvol} in ${mk.output}`);
  if (r.count) await writeFileAtomic(out, r.text);
  return true;
}
