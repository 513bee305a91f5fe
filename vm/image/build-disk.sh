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
# Without udev the partition nodes may be missing: ask the kernel (partx) and make them.
[ -b "${loop}p3" ] || partx -a "$loop" 2>/dev/null || true
for i in 1 2 3; do
  for _ in $(seq 50); do [ -b "${loop}p$i" ] && break; sleep 0.1; done
  if [ ! -b "${loop}p$i" ] && [ -r "/sys/block/${loop#/dev/}/${loop#/dev/}p$i/dev" ]; then
    IFS=: read -r maj min <"/sys/block/${loop#/dev/}/${loop#/dev/}p$i/dev"
    mknod "${loop}p$i" b "$maj" "$min"
  fi
  [ -b "${loop}p$i" ] || { echo "partition ${loop}p$i did not appear" >&2; exit 1; }
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

# This host's kernel has no vfat: the ESP is written with mtools, never mounted here.
export MTOOLS_SKIP_CHECK=1
kver=$(ls "$snap/usr/lib/modules" | sort -V | tail -1)
cmdline="root=UUID=$uuid rw console=ttyS0,115200 panic=5 systemd.show_status=auto"

if [ "$variant" = bios ]; then
  # GRUB's files go to @/boot/grub2/i386-pc, the layout's subvolume for them (not rolled back
  # with /); GRUB reads them with its btrfs driver. grub-install runs in a chroot of snapshot 1.
  grubdir=/boot/grub2/i386-pc
  mount -t btrfs -o "subvol=/@$grubdir" "${loop}p3" "$snap$grubdir"
  # rslave: unmounting these binds later must not propagate to the host's /dev, /proc, /sys.
  for d in dev proc sys; do mount --rbind "/$d" "$snap/$d"; mount --make-rslave "$snap/$d"; done
  chroot "$snap" grub-install --target=i386-pc --boot-directory="$grubdir" \
    --modules="part_gpt btrfs biosdisk serial" "$loop"
  if true; then # boot mode tiu: the installer boot uses it, then tiu replaces it
    # Kernel and initrd beside GRUB (outside the snapshots); the kernel mounts the btrfs DEFAULT
    # subvolume as / (no rootflags=subvol=), so an update or rollback (set-default) changes
    # what boots. docs/vm.md explains why GRUB cannot take the kernel from the default subvolume.
    mkdir -p "$top/@$grubdir/tiu-vm"
    cp "$snap/boot/vmlinuz-$kver" "$top/@$grubdir/tiu-vm/vmlinuz"
    cp "$snap/boot/initrd.img-$kver" "$top/@$grubdir/tiu-vm/initrd.img"
    cat >"$top/@$grubdir/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry 'tiu VM: btrfs default subvolume' {
  linux /@$grubdir/tiu-vm/vmlinuz $cmdline
  initrd /@$grubdir/tiu-vm/initrd.img
}
EOF
  fi
else
  esp="${loop}p2"
  mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/loader ::/loader/entries
  mcopy -i "$esp" "$snap/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$esp" "$snap/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/systemd/systemd-bootx64.efi
  if true; then # boot mode tiu: the installer boot uses it, then tiu replaces it
    # Kernel and initrd on the ESP (systemd-boot reads only the ESP); root = default subvolume.
    t=$(mktemp -d)
    printf 'default tiu-vm.conf\ntimeout 0\n' >"$t/loader.conf"
    printf 'title tiu VM: btrfs default subvolume\nlinux /tiu-vm/vmlinuz\ninitrd /tiu-vm/initrd.img\noptions %s\n' "$cmdline" >"$t/tiu-vm.conf"
    mmd -i "$esp" ::/tiu-vm
    mcopy -i "$esp" "$snap/boot/vmlinuz-$kver" ::/tiu-vm/vmlinuz
    mcopy -i "$esp" "$snap/boot/initrd.img-$kver" ::/tiu-vm/initrd.img
    mcopy -i "$esp" "$t/loader.conf" ::/loader/loader.conf
    mcopy -i "$esp" "$t/tiu-vm.conf" ::/loader/entries/tiu-vm.conf
    rm -rf "$t"
  fi
fi

cleanup_mounts() { for m in $(findmnt -rno TARGET | grep "^$work/" | sort -r); do umount -l "$m"; done; }
sync
cleanup_mounts
losetup -d "$loop"
loop=
mv "$out.tmp" "$out"
echo "built $out (btrfs UUID $uuid, kernel $kver, boot mode $BOOT_MODE)"
