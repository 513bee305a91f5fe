/**
 * Which bootloader backend drives a root, and where its files are. The choice is pure
 * ({@link chooseBootloader}); {@link probeBootFacts} gathers the facts from the root.
 *
 * auto: an ESP mounted at R/boot/efi or R/efi with systemd-boot installed → systemd-boot;
 * else GRUB's directory (see GRUB_DIRS) or R/boot/grub*\/grub.cfg → grub2; else none.
 */
import { lstat, readdir, readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { TiuError } from '../../core/errors.ts';
import { mountAt, parseMountinfo } from '../../snapshot/mountinfo.ts';
import type { BootloaderKind, BootloaderSetting } from './types.ts';

export { BOOTLOADER_SETTINGS, type BootloaderSetting } from './types.ts';

/** Where an ESP may be mounted, relative to the root. */
export const ESP_DIRS = ['boot/efi', 'efi'] as const;
/**
 * Where tiu looks for GRUB's own directory ($prefix, i.e. `grub-install --boot-directory=D`
 * puts it at D/grub): on the ESP (UEFI: GRUB can write grubenv there) or in the snapshots
 * subvolume (BIOS on an all-btrfs disk). Never inside a snapshot: those are read-only and
 * get deleted.
 */
export const GRUB_DIRS = ['boot/efi/grub', 'efi/grub', '.snapshots/grub'] as const;

export interface BootFacts {
  esps: { path: string; mounted: boolean; systemdBoot: boolean }[];
  /** Existing GRUB directories from GRUB_DIRS (host paths), in that order. */
  grubDirs: string[];
  /** R/boot/grub/grub.cfg or R/boot/grub2/grub.cfg exists. */
  distroGrubCfg: boolean;
}

export interface BootLocation {
  kind: BootloaderKind;
  esp?: string;
  grubDir?: string;
}

/** Decides the backend (pure). Explicit settings fail loudly when their files are missing. */
export function chooseBootloader(setting: BootloaderSetting, f: BootFacts): BootLocation {
  const sdEsp = f.esps.find((e) => e.systemdBoot && e.mounted) ?? f.esps.find((e) => e.systemdBoot);
  switch (setting) {
    case 'none':
      return { kind: 'none' };
    case 'systemd-boot': {
      const esp = sdEsp ?? f.esps.find((e) => e.mounted);
      if (!esp) {
        throw new TiuError('BOOT_FAILED', `bootloader systemd-boot: no ESP mounted at ${ESP_DIRS.map((d) => `/${d}`).join(' or ')}`, {
          hint: 'mount the EFI system partition there (and bootctl install), or set [device] bootloader in tiu.conf',
        });
      }
      return { kind: 'systemd-boot', esp: esp.path };
    }
    case 'grub2':
      return { kind: 'grub2', grubDir: f.grubDirs[0] };
    case 'auto':
      if (sdEsp?.mounted) return { kind: 'systemd-boot', esp: sdEsp.path };
      if (f.grubDirs.length || f.distroGrubCfg) return { kind: 'grub2', grubDir: f.grubDirs[0] };
      return { kind: 'none' };
  }
}

async function isDir(p: string): Promise<boolean> {
  return (await lstat(p).catch(() => undefined))?.isDirectory() ?? false;
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

/** Whether systemd-boot is installed on an ESP (bootctl install puts EFI/systemd/systemd-boot<arch>.efi). */
async function hasSystemdBoot(esp: string): Promise<boolean> {
  const names = await readdir(join(esp, 'EFI/systemd')).catch(() => [] as string[]);
  return names.some((n) => /^systemd-boot.*\.efi$/i.test(n));
}

/** Reads the facts for {@link chooseBootloader} from root `root`. No changes. */
export async function probeBootFacts(root: string): Promise<BootFacts> {
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const esps: BootFacts['esps'] = [];
  for (const d of ESP_DIRS) {
    const p = join(root, d);
    if (!(await isDir(p))) continue;
    const real = await realpath(p);
    esps.push({ path: p, mounted: mountAt(mounts, real) !== undefined, systemdBoot: await hasSystemdBoot(p) });
  }
  const grubDirs: string[] = [];
  for (const d of GRUB_DIRS) if (await isDir(join(root, d))) grubDirs.push(join(root, d));
  const distroGrubCfg = (await exists(join(root, 'boot/grub/grub.cfg'))) || (await exists(join(root, 'boot/grub2/grub.cfg')));
  return { esps, grubDirs, distroGrubCfg };
}

/** Detects the backend of `root` for `setting` ('auto' or explicit). */
export async function detectBoot(root: string, setting: BootloaderSetting): Promise<BootLocation> {
  if (setting === 'none') return { kind: 'none' };
  return chooseBootloader(setting, await probeBootFacts(root));
}
