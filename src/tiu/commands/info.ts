/**
 * `tiu info`: show an archive's manifest and whether signature and verity tree verify; for a
 * delta (`.tiud`), its base and target, both signatures, and what it carries.
 */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { TiuError, toTiuError } from '../../core/errors.ts';
import type { Manifest } from '../archive/manifest.ts';
import { isDeltaFile, openDelta } from '../delta/open.ts';
import { summarizeDelta } from '../delta/format.ts';

type Row = [string, string];

/** The rows that describe the image a manifest names (an archive's, or a delta's target). */
function imageRows(m: Manifest): Row[] {
  return [
    ['Compatible', m.compatible],
    ['Version', m.version],
    ...(m.buildId ? ([['Build', m.buildId]] as Row[]) : []),
    ['Created', m.created],
    ['Architecture', m.arch],
    ['OS', m.os.PRETTY_NAME ?? ([m.os.NAME, m.os.VERSION].filter(Boolean).join(' ') || '-')],
  ];
}

function printRows(ctx: Context, rows: Row[]): void {
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) ctx.out(`${k.padEnd(w)}  ${v}`);
}

export async function run(ctx: Context, file: string, o: { keyring?: string; json?: boolean; verifyData?: boolean }): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  if (await isDeltaFile(file)) return runDelta(ctx, file, keyringPem, o);
  await using a = await openArchive(file, { keyringPem, allowedSigners: ctx.config.allowedSigners });
  let data: { ok: boolean; error?: string; code?: string } | undefined;
  if (o.verifyData !== false) {
    try {
      await a.verifyData();
      data = { ok: true };
    } catch (e) {
      const err = toTiuError(e);
      data = { ok: false, error: err.message, code: err.code };
    }
  }
  const m = a.manifest;
  if (o.json) {
    ctx.out(JSON.stringify({ file, size: a.size, signature: { ok: true, signer: a.signature, chain: a.chain }, verity: data ?? { ok: null }, manifest: m }, null, 2));
  } else {
    const rows: Row[] = [
      ['File', `${file} (${a.size} bytes)`],
      ...imageRows(m),
      ['Image', `squashfs ${m.image.size} bytes, ${m.image.compression}, block ${m.image.blockSize}`],
      ['Content', `${m.content.files} files, ${m.content.bytes} bytes, ${m.index.entries} index entries`],
      ['Verity', `sha256 root ${m.verity.rootHash}`],
      ['Salt', m.verity.salt],
      ['Hash tree', `offset ${m.verity.hashOffset}, ${m.verity.hashSize} bytes`],
      ['Initrd', m.initrd === 'shipped' ? 'shipped in the image' : 'regenerated on the device'],
      ['Signer', `${a.signature.subject} (valid until ${a.signature.notAfter.toISOString().slice(0, 10)})`],
      ['Chain', a.chain.join(' <- ')],
      ['Signature', 'verified'],
      ['Data blocks', data === undefined ? 'not checked (--no-verify-data)' : data.ok ? 'verified against the verity tree' : `FAILED: ${data.error}`],
    ];
    printRows(ctx, rows);
  }
  if (data && !data.ok) throw new TiuError((data.code as never) ?? 'ARCHIVE_VERITY', data.error ?? 'verity check failed', { hint: 'the archive is corrupt; download or build it again' });
  return 0;
}

/**
 * A delta: opening it checks its signature, the whole body against the signed digest, and the
 * new image's own signature inside (all a device checks before applying; what a patch rebuilds is
 * checked against the new signed index on the device, which holds the base it needs).
 */
async function runDelta(ctx: Context, file: string, keyringPem: string, o: { json?: boolean }): Promise<number> {
  await using d = await openDelta(file, { keyringPem, allowedSigners: ctx.config.allowedSigners });
  const env = d.envelope;
  const size = d.size;
  const sum = summarizeDelta(d.header);
  if (o.json) {
    ctx.out(
      JSON.stringify(
        {
          file,
          type: 'delta',
          size,
          formatVersion: env.formatVersion,
          signature: { ok: true, signer: d.signer, chain: d.chain },
          body: { ok: true, size: env.body.size, sha256: env.body.sha256 },
          base: env.base,
          target: { ...env.target, signature: { ok: true, signer: d.targetSigner, chain: d.targetChain } },
          generator: env.generator,
          carries: sum,
          manifest: d.manifest,
        },
        null,
        2,
      ),
    );
    return 0;
  }
  const methods = Object.entries(sum.methods).map(([k, n]) => `${n} ${k}`).join(', ');
  printRows(ctx, [
    ['File', `${file} (${size} bytes)`],
    ['Type', `delta (format ${env.formatVersion}, made by ${env.generator || 'unknown'})`],
    ['Base', `${env.base.version} (index ${env.base.indexSha256.slice(0, 16)}…)`],
    ['Target', `${env.target.version} (index ${env.target.indexSha256.slice(0, 16)}…)`],
    ...imageRows(d.manifest).map(([k, v]): Row => [k === 'Version' ? 'Target version' : k, v]).filter(([k]) => k !== 'Target version'),
    ['Content', `${d.manifest.content.files} files, ${d.manifest.content.bytes} bytes, ${d.manifest.index.entries} index entries`],
    ['Carries', sum.contents ? `${sum.contents} new contents (${methods}); the rest from the base` : 'no new content (the base holds all of it)'],
    ['Parts', `contents ${sum.contentBytes} bytes, bsdiff streams ${sum.bsdiffBytes} bytes, index ${sum.index.bytes} bytes (${sum.index.method})`],
    ['Signer', `${d.signer.subject} (valid until ${d.signer.notAfter.toISOString().slice(0, 10)})`],
    ['Chain', d.chain.join(' <- ')],
    ['Signature', 'verified'],
    ['Body', `${env.body.size} bytes, verified against the signed digest`],
    ['Target signer', `${d.targetSigner.subject} (manifest signature verified)`],
  ]);
  return 0;
}
