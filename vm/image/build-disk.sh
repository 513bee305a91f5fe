#!/bin/bash
# Builds a bootable raw disk of the VM guest WITH TIU: partitions, mkfs.btrfs, `tiu install` of
# the archive, then the bootloader.
#
# Usage: build-disk.sh bios|uefi ARCHIVE KEYRING OUT.raw
# Env:   TIU       command that runs tiu on the host (default: node bin/tiu.js of this checkout)
#        BOOT_MODE harness (default): the harness writes a minimal bootloader config (see
#                  docs/vm.md); tiu: tiu's own boot backend does it ([device] bootloader)
#
# Disk (GPT): 1 MiB BIOS boot partition (GRUB's core.img), 256 MiB ESP (vfat, label/partlabel
# "esp"), the rest btrfs (partlabel "root").
set -euo pipefail
variant=$1 archive=$2 keyring=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
TIU=${TIU:-"$repo/node_modules/.bin/node $repo/bin/tiu.js"}
BOOT_MODE=${BOOT_MODE:-harness}
SIZE=${DISK_SIZE:-4G}
case $variant in bios | uefi) ;; *) echo "variant must be bios or uefi" >&2; exit 2 ;; esac

work=$(mktemp -d /tmp/tiu-vm-disk.XXXXXX)
loop=
cleanup() {
  set +e
  for m in $(findmnt -rno TARGET | grep "^$work/" | sort -r); do umount -l "$m"; done
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT

rm -f "$out.tmp"
truncate -s "$SIZE" "$out.tmp"
sfdisk -q "$out.tmp" <<'EOF'
label: gpt
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
size=256MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
EOF
loop=$(losetup --find --show --partscan "$out.tmp")
for i in 1 2 3; do
  for _ in $(seq 50); do [ -b "${loop}p$i" ] && break; sleep 0.1; done
done
mkfs.vfat -F 32 -n ESP "${loop}p2" >/dev/null
mkfs.btrfs -q -L tiu-root "${loop}p3"
uuid=$(blkid -s UUID -o value "${loop}p3")

top=$work/top
mkdir -p "$top"
mount -t btrfs -o subvolid=5 "${loop}p3" "$top"
$TIU install "$archive" --root "$top" --keyring "$keyring" --compatible tiu-vm-x86_64

snap=$top/@/.snapshots/1/snapshot
# The device's own configuration (a local /etc change, kept by every /etc merge).
mkdir -p "$snap/etc/tiu/tiu.conf.d"
if [ "$BOOT_MODE" = tiu ]; then
  bl=$([ "$variant" = bios ] && echo grub2 || echo systemd-boot)
else
  bl=none
fi
printf '[device]\nbootloader = %s\n' "$bl" >"$snap/etc/tiu/tiu.conf.d/50-vm-bootloader.conf"

# A chroot of the installed snapshot, with the ESP at /boot/efi and the disk's device nodes.
mount -t vfat "${loop}p2" "$snap/boot/efi"
# rslave: unmounting these binds later must not propagate to the host's /dev, /proc, /sys.
for d in dev proc sys; do mount --rbind "/$d" "$snap/$d"; mount --make-rslave "$snap/$d"; done
kver=$(ls "$snap/usr/lib/modules" | sort -V | tail -1)
esp=$snap/boot/efi
cmdline="root=UUID=$uuid rw console=ttyS0,115200 panic=5 systemd.show_status=auto"

if [ "$BOOT_MODE" = harness ]; then
  # Kernel and initrd on the ESP; the kernel mounts the btrfs DEFAULT subvolume as / (no
  # rootflags=subvol=), so an update or rollback (set-default) changes what boots. See
  # docs/vm.md for why GRUB cannot pick the kernel from the default subvolume here.
  mkdir -p "$esp/tiu-vm"
  cp "$snap/boot/vmlinuz-$kver" "$esp/tiu-vm/vmlinuz"
  cp "$snap/boot/initrd.img-$kver" "$esp/tiu-vm/initrd.img"
fi

if [ "$variant" = bios ]; then
  chroot "$snap" grub-install --target=i386-pc --boot-directory=/boot/efi \
    --modules="part_gpt fat btrfs biosdisk serial" "$loop"
  if [ "$BOOT_MODE" = harness ]; then
    cat >"$esp/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry 'tiu VM: btrfs default subvolume' {
  linux /tiu-vm/vmlinuz $cmdline
  initrd /tiu-vm/initrd.img
}
EOF
  fi
else
  SYSTEMD_RELAX_ESP_CHECKS=1 chroot "$snap" bootctl install --esp-path=/boot/efi --no-variables
  if [ "$BOOT_MODE" = harness ]; then
    printf 'default tiu-vm.conf\ntimeout 0\n' >"$esp/loader/loader.conf"
    cat >"$esp/loader/entries/tiu-vm.conf" <<EOF
title tiu VM: btrfs default subvolume
linux /tiu-vm/vmlinuz
initrd /tiu-vm/initrd.img
options $cmdline
EOF
  fi
fi

cleanup_mounts() { for m in $(findmnt -rno TARGET | grep "^$work/" | sort -r); do umount -l "$m"; done; }
sync
cleanup_mounts
losetup -d "$loop"
loop=
mv "$out.tmp" "$out"
echo "built $out (btrfs UUID $uuid, kernel $kver, boot mode $BOOT_MODE)"
