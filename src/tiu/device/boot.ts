/**
 * Boot preparation for a new snapshot (initrd, bootloader entries). The backends (grub2,
 * systemd-boot) belong to the boot-integration work; until they land, `none` is the only
 * backend and `auto` resolves to it, with a warning when the snapshot carries kernels.
 */
import { readdir } from 'node:fs/promises';
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import type { Manifest } from '../archive/manifest.ts';

export interface PrepareBootOptions {
  root: string;
  snapshotDir: string;
  num: number;
  manifest: Manifest;
  bootloader?: string;
}

/** Kernel versions present in a snapshot (usr/lib/modules/<version>/vmlinuz). */
export async function kernelsIn(snapshotDir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for (const v of await readdir(`${snapshotDir}/usr/lib/modules`)) {
      try {
        await readdir(`${snapshotDir}/usr/lib/modules/${v}/kernel`);
        out.push(v);
      } catch {}
    }
  } catch {}
  return out.sort();
}

export async function prepareBoot(sys: System, o: PrepareBootOptions): Promise<void> {
  const backend = o.bootloader ?? 'auto';
  if (backend === 'none') return;
  if (backend === 'auto') {
    const kernels = await kernelsIn(o.snapshotDir);
    if (kernels.length) sys.log.warn(`snapshot ${o.num} has kernels (${kernels.join(', ')}) but no bootloader backend is configured; set [device] bootloader in tiu.conf`);
    return;
  }
  throw new TiuError('BOOT_FAILED', `bootloader backend '${backend}' is not available in this tiu version`, { hint: "set [device] bootloader = none in tiu.conf, or update tiu" });
}
