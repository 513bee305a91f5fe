/**
 * The guest images, built once and cached under CACHE_DIR:
 *
 *   tree-<key>/rootfs        Debian bookworm from mmdebstrap (build-tree.sh, customize.sh,
 *                            packages.txt); key = hash of those three files
 *   artifacts-<key>/         keys/, the archives (v1, v2, bad-health, no-init, tampered) and the
 *                            base disks disk-bios.raw / disk-uefi.raw made WITH TIU (create,
 *                            install); key = tree key + this file + build-disk.sh + tiu's
 *                            sources (src/, bin/), so a change to tiu rebuilds them
 *
 * Each stage is built into `<name>.tmp` and renamed when complete; older generations are removed.
 * Side effects: runs mmdebstrap, tiu, mount (overlayfs), losetup, chroot as root.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile, open } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { System } from '../../src/core/system.ts';
import { CACHE_DIR, COMPATIBLE, IMAGE_DIR, NODE, REPO, RUN_DIR } from './paths.ts';
import type { BootMode } from './bootmode.ts';
import { createVm } from './qemu.ts';

export type Variant = 'bios' | 'uefi';

/** The archives the scenarios use, by file name (the same names below GUEST_ARTIFACTS). */
export const ARCHIVES = {
  v1: 'v1.tiu',
  v2: 'v2.tiu',
  badHealth: 'bad-health.tiu',
  noInit: 'no-init.tiu',
  tampered: 'tampered.tiu',
} as const;

/** What each archive's image says in /usr/share/tiu-vm/release, and its manifest version. */
export const RELEASES = { v1: '1', v2: '2', badHealth: '3-bad-health', noInit: '4-no-init' } as const;

export interface Artifacts {
  /** Directory shared with the guest (9p tag `artifacts`). */
  dir: string;
  keyring: string;
  disks: Record<Variant, string>;
  /** Squashfs image of an update repository (v2 on stable), attached as a second disk. */
  repoDisk: string;
  /** Seconds spent building (0 when everything came from the cache). */
  buildSeconds: number;
}

async function sha256Files(files: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of files.sort()) {
    h.update(`${relative(REPO, f)}\0`);
    h.update(await readFile(f));
    h.update('\0');
  }
  return h.digest('hex').slice(0, 16);
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** Cache key of the Debian tree. */
export function treeKey(): Promise<string> {
  return sha256Files(['packages.txt', 'build-tree.sh', 'customize.sh'].map((f) => `${IMAGE_DIR}/${f}`));
}

/** Cache key of the archives and disks. */
export async function artifactsKey(tree: string, bootMode: string): Promise<string> {
  const files = [
    `${IMAGE_DIR}/build-disk.sh`, join(import.meta.dirname, 'image.ts'), `${REPO}/vm/guest/install-bootloader.sh`, `${REPO}/bin/tiu.js`,
    `${REPO}/scripts/build.ts`, `${REPO}/scripts/install.sh`, `${REPO}/scripts/package.sh`, `${REPO}/docs/configuration.md`,
    ...(await walk(`${REPO}/src`)), ...(await walk(`${REPO}/systemd`)), ...(await walk(`${REPO}/packaging`)),
  ];
  // The repository disk's targets role expires after 90 days (DEFAULT_EXPIRY): a new period
  // every 45 days rebuilds the artifacts before a cached disk can expire.
  const period = Math.floor(Date.now() / (45 * 86_400_000)).toString(36);
  return `${await sha256Files(files)}${tree.slice(0, 4)}${period}-${bootMode}`;
}

async function removeOthers(prefix: string, keep: string): Promise<void> {
  for (const name of await readdir(CACHE_DIR)) {
    if (name.startsWith(prefix) && name !== keep) await rm(join(CACHE_DIR, name), { recursive: true, force: true });
  }
}

