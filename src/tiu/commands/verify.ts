/** `tiu verify`: signature + every data block; exit 0 only if all holds. */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { createProgress } from '../progress.ts';

export async function run(ctx: Context, file: string, o: { keyring?: string; compatible?: string; json?: boolean }): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  await using a = await openArchive(file, { keyringPem, allowedSigners: ctx.config.allowedSigners, compatible: o.compatible });
  const progress = createProgress(ctx);
  await a.verifyData((done, total) => progress.update('verifying', total ? done / total : 1));
  progress.done();
  if (o.json) {
    const m = a.manifest;
    ctx.out(JSON.stringify({ file, ok: true, compatible: m.compatible, version: m.version, signer: { subject: a.signature.subject, commonName: a.signature.commonName ?? null }, dataBlocks: m.verity.dataSize / 4096 }, null, 2));
    return 0;
  }
  ctx.out(`${file}: OK (${a.manifest.compatible} ${a.manifest.version}, signed by ${a.signature.commonName ?? a.signature.subject}, ${a.manifest.verity.dataSize / 4096} data blocks verified)`);
  return 0;
}
