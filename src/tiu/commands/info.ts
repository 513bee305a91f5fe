/** `tiu info`: show an archive's manifest and whether signature and verity tree verify. */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { TiuError, toTiuError } from '../../core/errors.ts';

export async function run(ctx: Context, file: string, o: { keyring?: string; json?: boolean; verifyData?: boolean }): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
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
    const rows: [string, string][] = [
      ['File', `${file} (${a.size} bytes)`],
      ['Compatible', m.compatible],
      ['Version', m.version],
      ...(m.buildId ? ([['Build', m.buildId]] as [string, string][]) : []),
      ['Created', m.created],
      ['Architecture', m.arch],
      ['OS', m.os.PRETTY_NAME ?? ([m.os.NAME, m.os.VERSION].filter(Boolean).join(' ') || '-')],
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
    const w = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) ctx.out(`${k.padEnd(w)}  ${v}`);
  }
  if (data && !data.ok) throw new TiuError((data.code as never) ?? 'ARCHIVE_VERITY', data.error ?? 'verity check failed', { hint: 'the archive is corrupt; download or build it again' });
  return 0;
}
