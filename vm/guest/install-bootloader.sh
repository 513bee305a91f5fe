#!/bin/bash
# Runs INSIDE the guest at the installer boot (boot mode `tiu`, see vm/lib/image.ts): installs
# the boot loader the way docs/boot.md describes and lets tiu write its configuration.
# Usage: install-bootloader.sh bios|uefi
set -euo pipefail
variant=$1
mountpoint -q /boot/efi || mount /boot/efi
case $variant in
bios)
  # GRUB's directory on the ESP (FAT): GRUB can write grubenv there, so it counts boot tries.
  grub-install --target=i386-pc --boot-directory=/boot/efi /dev/vda
  # The harness's first config (beside GRUB on btrfs) is not used any more.
  rm -rf /boot/grub2/i386-pc/grub /boot/grub2/i386-pc/tiu-vm
  ;;
uefi)
  bootctl install --esp-path=/boot/efi --no-variables --graceful || bootctl update --esp-path=/boot/efi --no-variables --graceful
  rm -rf /boot/efi/tiu-vm /boot/efi/loader/entries/tiu-vm.conf
  ;;
*) echo "usage: $0 bios|uefi" >&2; exit 2 ;;
esac
tiu health-check --sync-only
echo "--- ESP after tiu health-check --sync-only:"
find /boot/efi -maxdepth 3 | sort
for f in /boot/efi/grub/grub.cfg /boot/efi/loader/loader.conf /boot/efi/loader/entries/*.conf; do
  [ -f "$f" ] && { echo "--- $f"; cat "$f"; }
done
sync
