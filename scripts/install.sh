#!/usr/bin/env bash
# Installs tiu into a root: scripts/install.sh [--prefix /usr] [--destdir DIR] [--sysconfdir /etc]
#   [--node PATH|none] [--no-build]      (also: npm run install-root -- --destdir /mnt)
#
# What goes where (prefix /usr; DESTDIR, or --destdir, is put in front of every path):
#   /usr/lib/tiu/tiu.mjs        the bundle (npm run build), its chunks in /usr/lib/tiu/lib/
#   /usr/lib/tiu/node_modules/@napi-rs/xattr*   the prebuilt xattr binding the bundle loads
#   /usr/lib/tiu/node           the Node.js 24 runtime tiu runs on: the binary of the npm `node`
#                               package this checkout uses (--node PATH for another one; --node
#                               none to use the system's /usr/bin/node, which must be >= 24)
#   /usr/bin/tiu                wrapper: exec /usr/lib/tiu/node /usr/lib/tiu/tiu.mjs "$@"
#   /usr/lib/systemd/system/    tiu-update.{service,timer}, tiu-cleanup.{service,timer},
#                               tiu-health.service, tiu-etc-sync.service
#   /usr/share/dbus-1/system.d/org.tiu.Updater1.conf        bus policy (only root may Apply)
#   /usr/share/dbus-1/system-services/org.tiu.Updater1.service  activation of tiu-daemon.service
#   /etc/tiu/tiu.conf           commented template (kept if it exists; a conffile in the .deb)
#   /usr/share/man/man8/tiu.8.gz, man5/tiu.conf.5.gz
#   /usr/share/bash-completion/completions/tiu, zsh/vendor-completions/_tiu,
#   fish/vendor_completions.d/tiu.fish
# Enabling units is left to the caller (systemctl enable, presets, or the package's postinst).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr
sysconfdir=/etc
destdir=${DESTDIR:-}
node=
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --sysconfdir) sysconfdir=$2; shift 2 ;;
    --sysconfdir=*) sysconfdir=${1#*=}; shift ;;
    --node) node=$2; shift 2 ;;
    --node=*) node=${1#*=}; shift ;;
    --no-build) build=; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
buildnode="$repo/node_modules/.bin/node"
[ -x "$buildnode" ] || { echo "install.sh: $buildnode missing: run 'npm run setup' first" >&2; exit 1; }
if [ -n "$build" ] || [ ! -f "$repo/dist/tiu.mjs" ] || [ ! -d "$repo/dist/lib" ]; then "$buildnode" "$repo/scripts/build.ts" >&2; fi

libdir=$prefix/lib/tiu
if [ "$node" = none ]; then
  runtime=/usr/bin/node
else
  src=$(readlink -f "${node:-$buildnode}")
  major=$("$src" -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 24 ] || { echo "install.sh: $src is Node.js $major; tiu needs 24 or newer" >&2; exit 1; }
  install -D -m 0755 "$src" "$destdir$libdir/node"
  runtime=$libdir/node
fi
install -D -m 0644 "$repo/dist/tiu.mjs" "$destdir$libdir/tiu.mjs"
# The chunks the entry imports lazily (one per command and what only it needs; scripts/build.ts).
rm -rf "$destdir$libdir/lib"
install -d -m 0755 "$destdir$libdir/lib"
install -m 0644 "$repo"/dist/lib/*.mjs "$destdir$libdir/lib/"
# The bundle leaves out one native module, the xattr binding (a prebuilt N-API library): Node
# finds it in node_modules beside the bundle. Without it tiu falls back to getfattr/setfattr.
for m in "$repo"/node_modules/@napi-rs/xattr*; do
  [ -d "$m" ] || continue
  install -d -m 0755 "$destdir$libdir/node_modules/@napi-rs"
  cp -a "$m" "$destdir$libdir/node_modules/@napi-rs/"
done
# The download lock's binding (fs-native-extensions, prebuilt N-API) and what it loads; without
# it tiu takes that lock through a flock helper process (src/tiu/download/lock.ts).
for m in fs-native-extensions require-addon which-runtime bare-addon-resolve bare-module-resolve bare-semver; do
  [ -d "$repo/node_modules/$m" ] || continue
  install -d -m 0755 "$destdir$libdir/node_modules"
  cp -a "$repo/node_modules/$m" "$destdir$libdir/node_modules/"
done
install -d -m 0755 "$destdir$prefix/bin"
cat > "$destdir$prefix/bin/tiu" <<WRAPPER
#!/bin/sh
# tiu: the bundle of tiu $("$buildnode" -p "require('$repo/package.json').version") on its Node.js runtime (installed by scripts/install.sh).
exec $runtime $libdir/tiu.mjs "\$@"
WRAPPER
chmod 0755 "$destdir$prefix/bin/tiu"

units=$destdir$prefix/lib/systemd/system
install -d -m 0755 "$units"
for u in "$repo"/systemd/*.service "$repo"/systemd/*.timer; do
  sed "s|/usr/bin/tiu|$prefix/bin/tiu|g" "$u" > "$units/$(basename "$u")"
  chmod 0644 "$units/$(basename "$u")"
done

# The update service's D-Bus policy and activation (docs/dbus.md).
install -D -m 0644 "$repo/dbus/org.tiu.Updater1.conf" "$destdir$prefix/share/dbus-1/system.d/org.tiu.Updater1.conf"
install -D -m 0644 "$repo/dbus/org.tiu.Updater1.service" "$destdir$prefix/share/dbus-1/system-services/org.tiu.Updater1.service"

if [ ! -e "$destdir$sysconfdir/tiu/tiu.conf" ]; then install -D -m 0644 "$repo/packaging/tiu.conf" "$destdir$sysconfdir/tiu/tiu.conf"; fi

for page in tiu.8 tiu.conf.5; do
  install -d -m 0755 "$destdir$prefix/share/man/man${page##*.}"
  gzip -9nc "$repo/dist/man/$page" > "$destdir$prefix/share/man/man${page##*.}/$page.gz"
done
install -D -m 0644 "$repo/dist/completions/tiu.bash" "$destdir$prefix/share/bash-completion/completions/tiu"
install -D -m 0644 "$repo/dist/completions/_tiu" "$destdir$prefix/share/zsh/vendor-completions/_tiu"
install -D -m 0644 "$repo/dist/completions/tiu.fish" "$destdir$prefix/share/fish/vendor_completions.d/tiu.fish"
echo "install.sh: installed tiu into ${destdir:-/} (prefix $prefix)" >&2
