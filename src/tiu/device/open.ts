/**
 * The device handle: one root, opened once per command. {@link openDevice} checks that the root
 * is on btrfs (once), takes the root's transaction lock when the command changes the device,
 * opens the snapshot store, and detects the boot loader on first use (then keeps it). Commands
 * and the pipeline (extract, install, rollback, cleanup, pin, etc sync, boot sync, health check)
 * receive the handle instead of passing root, store, bootloader and snapper through each layer.
 */
import type { System } from '../../core/system.ts';
import { assertBtrfs } from '../../snapshot/btrfs.ts';
import { acquireLock } from '../../snapshot/lock.ts';
import { openSnapshotStore, type SnapperMode, type SnapshotStore } from '../../snapshot/store.ts';
import type { SnapshotFacts } from './policy.ts';
import { TiuError } from '../../core/errors.ts';
import { snapshotDir } from './paths.ts';
import { detectBoot, type BootLocation, type BootloaderSetting } from '../boot/detect.ts';
import { openBootBackend, type OpenedBackend } from '../boot/backend.ts';

/** How a device is driven (from tiu.conf; tests pass explicit boot locations). */
export interface DeviceSettings {
  snapper?: SnapperMode;
  /** A setting ('auto', 'grub2', …) or an explicit location (tests, the installer). */
  bootloader?: BootloaderSetting | BootLocation;
  /** Hold the root's transaction lock while the handle is open (every command that changes the root). */
  lock?: boolean;
}

/** One opened device root; dispose it (`await using`) to release the lock. */
export interface Device extends AsyncDisposable {
  readonly sys: System;
  /** The root as given (R: the running system, or `<top>/@` at install time). */
  readonly root: string;
  readonly store: SnapshotStore;
  readonly snapper: SnapperMode;
  readonly bootloader: BootloaderSetting | BootLocation;
  /** R/.snapshots/N/snapshot */
  snapshotDir(num: number): string;
  /** The snapshots as the pure policies (status, rollback, cleanup) see them. */
  facts(): Promise<SnapshotFacts[]>;
  /** Which boot loader drives the root, detected once ('none' when detection fails). */
  bootLocation(): Promise<BootLocation>;
  /** The boot loader backend, opened once. */
  boot(): Promise<OpenedBackend>;
}

/**
 * Opens root `root`: btrfs check, lock (with `settings.lock`), snapshot store. Throws what those
 * throw (NOT_BTRFS, BUSY, ROOT_LAYOUT, …); changes nothing on disk but the lock file.
 */
export async function openDevice(sys: System, root: string, settings: DeviceSettings = {}): Promise<Device> {
  await assertBtrfs(sys, root);
  const lock = settings.lock ? await acquireLock(sys, root) : undefined;
  try {
    const snapper = settings.snapper ?? 'auto';
    const bootloader = settings.bootloader ?? 'auto';
    const store = await openSnapshotStore(sys, root, { snapper, btrfsChecked: true });
    let location: Promise<BootLocation> | undefined;
    let backend: Promise<OpenedBackend> | undefined;
    const bootLocation = () =>
      (location ??= typeof bootloader === 'string' ? detectBoot(root, bootloader).catch(() => ({ kind: 'none' as const })) : Promise.resolve(bootloader));
    return {
      sys,
      root,
      store,
      snapper,
      bootloader,
      snapshotDir: (num) => snapshotDir(root, num),
      facts: () => facts(store),
      bootLocation,
      // Detection errors (an explicit systemd-boot without an ESP) surface here, not in bootLocation().
      boot: () => (backend ??= openBootBackend(sys, root, bootloader)),
      async [Symbol.asyncDispose]() {
        await lock?.[Symbol.asyncDispose]();
      },
    };
  } catch (e) {
    await lock?.[Symbol.asyncDispose]();
    throw e;
  }
}

export async function facts(store: SnapshotStore): Promise<SnapshotFacts[]> {
  const list = await store.list();
  return list.map((s) => ({
    num: s.num,
    date: s.date instanceof Date ? s.date.toISOString().replace(/\.\d{3}Z$/, 'Z') : String(s.date),
    description: s.description ?? '',
    cleanup: s.cleanup ?? '',
    userdata: s.userdata ?? {},
    isDefault: s.isDefault,
    isMounted: s.isMounted,
  }));
}

export function parseSnapshotNumber(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new TiuError('USAGE', `'${text}' is not a snapshot number`, { hint: 'see tiu status for the numbers' });
  return n;
}
