/**
 * Kernels and initrds inside a snapshot. A kernel is `usr/lib/modules/<kver>/vmlinuz`
 * (kernel-install / openSUSE layout) or `boot/vmlinuz-<kver>` (Debian layout); its initrd is
 * wherever dracut or the distribution put it. The version comparison and the choice of files are
 * pure; the directory reads are a thin layer.
 */
import { resolveInTree } from '../../core/treepath.ts';
import { lstat, readdir, readFile, stat } from 'node:fs/promises';

export interface KernelFile {
  kver: string;
  /** Path of the kernel image relative to the snapshot root (no leading slash). */
  path: string;
}

/**
 * Kernel versions tiu accepts. They end up in argv, file names and GRUB scripts, so anything
 * beyond this conservative set (quotes, spaces, `$`, `/`) is ignored rather than escaped.
 */
export const KVER_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;

/**
 * Compares version strings the way `strverscmp`/systemd's `strverscmp_improved` order kernels:
 * runs of digits numerically, everything else by character; a `~` sorts before anything (even
 * the end), so `6.1~rc1` < `6.1`. Returns <0, 0 or >0.
 */
export function compareVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const ca = a[i];
    const cb = b[j];
    if (ca === '~' || cb === '~') {
      if (ca !== cb) return ca === '~' ? -1 : 1;
      i++;
      j++;
      continue;
    }
    if (ca === undefined) return -1;
    if (cb === undefined) return 1;
    const da = /\d/.test(ca);
    const db = /\d/.test(cb);
    if (da && db) {
      let ei = i;
      while (ei < a.length && /\d/.test(a[ei]!)) ei++;
      let ej = j;
      while (ej < b.length && /\d/.test(b[ej]!)) ej++;
      const na = a.slice(i, ei).replace(/^0+(?=\d)/, '');
      const nb = b.slice(j, ej).replace(/^0+(?=\d)/, '');
      if (na.length !== nb.length) return na.length - nb.length;
      if (na !== nb) return na < nb ? -1 : 1;
      i = ei;
      j = ej;
      continue;
    }
    // Digits sort after letters and punctuation (a later numeric component means newer).
    if (da !== db) return da ? 1 : -1;
    if (ca !== cb) return ca < cb ? -1 : 1;
    i++;
    j++;
  }
  return 0;
}

/**
 * The kernels of a snapshot from two directory listings (pure): names of `usr/lib/modules/*`
 * that contain a `vmlinuz`, and the names in `boot/`. One entry per version, the modules
 * location preferred; sorted oldest first. Names outside {@link KVER_RE} are ignored.
 */
export function pickKernels(modulesWithVmlinuz: readonly string[], bootNames: readonly string[]): KernelFile[] {
  const byVersion = new Map<string, KernelFile>();
  for (const name of bootNames) {
    const m = /^vmlinuz-(.+)$/.exec(name);
    if (m && KVER_RE.test(m[1]!)) byVersion.set(m[1]!, { kver: m[1]!, path: `boot/${name}` });
  }
  for (const kver of modulesWithVmlinuz) {
    if (KVER_RE.test(kver)) byVersion.set(kver, { kver, path: `usr/lib/modules/${kver}/vmlinuz` });
  }
  return [...byVersion.values()].sort((a, b) => compareVersions(a.kver, b.kver));
}

/** The newest kernel of a list (by version), or undefined. */
export function newestKernel(kernels: readonly KernelFile[]): KernelFile | undefined {
  return [...kernels].sort((a, b) => compareVersions(a.kver, b.kver)).at(-1);
}

/** Where distributions and dracut put the initrd of kernel `kver`, relative to the snapshot root. */
export function initrdCandidates(kver: string): string[] {
  return [
    `boot/initrd.img-${kver}`, // Debian (initramfs-tools, dracut's Debian config)
    `boot/initrd-${kver}`, // openSUSE
    `boot/initramfs-${kver}.img`, // dracut's default, Fedora
    `boot/initrd-${kver}.img`,
    `usr/lib/modules/${kver}/initrd`, // kernel-install layout
  ];
}

