#!/usr/bin/env bash
# The demo (README's first command): the whole life of an image update on this machine.
#  1. builds two versions of a small root tree,
#  2. makes a development CA and signing certificate (tiu keygen),
#  3. creates signed archives (tiu create) and shows one (tiu info),
#  4. installs v1 onto a loop-file btrfs "device" (tiu install) and mounts it like a running system,
#  5. changes /etc and adds a user on the device, updates to v2 (tiu update),
#  6. shows the snapshots (tiu status), rolls back (tiu rollback), shows them again.
# Everything lives in $TIU_DEMO_DIR (default /tmp/tiu-demo) and is unmounted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
work=${TIU_DEMO_DIR:-/tmp/tiu-demo}
tiu() { echo "+ tiu $*" >&2; node bin/tiu.js "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

cleanup() {
  for m in $(findmnt -rn -o TARGET | grep "^$work/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$work"
mkdir -p "$work"

say "1. two versions of a small root tree"
make_tree() { # make_tree DIR VERSION
  local d=$1 v=$2
  mkdir -p "$d"/{etc/ssh,usr/bin,usr/lib,usr/share/demo,var/lib,home,root,tmp,run,proc,sys,dev,srv,opt,boot}
  ln -sfn usr/bin "$d/bin"
  ln -sfn usr/lib "$d/lib"
  printf 'NAME="tiu demo"\nID=tiudemo\nVERSION_ID=%s\nPRETTY_NAME="tiu demo %s"\n' "$v" "$v" > "$d/usr/lib/os-release"
  ln -sfn ../usr/lib/os-release "$d/etc/os-release"
  printf 'root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n' > "$d/etc/passwd"
  printf 'root:x:0:\nmessagebus:x:101:\nusers:x:100:\n' > "$d/etc/group"
  printf 'root:*:19000:0:99999:7:::\nmessagebus:!:19000::::::\n' > "$d/etc/shadow"
  printf 'root:*::\nmessagebus:!::\nusers:!::\n' > "$d/etc/gshadow"
  chmod 0640 "$d/etc/shadow" "$d/etc/gshadow"
  printf 'Port 22\nPermitRootLogin prohibit-password\nPasswordAuthentication yes\nX11Forwarding no\n' > "$d/etc/ssh/sshd_config"
  printf 'demo-host\n' > "$d/etc/hostname"
  cp /usr/bin/env "$d/usr/bin/env"
  printf '#!/bin/sh\necho "hello from tiu demo %s"\n' "$v" > "$d/usr/bin/hello"
  chmod 0755 "$d/usr/bin/hello"
  head -c 3000000 /dev/urandom > "$d/usr/share/demo/big-unchanged.bin"
  for i in $(seq 1 200); do printf 'file %s of the demo\n' "$i" > "$d/usr/share/demo/f$i.txt"; done
  echo "state" > "$d/var/lib/left-out-by-tiu-create"
}
make_tree "$work/tree-v1" 1.0
cp -a "$work/tree-v1" "$work/tree-v2"
printf 'NAME="tiu demo"\nID=tiudemo\nVERSION_ID=2.0\nPRETTY_NAME="tiu demo 2.0"\n' > "$work/tree-v2/usr/lib/os-release"
printf '#!/bin/sh\necho "hello from tiu demo 2.0"\n' > "$work/tree-v2/usr/bin/hello"
rm "$work/tree-v2/usr/share/demo/f7.txt"
echo "new in 2.0" > "$work/tree-v2/usr/share/demo/new.txt"
# the vendor changes sshd_config elsewhere than the admin will
sed -i 's/^X11Forwarding no/X11Forwarding no\nAllowAgentForwarding no/' "$work/tree-v2/etc/ssh/sshd_config"
# and adds a system user
echo 'systemd-network:x:998:998::/:/usr/sbin/nologin' >> "$work/tree-v2/etc/passwd"
echo 'systemd-network:x:998:' >> "$work/tree-v2/etc/group"
echo 'systemd-network:!*:19000::::::' >> "$work/tree-v2/etc/shadow"
echo 'systemd-network:!*::' >> "$work/tree-v2/etc/gshadow"

say "2. development keys"
tiu keygen -o "$work/keys"
keyring=(--keyring "$work/keys/keyring.pem")
sign=(--key "$work/keys/signing.key.pem" --cert "$work/keys/signing.cert.pem" --compatible tiu-demo-x86_64)

say "3. signed archives"
SOURCE_DATE_EPOCH=1700000000 tiu create "$work/tree-v1" -o "$work/demo-1.0.tiu" "${sign[@]}" --version 1.0
SOURCE_DATE_EPOCH=1700086400 tiu create "$work/tree-v2" -o "$work/demo-2.0.tiu" "${sign[@]}" --version 2.0
tiu info "$work/demo-2.0.tiu" "${keyring[@]}"

say "4. install 1.0 onto a loop-file btrfs device"
truncate -s 1G "$work/device.img"
loop=$(losetup --find --show "$work/device.img")
mkfs.btrfs -q "$loop"
mkdir -p "$work/top" "$work/root"
mount "$loop" "$work/top"
tiu install "$work/demo-1.0.tiu" --root "$work/top" "${keyring[@]}"
umount "$work/top"
# mount it like a booted system: default subvolume at /, then /.snapshots and /var
mount -o rw "$loop" "$work/root"
mount -o subvol=/@/.snapshots "$loop" "$work/root/.snapshots"
mount -o subvol=/@/var "$loop" "$work/root/var"
root=(--root "$work/root")
tiu status "${root[@]}"

say "5. local changes on the device, then update to 2.0"
sed -i 's/^PermitRootLogin .*/PermitRootLogin no/' "$work/root/etc/ssh/sshd_config"
echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> "$work/root/etc/passwd"
echo 'alice:x:1000:' >> "$work/root/etc/group"
echo 'alice:$6$demo$hash:19500:0:99999:7:::' >> "$work/root/etc/shadow"
echo 'alice:!::' >> "$work/root/etc/gshadow"
tiu update "${root[@]}" --source "$work/demo-2.0.tiu" "${keyring[@]}"
tiu status "${root[@]}"
new=$(ls "$work/root/.snapshots" | sort -n | tail -1)
echo "--- /etc/ssh/sshd_config in the new snapshot $new (admin's and vendor's changes merged):"
cat "$work/root/.snapshots/$new/snapshot/etc/ssh/sshd_config"
echo "--- users in the new snapshot:"
cut -d: -f1,3 "$work/root/.snapshots/$new/snapshot/etc/passwd"
echo "--- /usr/bin/hello in the new snapshot:"
cat "$work/root/.snapshots/$new/snapshot/usr/bin/hello"

say "6. roll back"
tiu rollback "${root[@]}"
tiu status "${root[@]}"
say "done: archives and the device image are in $work"
