#!/bin/bash
# KIWI config script of the tiu-vm description (documentation; see config.xml). The same steps
# as vm/image/customize.sh: serial autologin, /tmp on tmpfs, the 9p shares, tiu from its
# Debian package, the generic dracut initrd.
set -euo pipefail
mkdir -p /etc/systemd/system/serial-getty@ttyS0.service.d
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %%I dumb\n' \
  >/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf
cp /usr/share/systemd/tmp.mount /etc/systemd/system/tmp.mount
systemctl enable tmp.mount
printf 'hostonly="no"\ndrivers+=" virtio_blk virtio_pci virtio_scsi virtio_console btrfs dm_mod dm_verity "\nadd_dracutmodules+=" systemd btrfs "\n' \
  >/etc/dracut.conf.d/90-tiu-vm.conf
# tiu from its Debian package (docs/install.md): `npm run package -- kiwi/tiu-vm/root/var/tmp`
# before `kiwi-ng system build` puts the .deb into the description's overlay tree (root/), which
# KIWI copies into the image before this script runs. Its postinst enables the units and timers.
dpkg -i /var/tmp/tiu_*.deb
rm -f /var/tmp/tiu_*.deb
