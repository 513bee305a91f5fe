#!/bin/bash
# Builds the VM guest's root tree (Debian bookworm) into "$1" with mmdebstrap.
# Usage: build-tree.sh OUTDIR   (OUTDIR must not exist; needs root and network access to Debian)
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(grep -v '^#' "$here/packages.txt" | grep -v '^$' | paste -sd, -)
mmdebstrap --variant=minbase --mode=root \
  --include="$pkgs" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook="bash '$here/customize.sh' \"\$1\"" \
  bookworm "$out" http://deb.debian.org/debian
