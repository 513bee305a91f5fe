#!/usr/bin/env bash
# Runs `npm run test:unit` the way a contributor without root would: as `nobody`, with only Node
# on PATH (no btrfs-progs, squashfs-tools, cryptsetup, ...). Writes the vitest JSON report to $1.
# Used by .ci/run, so a "pure" test that starts needing root or a tool fails in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:?usage: unit-as-nobody.sh REPORT.json}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/bin"
ln -s "$PWD/node_modules/.bin/node" "$tmp/bin/node"
ln -s "$(command -v sh)" "$tmp/bin/sh"
chmod 755 "$tmp" "$tmp/bin"
run=(env -i HOME="$tmp" PATH="$tmp/bin" TIU_UNIT_REPORT="$tmp/report.json"
  node node_modules/vitest/vitest.mjs run --config vitest.unit.config.ts --configLoader runner)
if [ "$(id -u)" = 0 ] && setpriv --reuid=nobody --regid=nogroup --clear-groups test -r package.json 2>/dev/null; then
  touch "$tmp/report.json"; chown nobody "$tmp/report.json"
  status=0; setpriv --reuid=nobody --regid=nogroup --clear-groups "${run[@]}" || status=$?
else
  echo "unit-as-nobody: this checkout is not readable by nobody; running the unit tests as $(id -un), still without tools on PATH" >&2
  status=0; "${run[@]}" || status=$?
fi
cp "$tmp/report.json" "$report" 2>/dev/null || true
exit "$status"
