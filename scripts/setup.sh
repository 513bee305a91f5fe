#!/usr/bin/env bash
# Sets up this checkout on a fresh Debian/Ubuntu machine, idempotently and quickly when done:
#   - the Debian packages tiu and its tests drive (squashfs-tools, cryptsetup-bin, btrfs-progs, ...)
#   - Node.js 24 from the npm registry's `node` package (node_modules/.bin/node), and the npm deps.
# Set TIU_SETUP_EXTRA="casync ostree ..." to install more packages (the benchmark and VM harness do).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:package pairs; a package is installed only when its tool is missing.
pairs="mksquashfs:squashfs-tools unsquashfs:squashfs-tools veritysetup:cryptsetup-bin mkfs.btrfs:btrfs-progs
btrfs:btrfs-progs rsync:rsync getfattr:attr setfattr:attr setfacl:acl openssl:openssl mmdebstrap:mmdebstrap
snapper:snapper zstd:zstd xz:xz-utils flock:util-linux losetup:mount mount:mount tar:tar
grub-editenv:grub-common grub-script-check:grub-common systemd-analyze:systemd unshare:util-linux curl:curl nginx:nginx
man:man-db groff:groff-base dpkg-deb:dpkg
dbus-daemon:dbus dbus-send:dbus runuser:util-linux
bsdiff:bsdiff bspatch:bsdiff bzip2:bzip2 ostree:ostree casync:casync xdelta3:xdelta3"
missing=()
for pair in $pairs; do
  tool=${pair%%:*}; pkg=${pair#*:}
  PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
done
for pkg in ${TIU_SETUP_EXTRA:-}; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "setup: installing Debian packages: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

# npm dependencies, including Node.js 24 as node_modules/.bin/node (npm scripts put it first on PATH).
stamp=node_modules/.tiu-setup-stamp
want=$(sha256sum package-lock.json | cut -c1-64)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x node_modules/.bin/node ]; then
  echo "setup: installing npm dependencies and Node.js 24" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$stamp"
fi
v=$(node_modules/.bin/node --version)
case "$v" in v2[4-9]*|v[3-9][0-9]*) ;; *) echo "setup: node_modules/.bin/node is $v, expected >= 24" >&2; exit 1 ;; esac
echo "setup: ready (Node.js $v)" >&2
