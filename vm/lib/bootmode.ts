/**
 * Who writes the bootloader configuration of the VM disks: `harness` (build-disk.sh writes a
 * minimal config: kernel and initrd on the ESP, root = the btrfs default subvolume) or `tiu`
 * (tiu's boot backend, `[device] bootloader = grub2 | systemd-boot`). TIU_VM_BOOT_MODE overrides.
 */
export type BootMode = 'harness' | 'tiu';

export function bootMode(): BootMode {
  const v = process.env.TIU_VM_BOOT_MODE;
  if (v === 'harness' || v === 'tiu') return v;
  if (v) throw new Error(`TIU_VM_BOOT_MODE must be 'harness' or 'tiu', not '${v}'`);
  return 'harness';
}
