/** `tiu publish <archive> --repo DIR --channel C [--phased N]`: add a verified archive to a repository. */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { publish } from '../repo/ops.ts';
import { publishDeltas, DEFAULT_DELTAS } from '../repo/deltas.ts';
import { readPem } from '../archive/create.ts';
import { TiuError } from '../../core/errors.ts';
import { keysDirOf, percent } from '../repo/cli-util.ts';

export async function run(ctx: Context, archive: string, o: { repo: string; keys?: string; channel: string; phased?: string; keyring?: string; json?: boolean; deltas?: string; key?: string; cert?: string; chain?: string }): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  // The manifest is read only from an archive whose signature verifies: a repository never lists
  // what a device would reject anyway.
  let manifest;
  {
    await using a = await openArchive(archive, { keyringPem, allowedSigners: ctx.config.allowedSigners });
    manifest = a.manifest;
  }
  const count = o.deltas === undefined ? DEFAULT_DELTAS : Number(o.deltas);
  if (!Number.isInteger(count) || count < 0 || count > 16) throw new TiuError('USAGE', `--deltas must be a whole number 0-16, got ${o.deltas}`);
  if (count > 0 && (o.key === undefined) !== (o.cert === undefined)) throw new TiuError('USAGE', '--key and --cert go together (they sign the deltas)');
  const keysDir = keysDirOf(o.repo, o.keys);
  const phased = percent(o.phased, 100);
  const img = await publish({ dir: o.repo, keysDir, archive, manifest, channel: o.channel, phased });
  // Deltas from the last N versions on this channel (they are signed like archives: key and cert).
  const deltas = count > 0 && o.key && o.cert
    ? await publishDeltas(ctx.sys, {
      dir: o.repo, keysDir, archive, manifest, channel: o.channel, phased, count, keyringPem, allowedSigners: ctx.config.allowedSigners,
      keyPem: await readPem(o.key, 'signing key'), certPem: await readPem(o.cert, 'signing certificate'), chainPem: o.chain ? await readPem(o.chain, 'certificate chain') : undefined,
    })
    : [];
  if (o.json) ctx.out(JSON.stringify({ ...img, deltas }));
  else {
    ctx.out(`published ${img.compatible} ${img.version} (build ${img.build}) on ${o.channel}${img.channels[o.channel]!.phased < 100 ? ` phased ${img.channels[o.channel]!.phased}%` : ''}: ${img.path}`);
    for (const d of deltas) ctx.out(`published a delta to ${d.version} (${d.length} bytes): ${d.path}`);
    if (count > 0 && !o.key) ctx.log.info('no deltas made: pass --key and --cert (the archive signing key) to make them');
  }
  return 0;
}
