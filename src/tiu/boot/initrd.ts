/**
 * Initrd regeneration inside a new snapshot, before it is sealed: for every kernel in it,
 * `dracut --force --kver <kver>` chrooted into the snapshot (chroot.ts). Skipped when the image
 * ships its own initrd (manifest `initrd: 'shipped'`) or when the snapshot has no dracut.
 */
import { lstat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { System } from '../../core/system.ts';
import { TiuError, withContext } from '../../core/errors.ts';
import { findInitrd, findKernels, resolveInside } from './kernels.ts';
import { runInSnapshot } from './chroot.ts';

export interface InitrdResult {
  status: 'regenerated' | 'shipped' | 'no-dracut' | 'no-kernel';
  /** Per kernel: the initrd found afterwards, relative to the snapshot root. */
  kernels: { kver: string; initrd: string | undefined }[];
}

/**
 * Whether `tool` exists in the snapshot's standard binary directories. Symlinked directories
 * (`/sbin` → `usr/sbin`) are skipped: their usr/ target is checked directly, and an absolute
 * symlink must not be followed out of the snapshot.
 */
export async function hasTool(snapshotDir: string, tool: string): Promise<boolean> {
  for (const d of ['usr/sbin', 'usr/bin', 'sbin', 'bin']) {
    const dirStat = await lstat(join(snapshotDir, d)).catch(() => undefined);
    if (!dirStat?.isDirectory()) continue;
    if (await lstat(join(snapshotDir, d, tool)).then(() => true, () => false)) return true;
  }
  return false;
}

/**
 * dracut's argv for one kernel (pure). With `output` (absolute, inside the snapshot) dracut
 * overwrites that file: the initrd the image already has for this kernel keeps its name, so
 * the distribution's grub-mkconfig (which takes the first of several names) cannot pick a stale
 * one beside a fresh one. Without, dracut's configuration names it.
 */
export function dracutArgv(kver: string, output?: string): string[] {
  return ['dracut', '--force', '--kver', kver, ...(output ? [output] : [])];
}

/**
 * Regenerates the initrd of every kernel in `snapshotDir` (writable, not yet sealed). Throws
 * BOOT_FAILED when dracut fails or leaves no initrd behind: a snapshot that cannot boot must not
 * become the default.
 */
export async function regenerateInitrds(sys: System, o: { snapshotDir: string; initrd: 'regenerate' | 'shipped'; timeoutMs?: number }): Promise<InitrdResult> {
  const kernels = await findKernels(o.snapshotDir);
  const found = async () => Promise.all(kernels.map(async (k) => ({ kver: k.kver, initrd: await findInitrd(o.snapshotDir, k.kver) })));
  if (o.initrd === 'shipped') {
    sys.log.debug('initrd: the image ships its own initrd; not regenerating');
    return { status: 'shipped', kernels: await found() };
  }
  if (kernels.length === 0) {
    sys.log.debug('initrd: no kernel in the snapshot');
    return { status: 'no-kernel', kernels: [] };
  }
  if (!(await hasTool(o.snapshotDir, 'dracut'))) {
    sys.log.debug(`initrd: no dracut in the snapshot; kernels ${kernels.map((k) => k.kver).join(', ')} keep the initrd the image has`);
    return { status: 'no-dracut', kernels: await found() };
  }
  for (const k of kernels) {
    const existing = await findInitrd(o.snapshotDir, k.kver);
    const real = existing ? await resolveInside(o.snapshotDir, existing) : undefined;
    const output = real ? `/${relative(o.snapshotDir, real)}` : undefined;
    sys.log.info(`generating the initrd for kernel ${k.kver} (dracut${output ? ` -> ${output}` : ''})`);
    try {
      await runInSnapshot(sys, o.snapshotDir, dracutArgv(k.kver, output), { timeoutMs: o.timeoutMs ?? 30 * 60_000 });
    } catch (e) {
      throw new TiuError('BOOT_FAILED', `dracut failed for kernel ${k.kver}: ${(withContext(e, 'dracut') as Error).message}`, {
        hint: 'rerun with --debug to see dracut\'s output; the new snapshot was discarded and the default is unchanged',
        cause: e,
      });
    }
  }
  const result = await found();
  const missing = result.filter((r) => !r.initrd);
  if (missing.length) {
    throw new TiuError('BOOT_FAILED', `dracut ran but no initrd was found for kernel ${missing.map((m) => m.kver).join(', ')}`, {
      hint: 'check the image\'s dracut configuration (the output file name); tiu looks for /boot/initrd.img-<kver>, /boot/initrd-<kver>, /boot/initramfs-<kver>.img and /usr/lib/modules/<kver>/initrd',
    });
  }
  return { status: 'regenerated', kernels: result };
}
