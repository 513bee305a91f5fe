#!/usr/bin/env bash
# `npm run package [-- OUTDIR]`: builds tiu_<version>_<arch>.deb with dpkg-deb from exactly the
# layout scripts/install.sh makes (prefix /usr, /etc/tiu/tiu.conf as a conffile). Prints the
# path of the package. The Node.js runtime inside makes it architecture-specific.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/dist}
node="$repo/node_modules/.bin/node"
version=$("$node" -p "require('$repo/package.json').version")
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/tiu-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
bash "$repo/scripts/install.sh" --prefix /usr --destdir "$stage/root" >&2
mkdir -p "$stage/root/DEBIAN"
cat > "$stage/root/DEBIAN/control" <<CONTROL
Package: tiu
Version: $version
Architecture: $arch
Maintainer: tiu developers <tiu@localhost>
Section: admin
Priority: optional
Depends: btrfs-progs, cryptsetup-bin, util-linux, mount, curl
Recommends: squashfs-tools, snapper, xz-utils
Installed-Size: $(du -sk --exclude=DEBIAN "$stage/root" | cut -f1)
Homepage: https://github.com/tiu-project/tiu
Description: transactional image updates for btrfs-rooted Linux systems
 Applies signed squashfs/dm-verity image archives into new btrfs snapshots that
 become the default atomically, merges /etc, keeps the boot loader in step and
 checks every boot, rolling back a snapshot that fails. Ships its own Node.js 24
 runtime in /usr/lib/tiu.
CONTROL
echo /etc/tiu/tiu.conf > "$stage/root/DEBIAN/conffiles"
# Enable the units on first install (works offline, in an image build chroot, too).
cat > "$stage/root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "$2" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl enable tiu-health.service tiu-etc-sync.service tiu-update.timer tiu-cleanup.timer >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
exit 0
POSTINST
cat > "$stage/root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ "$1" = remove ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable tiu-health.service tiu-etc-sync.service tiu-update.timer tiu-cleanup.timer >/dev/null 2>&1 || true
fi
exit 0
PRERM
chmod 0755 "$stage/root/DEBIAN/postinst" "$stage/root/DEBIAN/prerm"
mkdir -p "$out"
deb="$out/tiu_${version}_${arch}.deb"
# zstd: fast to build and to unpack; dpkg reads it since 1.21.18 (Debian 12).
dpkg-deb --root-owner-group -Zzstd -z3 --build "$stage/root" "$deb" >&2
echo "$deb"
