#!/bin/bash
# mmdebstrap customize hook: turns the fresh bookworm tree "$1" into the VM guest.
# Runs on the host as root; commands that must run inside the tree use chroot.
set -euo pipefail
R=$1
here=$(cd "$(dirname "$0")" && pwd)

echo tiu-vm >"$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 tiu-vm\n' >"$R/etc/hosts"
chroot "$R" passwd -d root >/dev/null

# Root autologin on the serial console; the driver talks to this shell.
mkdir -p "$R/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$R/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I dumb
UNIT
# No readline escape sequences (bracketed paste) in the captured output.
echo 'set enable-bracketed-paste off' >>"$R/etc/inputrc"

# The finished root snapshot is read-only: /tmp must be a tmpfs.
cp "$R/usr/share/systemd/tmp.mount" "$R/etc/systemd/system/tmp.mount"
mkdir -p "$R/etc/systemd/system/local-fs.target.wants"
ln -sf ../tmp.mount "$R/etc/systemd/system/local-fs.target.wants/tmp.mount"

# The host's checkout (tiu) and the harness artifacts (archives) over 9p, read-only. They live
# below /opt, a writable subvolume of the layout, so systemd can create the mount points.
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
for m in tiu:/opt/tiu artifacts:/opt/tiu-artifacts; do
  tag=${m%%:*} where=${m#*:}
  unit=$(chroot "$R" systemd-escape --path --suffix=mount "$where")
  cat >"$R/etc/systemd/system/$unit" <<UNIT
[Unit]
Description=host share '$tag' (9p)
[Mount]
What=$tag
Where=$where
Type=9p
Options=ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf "../$unit" "$R/etc/systemd/system/multi-user.target.wants/$unit"
done
printf '9p\n9pnet_virtio\n' >"$R/etc/modules-load.d/9p.conf"

cat >"$R/usr/bin/tiu" <<'SH'
#!/bin/sh
# tiu from the host checkout shared over 9p (see vm/README in the repository / docs/vm.md).
exec /opt/tiu/node_modules/node/bin/node /opt/tiu/bin/tiu.js "$@"
SH
chmod 755 "$R/usr/bin/tiu"

# Only what a virtio VM needs from the kernel's modules: keeps the image and every scan small.
for kdir in "$R"/usr/lib/modules/*/kernel; do
  rm -rf "$kdir"/sound "$kdir"/drivers/{gpu,media,net/wireless,net/ethernet,infiniband,staging,iio,bluetooth,usb,hid,input/touchscreen,isdn,mmc,nfc,thunderbolt,platform/chrome,scsi/qla2xxx,scsi/lpfc,scsi/mpt3sas}
  chroot "$R" depmod "$(basename "$(dirname "$kdir")")"
done

# dracut: a generic (not host-only) initrd that mounts btrfs from a virtio disk.
cat >"$R/etc/dracut.conf.d/90-tiu-vm.conf" <<'CONF'
hostonly="no"
drivers+=" virtio_blk virtio_pci virtio_scsi virtio_console btrfs dm_mod dm_verity "
add_dracutmodules+=" systemd btrfs "
omit_dracutmodules+=" plymouth i18n network network-legacy ifcfg nfs iscsi lvm mdraid multipath crypt nvdimm fcoe biosdevname resume "
CONF
for kver in $(ls "$R/usr/lib/modules"); do
  chroot "$R" dracut --force --no-hostonly --kver "$kver" "/boot/initrd.img-$kver"
done

# The harness's own marker of the image version (the update scenarios change it).
mkdir -p "$R/usr/share/tiu-vm"
echo 1 >"$R/usr/share/tiu-vm/release"

# Smaller and quieter: no docs, no apt lists.
rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/* "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin
