/**
 * Who writes the bootloader configuration of the VM disks: `tiu` (tiu's boot backends,
 * `[device] bootloader = grub2 | systemd-boot`, with the health check units) when this checkout
 * has them (src/tiu/boot/), else `harness` (build-disk.sh's minimal config: kernel and initrd
 * outside the snapshots, root = the btrfs default subvolume). TIU_VM_BOOT_MODE overrides.
 */
import { existsSync } from 'node:fs';
import { REPO } from './paths.ts';

export type BootMode = 'harness' | 'tiu';

export function bootMode(): BootMode {
  const v = process.env.TIU_VM_BOOT_MODE;
  if (v === 'harness' || v === 'tiu') return v;
  if (v) throw new Error(`TIU_VM_BOOT_MODE must be 'harness' or 'tiu', not '${v}'`);
  return existsSync(`${REPO}/src/tiu/boot/backend.ts`) && existsSync(`${REPO}/systemd/tiu-health.service`) ? 'tiu' : 'harness';
}
