/** `tiu delta`: two signed archives -> a signed delta; see src/tiu/delta/create.ts. */
import type { Context } from '../context.ts';
import { readPem } from '../archive/create.ts';
import { loadKeyring } from '../archive/trust.ts';
import { createDelta } from '../delta/create.ts';
import { createProgress } from '../progress.ts';

export interface DeltaCommandOptions {
  output: string;
  key: string;
  cert: string;
  chain?: string;
  keyring?: string;
  json?: boolean;
}

export async function run(ctx: Context, oldArchive: string, newArchive: string, o: DeltaCommandOptions): Promise<number> {
  const progress = await createProgress(ctx, !o.json);
  let r;
  try {
    r = await createDelta(ctx.sys, {
      old: oldArchive,
      new: newArchive,
      output: o.output,
      keyPem: await readPem(o.key, 'signing key'),
      certPem: await readPem(o.cert, 'signing certificate'),
      chainPem: o.chain ? await readPem(o.chain, 'certificate chain') : undefined,
      keyringPem: await loadKeyring(ctx.config, o.keyring),
      allowedSigners: ctx.config.allowedSigners,
      onProgress: progress.update,
    });
  } finally {
    progress.done();
  }
  if (o.json) ctx.out(JSON.stringify(r, null, 2));
  else ctx.out(`created ${r.output}: ${r.base.version} -> ${r.target.version}, ${r.size} bytes; ${r.contents} new contents (${r.patched} as patches, ${r.contentBytes} bytes), ${r.reused} taken from the base, index ${r.indexBytes} bytes`);
  return 0;
}
