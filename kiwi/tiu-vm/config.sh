#!/bin/bash
# KIWI config script of the tiu-vm description (documentation; see config.xml). The same steps
# as vm/image/customize.sh: serial autologin, /tmp on tmpfs, the 9p shares, /usr/bin/tiu, the
# generic dracut initrd.
set -euo pipefail
mkdir -p /etc/systemd/system/serial-getty@ttyS0.service.d
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %%I dumb\n' \
  >/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf
cp /usr/share/systemd/tmp.mount /etc/systemd/system/tmp.mount
systemctl enable tmp.mount
printf 'hostonly="no"\ndrivers+=" virtio_blk virtio_pci virtio_scsi virtio_console btrfs dm_mod dm_verity "\nadd_dracutmodules+=" systemd btrfs "\n' \
  >/etc/dracut.conf.d/90-tiu-vm.conf
printf '#!/bin/sh\nexport NODE_COMPILE_CACHE=/var/cache/tiu-vm-node\nexec /opt/tiu/node_modules/node/bin/node /opt/tiu/bin/tiu.js "$@"\n' >/usr/bin/tiu
chmod 755 /usr/bin/tiu