/** Builds (or reuses) the Debian tree; returns the rootfs path. */
export async function ensureTree(sys: System, log: (s: string) => void): Promise<string> {
  const key = await treeKey();
  const dir = join(CACHE_DIR, `tree-${key}`);
  if (existsSync(`${dir}/complete`)) return `${dir}/rootfs`;
  log(`building the guest tree (mmdebstrap, several minutes) into ${dir}`);
  const tmp = `${dir}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await sys.run('bash', [`${IMAGE_DIR}/build-tree.sh`, `${tmp}/rootfs`], { timeoutMs: 3_600_000 });
  await writeFile(`${tmp}/complete`, new Date().toISOString());
  await rename(tmp, dir);
  await removeOthers('tree-', `tree-${key}`);
  return `${dir}/rootfs`;
}

type Layer = (upper: string) => Promise<void>;

async function put(upper: string, path: string, content: string, mode = 0o644): Promise<void> {
  await mkdir(join(upper, path, '..'), { recursive: true });
  await writeFile(join(upper, path), content, { mode });
}

/**
 * What every variant adds to the Debian tree: tiu from its Debian package (`npm run package`:
 * /usr/bin/tiu, the bundle, its Node 24 runtime, units, man pages), trust, device config, the
 * ESP mount point.
 */
function commonLayer(sys: System, deb: string, keyring: string, release: string, mode: BootMode, kver: string, repoRoot: string): Layer {
  return async (u) => {
    // The package's files as dpkg unpacks them (the tree's dpkg database is left alone: the
    // image is read-only on the device and updated as a whole by tiu).
    await sys.run('dpkg-deb', ['-x', deb, u]);
    await put(u, 'etc/tiu/keyring.pem', await readFile(keyring, 'utf8'));
    // The update repository's first root: the trust anchor a device ships (docs/repository.md).
    await put(u, 'usr/lib/tiu/repository-root.json', await readFile(repoRoot, 'utf8'));
    await put(u, 'usr/lib/tiu/tiu.conf', `[device]\ncompatible = ${COMPATIBLE}\n`);
    await put(u, 'usr/share/tiu-vm/release', `${release}\n`);
    await mkdir(`${u}/boot/efi`, { recursive: true });
    await put(
      u,
      'etc/systemd/system/boot-efi.mount',
      '[Unit]\nDescription=EFI system partition\n[Mount]\nWhat=/dev/disk/by-partlabel/esp\nWhere=/boot/efi\nType=vfat\nOptions=umask=0077,nofail\n[Install]\nWantedBy=local-fs.target\n',
    );
    // What tiu's boot backends put on every kernel command line, and GRUB's own entries.
    await put(u, 'etc/kernel/cmdline', `${KERNEL_OPTIONS}\n`);
    await put(
      u,
      'etc/default/grub',
      `GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="${KERNEL_OPTIONS}"\nGRUB_TERMINAL=serial\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\nGRUB_DISABLE_OS_PROBER=true\n`,
    );
    if (mode === 'tiu') {
      // WORKAROUND (docs/vm.md): tiu's GRUB selector sets no timeout and no serial terminal, so
      // for a snapshot without its own grub.cfg (snapshot 1, made by `tiu install`) GRUB waits
      // at its menu forever. The image therefore ships a static /boot/grub/grub.cfg that the
      // selector sources; tiu replaces it with grub-mkconfig's output in every snapshot an
      // update makes.
      await put(u, 'boot/grub/grub.cfg', shippedGrubCfg(kver));
      // tiu's boot integration: the ESP at /boot/efi (GRUB's directory or systemd-boot's
      // entries), the package's health check and /etc sync units, enabled.
      await enable(u, 'local-fs.target.wants', 'boot-efi.mount', '../boot-efi.mount');
      await enable(u, 'multi-user.target.wants', 'tiu-health.service', '/usr/lib/systemd/system/tiu-health.service');
      await enable(u, 'boot-complete.target.requires', 'tiu-health.service', '/usr/lib/systemd/system/tiu-health.service');
      await enable(u, 'sysinit.target.wants', 'tiu-etc-sync.service', '/usr/lib/systemd/system/tiu-etc-sync.service');
    }
    // Every unit costs seconds under TCG: mask what a headless VM does not need.
    for (const unit of ['e2scrub_reap.service', 'modprobe@drm.service', 'dev-hugepages.mount', 'sys-kernel-debug.mount', 'sys-kernel-tracing.mount', 'getty@tty1.service']) {
      await mkdir(`${u}/etc/systemd/system`, { recursive: true });
      await symlink('/dev/null', `${u}/etc/systemd/system/${unit}`);
    }
  };
}

/** See the WORKAROUND in commonLayer. Uses the variables tiu's selector exports. */
function shippedGrubCfg(kver: string): string {
  return `# tiu-vm harness: shipped in the image for the snapshot tiu install makes (docs/vm.md).
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
menuentry 'tiu VM image, snapshot \${tiu_boot} (shipped grub.cfg)' {
  probe --set=tiu_uuid --fs-uuid \$root
  linux /@/.snapshots/\${tiu_boot}/snapshot/boot/vmlinuz-${kver} root=UUID=\${tiu_uuid} \${tiu_rootflags} rw ${KERNEL_OPTIONS}
  initrd /@/.snapshots/\${tiu_boot}/snapshot/boot/initrd.img-${kver}
}
`;
}

async function enable(upper: string, wants: string, name: string, target: string): Promise<void> {
  await mkdir(`${upper}/etc/systemd/system/${wants}`, { recursive: true });
  await symlink(target, `${upper}/etc/systemd/system/${wants}/${name}`);
}

/** Kernel options of the guest (besides root=…, which the boot config adds). */
export const KERNEL_OPTIONS = 'console=ttyS0,115200 panic=5 systemd.show_status=auto';

type LayerOf = (sys: System, deb: string, keyring: string, mode: BootMode, kver: string, repoRoot: string) => Layer;
const layers: Record<'v1' | 'v2' | 'badHealth' | 'noInit', LayerOf> = {
  v1: (s, d, k, m, v, r) => commonLayer(s, d, k, RELEASES.v1, m, v, r),
  v2: (s, d, k, m, v, r) => commonLayer(s, d, k, RELEASES.v2, m, v, r),
  badHealth: (s, d, k, m, v, r) => async (u) => {
    await commonLayer(s, d, k, RELEASES.badHealth, m, v, r)(u);
    await put(u, 'usr/lib/tiu/health.d/50-vm-always-fails', '#!/bin/sh\necho "tiu-vm: this image is built to fail its health check" >&2\nexit 1\n', 0o755);
  },
  noInit: (s, d, k, m, v, r) => async (u) => {
    await commonLayer(s, d, k, RELEASES.noInit, m, v, r)(u);
    // Nothing reaches userspace: the initrd's systemd switches root by re-executing
    // /usr/lib/systemd/systemd (not /sbin/init), so both become /bin/false; PID 1 exits at
    // once and the kernel panics ("Attempted to kill init").
    await mkdir(`${u}/usr/sbin`, { recursive: true });
    await symlink('/bin/false', `${u}/usr/sbin/init`);
    await mkdir(`${u}/usr/lib/systemd`, { recursive: true });
    await symlink('/bin/false', `${u}/usr/lib/systemd/systemd`);
  },
};

async function tiu(sys: System, args: string[]): Promise<void> {
  await sys.run(NODE, [`${REPO}/bin/tiu.js`, ...args], { timeoutMs: 1_800_000, env: { SOURCE_DATE_EPOCH: '1700000000' } });
}

/** Flips one byte inside the squashfs image (1 MiB in): the signature stays valid, verity must fail. */
async function tamper(src: string, dst: string, sys: System): Promise<void> {
  await sys.run('cp', ['--sparse=always', src, dst]);
  const fh = await open(dst, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 1 << 20);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, 1 << 20);
  } finally {
    await fh.close();
  }
}

/**
 * Builds (or reuses) keys, archives and both base disks. `bootMode` 'harness' makes the harness
 * write a minimal bootloader config; 'tiu' lets tiu's boot backend do it.
 */
export async function ensureArtifacts(sys: System, o: { bootMode: 'harness' | 'tiu'; log: (s: string) => void }): Promise<Artifacts> {
  const started = Date.now();
  await mkdir(CACHE_DIR, { recursive: true });
  const rootfs = await ensureTree(sys, o.log);
  const key = await artifactsKey(await treeKey(), o.bootMode);
  const dir = join(CACHE_DIR, `artifacts-${key}`);
  const result = (): Artifacts => ({
    dir,
    keyring: `${dir}/keys/keyring.pem`,
    disks: { bios: `${dir}/disk-bios.raw`, uefi: `${dir}/disk-uefi.raw` },
    repoDisk: `${dir}/${REPO_DISK}`,
    buildSeconds: (Date.now() - started) / 1000,
  });
  if (existsSync(`${dir}/complete`)) return { ...result(), buildSeconds: 0 };
  o.log(`building archives and disks with tiu into ${dir}`);
  const tmp = `${dir}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await tiu(sys, ['keygen', '-o', `${tmp}/keys`]);
  const keyring = `${tmp}/keys/keyring.pem`;
  const kver = (await readdir(`${rootfs}/usr/lib/modules`)).sort().at(-1)!;
  const versions: Record<keyof typeof layers, string> = { v1: '1', v2: '2', badHealth: '3', noInit: '4' };
  // tiu goes into the images as its Debian package, built from this checkout.
  const deb = (await sys.run('bash', [`${REPO}/scripts/package.sh`, `${tmp}/package`], { timeoutMs: 900_000 })).stdout.trim().split('\n').at(-1)!;
  // The update repository (made before the images, which ship its root as their trust anchor).
  await tiu(sys, ['repo', 'init', `${tmp}/repo`, '--keys', `${tmp}/repo.keys`]);
  for (const name of Object.keys(layers) as (keyof typeof layers)[]) {
    const ov = `${tmp}/overlay-${name}`;
    await mkdir(`${ov}/upper`, { recursive: true });
    await mkdir(`${ov}/work`);
    await mkdir(`${ov}/merged`);
    await layers[name](sys, deb, `${tmp}/keys/keyring.pem`, o.bootMode, kver, `${tmp}/repo/metadata/1.root.json`)(`${ov}/upper`);
    await sys.run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${rootfs},upperdir=${ov}/upper,workdir=${ov}/work`, `${ov}/merged`]);
    try {
      await tiu(sys, [
        'create', `${ov}/merged`, '-o', `${tmp}/${ARCHIVES[name]}`,
        '--key', `${tmp}/keys/signing.key.pem`, '--cert', `${tmp}/keys/signing.cert.pem`,
        '--compatible', COMPATIBLE, '--version', versions[name], '--level', '3', '--no-progress',
        // The image's initrd (built with the tree) is used as is: dracut under TCG takes minutes.
        '--shipped-initrd',
      ]);
    } finally {
      await sys.run('umount', [`${ov}/merged`]);
    }
    await rm(ov, { recursive: true, force: true });
  }
  await tamper(`${tmp}/${ARCHIVES.v2}`, `${tmp}/${ARCHIVES.tampered}`, sys);
  await repositoryDisk(sys, tmp, keyring);
  for (const variant of ['bios', 'uefi'] as const) {
    await sys.run('bash', [`${IMAGE_DIR}/build-disk.sh`, variant, `${tmp}/${ARCHIVES.v1}`, keyring, `${tmp}/disk-${variant}.raw`], {
      timeoutMs: 1_800_000,
      env: { TIU: `${NODE} ${REPO}/bin/tiu.js`, BOOT_MODE: o.bootMode },
    });
    if (o.bootMode === 'tiu') await installBootloader(sys, variant, `${tmp}/disk-${variant}.raw`, tmp, o.log);
  }
  await writeFile(`${tmp}/complete`, new Date().toISOString());
  await rename(tmp, dir);
  await removeOthers('artifacts-', `artifacts-${key}`);
  return result();
}

/** File name of the repository disk in the artifacts directory. */
export const REPO_DISK = 'repo.squashfs';

/**
 * The `repository` scenario's disk: v2 published on channel stable in the repository made
 * before the images (`tiu publish`, then `tiu repo refresh` with long timestamp and snapshot
 * lifetimes, as the cached disk may be used for weeks; the targets role's 90 days are covered by
 * the artifacts key's period), packed as an uncompressed squashfs (the archive inside is
 * compressed already). The guest mounts it read-only and updates from `file://` without network.
 */
async function repositoryDisk(sys: System, tmp: string, keyring: string): Promise<void> {
  const repo = `${tmp}/repo`;
  await tiu(sys, ['publish', `${tmp}/${ARCHIVES.v2}`, '--repo', repo, '--keys', `${tmp}/repo.keys`, '--channel', 'stable', '--keyring', keyring]);
  await tiu(sys, ['repo', 'refresh', '--repo', repo, '--keys', `${tmp}/repo.keys`, '--timestamp-expires', '400d', '--snapshot-expires', '400d']);
  await sys.run('mksquashfs', [repo, `${tmp}/${REPO_DISK}`, '-noappend', '-noI', '-noD', '-noF', '-noX', '-all-root', '-quiet'], { timeoutMs: 600_000 });
  // The squashfs holds everything the guest needs; the copy of v2 in the tree is not kept.
  await rm(repo, { recursive: true, force: true });
}

/**
 * The installer boot (boot mode `tiu`): this host cannot mount the ESP (no vfat in its kernel),
 * so the disk first boots with the harness's minimal config, and inside the guest GRUB is
 * installed onto the ESP (BIOS) or systemd-boot's entries are replaced (UEFI), then
 * `tiu health-check --sync-only` writes tiu's boot config; the guest powers off. Writes the
 * raw disk directly (no overlay): the result is the cached base disk.
 */
async function installBootloader(sys: System, variant: Variant, disk: string, artifactsDir: string, log: (s: string) => void): Promise<void> {
  log(`installer boot of the ${variant} disk (tiu writes the boot config inside the guest)`);
  const vm = await createVm(sys, { name: `installer-${variant}`, baseDisk: disk, direct: true, firmware: variant, workDir: `${RUN_DIR}/installer-${variant}-${process.pid}`, shares: { tiu: REPO, artifacts: artifactsDir } });
  try {
    await vm.boot({ timeoutMs: 600_000 });
    const r = await vm.run(`bash ${'/opt/tiu/vm/guest/install-bootloader.sh'} ${variant}`, { timeoutMs: 900_000, allowFailure: true });
    if (r.exitCode !== 0) throw new Error(`installing the boot loader in the guest failed (log: ${vm.saveLog(`installer-${variant}`)}):\n${r.output}`);
    await vm.powerOff();
  } catch (e) {
    vm.saveLog(`installer-${variant}`);
    throw e;
  } finally {
    await vm.kill();
    await rm(vm.o.workDir, { recursive: true, force: true });
  }
}

/** Size in bytes of a file (for the report). */
export async function sizeOf(path: string): Promise<number> {
  return (await stat(path)).size;
}
