/** `tiu install`: factory flash onto an empty btrfs; see src/tiu/device/install.ts. */
import type { Context } from '../context.ts';
import { install } from '../device/install.ts';
import { loadKeyring } from '../archive/trust.ts';

export async function run(ctx: Context, archive: string, o: { root: string; keyring?: string; compatible?: string }): Promise<number> {
  const r = await install(ctx.sys, {
    archive,
    top: o.root,
    keyringPem: await loadKeyring(ctx.config, o.keyring),
    allowedSigners: ctx.config.allowedSigners,
    compatible: o.compatible ?? ctx.config.compatible,
    bootloader: ctx.config.bootloader,
  });
  ctx.out(`installed ${r.version} as snapshot ${r.number} (${r.filesWritten} files, ${r.bytesWritten} bytes) on btrfs ${r.uuid}; it is the default subvolume`);
  return 0;
}