async function isFile(path: string): Promise<{ mtimeMs: number } | undefined> {
  try {
    // Callers pass paths from resolveInside, which has already followed every symlink inside
    // the snapshot, so this never follows one out of it.
    const st = await stat(path);
    return st.isFile() ? { mtimeMs: st.mtimeMs } : undefined;
  } catch {
    return undefined;
  }
}

async function isDirNoFollow(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** Resolves `rel` inside the snapshot `dir` as a chroot would (see {@link resolveInTree}). */
export const resolveInside = resolveInTree;

/** The kernels in snapshot directory `dir` (see {@link pickKernels}). Reads directories only. */
export async function findKernels(dir: string): Promise<KernelFile[]> {
  const modules: string[] = [];
  const modulesDir = await resolveInside(dir, 'usr/lib/modules');
  if (modulesDir) {
    for (const v of await readdir(modulesDir).catch(() => [] as string[])) {
      if (KVER_RE.test(v) && (await resolveInside(dir, `usr/lib/modules/${v}/vmlinuz`).then((p) => (p ? isFile(p) : undefined)))) modules.push(v);
    }
  }
  const boot: string[] = [];
  const bootDir = await resolveInside(dir, 'boot');
  if (bootDir && (await isDirNoFollow(bootDir))) {
    for (const n of await readdir(bootDir).catch(() => [] as string[])) {
      if (n.startsWith('vmlinuz-') && (await resolveInside(dir, `boot/${n}`).then((p) => (p ? isFile(p) : undefined)))) boot.push(n);
    }
  }
  return pickKernels(modules, boot);
}

/**
 * The initrd of kernel `kver` in snapshot `dir`, relative to the snapshot root: of the
 * {@link initrdCandidates} that exist, the most recently written one (dracut --force just
 * wrote it; older names may be stale copies from the image). Undefined if there is none.
 */
export async function findInitrd(dir: string, kver: string): Promise<string | undefined> {
  let best: { rel: string; mtimeMs: number } | undefined;
  for (const rel of initrdCandidates(kver)) {
    const p = await resolveInside(dir, rel);
    const st = p ? await isFile(p) : undefined;
    if (st && (!best || st.mtimeMs > best.mtimeMs)) best = { rel, mtimeMs: st.mtimeMs };
  }
  return best?.rel;
}

/**
 * The kernel command line extras of a snapshot: `etc/kernel/cmdline`, else
 * `usr/lib/kernel/cmdline` (the kernel-install convention), with `root=`, `rootflags=`, `ro`
 * and `rw` removed (tiu sets those). Empty when there is no such file.
 */
export async function snapshotCmdline(dir: string): Promise<string[]> {
  for (const rel of ['etc/kernel/cmdline', 'usr/lib/kernel/cmdline']) {
    const p = await resolveInside(dir, rel);
    if (!p) continue;
    const text = await readFile(p, 'utf8').catch(() => undefined);
    if (text !== undefined) return filterCmdline(text);
  }
  return [];
}

/** Splits a command line file into words without the options tiu owns. Pure. */
export function filterCmdline(text: string): string[] {
  return text
    .split(/\s+/)
    .filter(Boolean)
    .filter((w) => !/^(root|rootflags|rootfstype)=/.test(w) && w !== 'ro' && w !== 'rw');
}

/** PRETTY_NAME (or NAME) of a snapshot's os-release, for menu titles; undefined if none. */
export async function snapshotOsName(dir: string): Promise<string | undefined> {
  for (const rel of ['etc/os-release', 'usr/lib/os-release']) {
    const p = await resolveInside(dir, rel);
    if (!p) continue;
    const text = await readFile(p, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const fields = parseOsRelease(text);
    const name = fields.PRETTY_NAME ?? fields.NAME;
    if (name) return name;
  }
  return undefined;
}

/** Parses os-release(5) text (pure): KEY=value lines, shell-style quotes removed. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2]!;
    if (/^".*"$/.test(v)) v = v.slice(1, -1).replace(/\\(["\\$`])/g, '$1');
    else if (/^'.*'$/.test(v)) v = v.slice(1, -1);
    out[m[1]!] = v;
  }
  return out;
}
