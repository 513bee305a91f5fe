/** `tiu create`: see src/tiu/archive/create.ts. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { createArchive, readPem } from '../archive/create.ts';
import { createProgress } from '../progress.ts';

export interface CreateCommandOptions {
  output: string;
  key: string;
  cert: string;
  chain?: string;
  compatible: string;
  version: string;
  buildId?: string;
  compression?: string;
  level?: string;
  blockSize?: string;
  exclude?: string[];
  shippedInitrd?: boolean;
  tmpdir?: string;
  progress?: boolean;
}

function positiveInt(v: string | undefined, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new TiuError('USAGE', `${what} must be a positive whole number, got '${v}'`);
  return n;
}

export async function run(ctx: Context, rootfs: string, o: CreateCommandOptions): Promise<number> {
  const epochText = process.env.SOURCE_DATE_EPOCH;
  let sourceDateEpoch: number | undefined;
  if (epochText !== undefined && epochText !== '') {
    sourceDateEpoch = Number(epochText);
    if (!Number.isInteger(sourceDateEpoch) || sourceDateEpoch < 0) throw new TiuError('USAGE', `SOURCE_DATE_EPOCH must be whole seconds since 1970, got '${epochText}'`);
  }
  const progress = await createProgress(ctx, o.progress !== false);
  const result = await createArchive(ctx.sys, {
    source: rootfs,
    output: o.output,
    keyPem: await readPem(o.key, 'signing key'),
    certPem: await readPem(o.cert, 'signing certificate'),
    chainPem: o.chain ? await readPem(o.chain, 'certificate chain') : undefined,
    compatible: o.compatible,
    version: o.version,
    buildId: o.buildId,
    compression: o.compression ?? ctx.config.compression,
    level: positiveInt(o.level, '--level') ?? ctx.config.compressionLevel,
    blockSize: positiveInt(o.blockSize, '--block-size') ?? ctx.config.blockSize,
    exclude: (o.exclude ?? ctx.config.exclude).map((p) => '/' + p.replace(/^\/+|\/+$/g, '')),
    shippedInitrd: o.shippedInitrd,
    tmpdir: o.tmpdir,
    sourceDateEpoch,
    progress: progress.update,
  });
  progress.done();
  const m = result.manifest;
  const left = Object.entries(result.excludedCounts).filter(([, n]) => n > 0);
  if (left.length) ctx.log.info(`left out: ${left.map(([p, n]) => `${p} (${n} entries)`).join(', ')}`);
  ctx.out(`created ${o.output}: ${m.compatible} ${m.version}, ${result.entries} entries, ${m.content.files} files (${m.content.bytes} bytes), archive ${result.size} bytes`);
  ctx.out(`verity root hash ${m.verity.rootHash}`);
  return 0;
}
