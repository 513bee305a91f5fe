/**
 * Fixtures for the boot tests: a minimal root tree with a real shell (the host's dash and its
 * libraries), and fake boot tools written with shell builtins only, which record what they saw.
 */
import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type { System } from '../../src/core/system.ts';
import { makeArchives, type ArchiveSet } from './device.ts';

/** A root tree with /bin/sh (the host's dash and its libraries) and usrmerge symlinks. */
export async function makeMiniRoot(root: string): Promise<void> {
  for (const d of ['usr/bin', 'usr/lib', 'usr/lib64', 'boot', 'etc']) await mkdir(join(root, d), { recursive: true });
  for (const [l, t] of [['bin', 'usr/bin'], ['sbin', 'usr/bin'], ['lib', 'usr/lib'], ['lib64', 'usr/lib64']]) await symlink(t!, join(root, l!));
  await copyFile('/usr/bin/dash', join(root, 'usr/bin/sh'));
  await chmod(join(root, 'usr/bin/sh'), 0o755);
  const ldd = (await execa('ldd', ['/usr/bin/dash'])).stdout;
  for (const m of ldd.matchAll(/(\/\S+\.so[.\d]*)/g)) {
    const real = (await execa('readlink', ['-f', m[1]!])).stdout;
    await mkdir(dirname(join(root, real)), { recursive: true });
    await copyFile(real, join(root, real));
    // The loader is looked up by the path in the binary (e.g. /lib64/ld-linux-x86-64.so.2).
    if (real !== m[1]) {
      const want = join(root, m[1]!);
      await mkdir(dirname(want), { recursive: true }).catch(() => {});
      await copyFile(real, want).catch(() => {});
    }
  }
}

/** A fake dracut (shell builtins only) that records what it saw into the initrd file it writes. */
export const FAKE_DRACUT = `#!/bin/sh
kver= force=no out= prev=
for a in "$@"; do
  if [ "$prev" = --kver ]; then kver=$a; prev=; continue; fi
  case "$a" in --force) force=yes ;; --*) ;; *) out=$a ;; esac
  prev=$a
done
case "$kver" in *broken*) echo "dracut: cannot install module for $kver" >&2; exit 1 ;; esac
case "$kver" in *lost*) exit 0 ;; esac
# dracut's own default name when no output file is given
[ -n "$out" ] || out=/boot/initramfs-$kver.img
{
  echo "fake-initrd kver=$kver force=$force out=$out"
  while read -r id parent dev root mp rest; do echo "mount $mp $root"; done < /proc/self/mountinfo
  set -- /run/*
  [ "$1" = "/run/*" ] && echo "run=empty" || echo "run=$*"
  [ -c /dev/null ] && echo "dev=ok"
  [ -d /sys/kernel ] && echo "sys=ok"
  echo "tmpdir=$TMPDIR"
  echo "path=$PATH"
} > "$out"
`;


/**
 * A fake grub-mkconfig (shell builtins only) that writes what Debian's 10_linux writes for a
 * btrfs root: the kernel path and `rootflags=subvol=` of the subvolume mounted at / — read from
 * mountinfo, as grub-mkrelpath does.
 */
export const FAKE_GRUB_MKCONFIG = `#!/bin/sh
[ "$1" = -o ] || { echo "usage: grub-mkconfig -o FILE" >&2; exit 2; }
sub=
while read -r id parent dev root mp rest; do [ "$mp" = / ] && sub=$root; done < /proc/self/mountinfo
[ -n "$sub" ] || { echo "grub-probe: error: cannot find a device for /" >&2; exit 1; }
{
  echo "### fake grub-mkconfig (os-prober disabled: $GRUB_DISABLE_OS_PROBER)"
  echo "menuentry 'Debian GNU/Linux' {"
  echo "  linux $sub/boot/vmlinuz-6.1.0-tiu root=UUID=x ro rootflags=subvol=\${sub#/} quiet"
  echo "}"
} > "$2"
`;

export const KVER = '6.1.0-tiu';

/**
 * Makes a makeTree() tree bootable for the tests: the mini root (a shell), a kernel in the
 * Debian layout, modules dir, fake dracut (and grub-mkconfig), /efi for an ESP, kernel options.
 */
export async function addBootFiles(tree: string, o: { grub?: boolean; tag: string }): Promise<void> {
  await makeMiniRoot(tree);
  await mkdir(join(tree, `usr/lib/modules/${KVER}`), { recursive: true });
  await writeFile(join(tree, `usr/lib/modules/${KVER}/modules.dep`), '');
  await writeFile(join(tree, `boot/vmlinuz-${KVER}`), `fake kernel ${o.tag}\n`.repeat(2000));
  await writeFile(join(tree, 'usr/bin/dracut'), FAKE_DRACUT);
  await chmod(join(tree, 'usr/bin/dracut'), 0o755);
  if (o.grub) {
    await mkdir(join(tree, 'usr/sbin'), { recursive: true });
    await writeFile(join(tree, 'usr/sbin/grub-mkconfig'), FAKE_GRUB_MKCONFIG);
    await chmod(join(tree, 'usr/sbin/grub-mkconfig'), 0o755);
  }
  await mkdir(join(tree, 'efi'), { recursive: true });
  await mkdir(join(tree, 'etc/kernel'), { recursive: true });
  await writeFile(join(tree, 'etc/kernel/cmdline'), 'console=ttyS0 quiet\n');
}

/** Like makeArchives (helpers/device.ts), with the trees made bootable by {@link addBootFiles}. */
export function makeBootArchives(sys: System, dir: string, o: { grub?: boolean } = {}): Promise<ArchiveSet> {
  return makeArchives(sys, dir, { prepare: (tree, v) => addBootFiles(tree, { grub: o.grub, tag: `v${v}` }) });
}
