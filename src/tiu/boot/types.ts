/**
 * The bootloader seam: every backend (grub2, systemd-boot, none) implements {@link BootBackend},
 * so the reconciliation (sync.ts) and the health check never know which one they drive.
 */

export type BootloaderKind = 'grub2' | 'systemd-boot' | 'none';

/** `[device] bootloader` in tiu.conf: a backend, or 'auto' to detect one. */
export type BootloaderSetting = BootloaderKind | 'auto';

/** Every valid {@link BootloaderSetting} (config validation and --help use this list). */
export const BOOTLOADER_SETTINGS: readonly BootloaderSetting[] = ['auto', 'grub2', 'systemd-boot', 'none'];

/** What a snapshot needs to be booted, gathered from its (read-only) tree. */
export interface SnapshotBoot {
  num: number;
  /** Menu title, e.g. `Debian GNU/Linux 12 (bookworm) — snapshot 5`. */
  title: string;
  kver: string;
  /** Host paths of the kernel and initrd inside the snapshot. */
  kernelPath: string;
  initrdPath?: string;
  /** Paths relative to the snapshot root, for loaders that read the btrfs directly (GRUB). */
  kernelRel: string;
  initrdRel?: string;
  /** btrfs path of the snapshot subvolume from the top level, e.g. `@/.snapshots/5/snapshot`. */
  subvol: string;
  /** Filesystem UUID of the btrfs (root=UUID=…). */
  uuid: string;
  /** Extra kernel options from the snapshot (etc/kernel/cmdline), without root=/rootflags=. */
  cmdline: string[];
}

/** An entry a backend currently has. */
export interface BootEntryInfo {
  num: number;
  /** Backend-specific id (BLS file name, GRUB menu id). */
  id: string;
  /** Boot counter, where the backend counts tries per entry (BLS). */
  tries?: { left: number; done: number };
  /** The bootloader considers it bad (no tries left). */
  bad: boolean;
}

/** A pending boot trial: `num` is being tried; when its tries run out the loader boots `fallback`. */
export interface BootTry {
  num: number;
  /** Tries left as the loader counts them; undefined when the backend cannot tell. */
  triesLeft?: number;
  fallback?: number;
}

export interface BootBackend {
  readonly kind: BootloaderKind;
  /** Where it writes (ESP, GRUB directory), for messages. */
  readonly location: string | undefined;
  /** Entries for snapshots, sorted by snapshot number. */
  listEntries(): Promise<BootEntryInfo[]>;
  /** Adds (or refreshes) the entry of a snapshot; `trial` gives it a fresh boot counter. */
  addEntry(s: SnapshotBoot, o?: { trial?: boolean }): Promise<void>;
  /** Removes the entry of snapshot `num` and whatever was copied for it. No error if absent. */
  removeEntry(num: number): Promise<void>;
  /** The snapshot the loader boots by default. */
  getDefault(): Promise<number | undefined>;
  /**
   * Makes `num` the default. With `fallback`, arms a boot trial: after the allowed tries of `num`
   * fail, the loader boots `fallback` instead.
   */
  setDefault(num: number, o?: { fallback?: number }): Promise<void>;
  /** Boots `num` on the next boot only. False when this loader/firmware cannot do that. */
  setOneShot(num: number): Promise<boolean>;
  /** The armed boot trial, if any. */
  getTry(): Promise<BootTry | undefined>;
  /**
   * Ends the trial of `num` (if it is the one armed): `good` blesses the entry (no counter
   * any more), `bad` makes the loader skip it from now on.
   */
  endTry(num: number, outcome: 'good' | 'bad'): Promise<void>;
}
