/**
 * The systemd-boot backend: BLS Type #1 entries on the ESP (see bls.ts for names and ranks).
 *
 * Files it owns on the ESP:
 *   loader/entries/tiu-<N>[+LEFT[-DONE]].conf   one per snapshot
 *   tiu/<N>/vmlinuz, tiu/<N>/initrd              copies from the snapshot (FAT cannot reach btrfs)
 *   loader/loader.conf                           only its `default` line (`default tiu-*`)
 * and the EFI variable LoaderEntryOneShot (efivarfs) for one-shot boots.
 */
import { readdir, readFile, rm, stat, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import type { System } from '../../core/system.ts';
import { TiuError, fromErrno } from '../../core/errors.ts';
import type { BootBackend, BootEntryInfo, BootTry, SnapshotBoot } from './types.ts';
import { DEFAULT_PATTERN, DEFAULT_TRIES, LOADER_GUID, SORT_KEY, encodeEfiString, entryFileName, isBad, parseEntry, parseEntryName, rankOf, rankVersion, renderEntry, setLoaderDefault, withVersion, type Rank } from './bls.ts';
import { copyFileAtomic, renameDurable, writeFileAtomic } from '../../core/atomic.ts';

export interface SystemdBootOptions {
  /** Mount point of the ESP. */
  esp: string;
  /** efivarfs; default /sys/firmware/efi/efivars. Tests pass a directory. */
  efivarsDir?: string;
}

interface OnDisk {
  num: number;
  file: string;
  tries?: { left: number; done: number };
  rank: Rank | undefined;
}

/** Kernel command line of a snapshot's entry: its root pinned by subvolume. Pure. */
export function blsOptions(s: SnapshotBoot): string[] {
  return [`root=UUID=${s.uuid}`, `rootflags=subvol=${s.subvol}`, 'rw', ...s.cmdline];
}

export function systemdBootBackend(sys: System, o: SystemdBootOptions): BootBackend {
  const entriesDir = join(o.esp, 'loader/entries');
  const loaderConf = join(o.esp, 'loader/loader.conf');
  const efivars = o.efivarsDir ?? '/sys/firmware/efi/efivars';

  async function scan(): Promise<OnDisk[]> {
    let names: string[];
    try {
      names = await readdir(entriesDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw fromErrno(e, entriesDir) ?? e;
    }
    const out: OnDisk[] = [];
    for (const file of names.sort()) {
      const n = parseEntryName(file);
      if (!n) continue;
      const text = await readFile(join(entriesDir, file), 'utf8').catch(() => '');
      out.push({ num: n.num, file, tries: n.tries, rank: rankOf(parseEntry(text).get('version')?.[0]) });
    }
    return out.sort((a, b) => a.num - b.num);
  }

  async function entryOf(num: number): Promise<OnDisk | undefined> {
    return (await scan()).find((e) => e.num === num);
  }

  async function rename(e: OnDisk, tries: { left: number; done: number } | undefined): Promise<OnDisk> {
    const file = entryFileName(e.num, tries);
    if (file !== e.file) await renameDurable(join(entriesDir, e.file), join(entriesDir, file));
    return { ...e, file, tries };
  }

  async function setRank(e: OnDisk, rank: Rank): Promise<void> {
    if (e.rank === rank) return;
    const path = join(entriesDir, e.file);
    await writeFileAtomic(path, withVersion(await readFile(path, 'utf8'), rankVersion(e.num, rank)));
  }

  async function needsCopy(src: string, dst: string): Promise<boolean> {
    // Snapshots are read-only once sealed, so a complete copy (the rename makes it complete)
    // of the same size is the same file.
    const [a, b] = await Promise.all([stat(src), stat(dst).catch(() => undefined)]);
    return !b || a.size !== b.size;
  }

  const backend: BootBackend = {
    kind: 'systemd-boot',
    location: o.esp,

    async listEntries(): Promise<BootEntryInfo[]> {
      return (await scan()).map((e) => ({ num: e.num, id: e.file, tries: e.tries, bad: isBad({ num: e.num, tries: e.tries }) }));
    },

    async addEntry(s, opts = {}) {
      const dir = join(o.esp, 'tiu', String(s.num));
      if (await needsCopy(s.kernelPath, join(dir, 'vmlinuz'))) await copyFileAtomic(s.kernelPath, join(dir, 'vmlinuz'));
      if (s.initrdPath && (await needsCopy(s.initrdPath, join(dir, 'initrd')))) await copyFileAtomic(s.initrdPath, join(dir, 'initrd'));
      const existing = (await scan()).filter((e) => e.num === s.num);
      // More than one file for a snapshot (a crash between writes): keep the first, drop the rest.
      for (const extra of existing.slice(1)) await rm(join(entriesDir, extra.file), { force: true });
      const current = existing[0];
      const tries = opts.trial ? { left: DEFAULT_TRIES, done: 0 } : current?.tries;
      const file = entryFileName(s.num, tries);
      const text = renderEntry({
        title: s.title,
        version: rankVersion(s.num, current?.rank ?? 'other'),
        sortKey: SORT_KEY,
        linux: `/tiu/${s.num}/vmlinuz`,
        initrd: s.initrdPath ? `/tiu/${s.num}/initrd` : undefined,
        options: blsOptions(s),
      });
      await writeFileAtomic(join(entriesDir, file), text);
      if (current && current.file !== file) await rm(join(entriesDir, current.file), { force: true });
    },

    async removeEntry(num) {
      for (const e of (await scan()).filter((x) => x.num === num)) await rm(join(entriesDir, e.file), { force: true });
      await rm(join(o.esp, 'tiu', String(num)), { recursive: true, force: true });
    },

    async getDefault() {
      return (await scan()).find((e) => e.rank === 'default')?.num;
    },

    async setDefault(num, opts = {}) {
      let list = await scan();
      let target = list.find((e) => e.num === num);
      if (!target) throw new TiuError('BOOT_FAILED', `there is no systemd-boot entry for snapshot ${num} in ${entriesDir}`, { hint: 'run tiu health-check --sync-only to write the entries' });
      if (opts.fallback !== undefined) {
        if (!list.some((e) => e.num === opts.fallback)) throw new TiuError('BOOT_FAILED', `there is no systemd-boot entry for the fallback snapshot ${opts.fallback}`, { hint: 'run tiu health-check --sync-only' });
        // A trial needs a counter; a running one keeps its count (re-arming would allow endless tries).
        if (!target.tries || target.tries.left === 0) target = await rename(target, { left: DEFAULT_TRIES, done: 0 });
      } else if (target.tries?.left === 0) {
        // Chosen explicitly although it failed before: let it boot.
        target = await rename(target, undefined);
      }
      list = list.map((e) => (e.num === num ? target! : e));
      // Demote first, promote last: a crash in between leaves no entry ranked above the old default.
      const rankFor = (e: OnDisk): Rank => (e.num === num ? 'default' : e.num === opts.fallback ? 'fallback' : 'other');
      for (const e of list) if (rankFor(e) !== 'default') await setRank(e, rankFor(e));
      await setRank(target!, 'default');
      const conf = await readFile(loaderConf, 'utf8').catch(() => undefined);
      const next = setLoaderDefault(conf, DEFAULT_PATTERN);
      if (next !== conf) await writeFileAtomic(loaderConf, next);
    },

    async setOneShot(num) {
      const e = await entryOf(num);
      if (!e) throw new TiuError('BOOT_FAILED', `there is no systemd-boot entry for snapshot ${num}`, { hint: 'run tiu health-check --sync-only' });
      try {
        await access(efivars);
      } catch {
        sys.log.debug(`no efivarfs at ${efivars}: one-shot boot not available`);
        return false;
      }
      const path = join(efivars, `LoaderEntryOneShot-${LOADER_GUID}`);
      // efivarfs marks existing variables immutable; clear the flag before rewriting.
      await access(path).then(
        () => sys.run('chattr', ['-i', path], { allowFailure: true }),
        () => undefined,
      );
      // systemd-boot matches ids in lower case; ours already are.
      await writeFile(path, encodeEfiString(e.file));
      return true;
    },

    async getTry(): Promise<BootTry | undefined> {
      const list = await scan();
      const def = list.find((e) => e.rank === 'default');
      if (!def?.tries) return undefined;
      return { num: def.num, triesLeft: def.tries.left, fallback: list.find((e) => e.rank === 'fallback')?.num };
    },

    async endTry(num, outcome) {
      const e = await entryOf(num);
      if (!e) return;
      if (outcome === 'good') {
        if (e.tries) await rename(e, undefined);
      } else if (!e.tries || e.tries.left !== 0) {
        await rename(e, { left: 0, done: e.tries?.done ?? 0 });
      }
    },
  };
  return backend;
}
