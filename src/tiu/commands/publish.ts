/** `tiu publish <archive> --repo DIR --channel C [--phased N]`: add a verified archive to a repository. */
import type { Context } from '../context.ts';
import { openArchive } from '../archive/open.ts';
import { loadKeyring } from '../archive/trust.ts';
import { publish } from '../repo/ops.ts';
import { keysDirOf, percent } from '../repo/cli-util.ts';

export async function run(ctx: Context, archive: string, o: { repo: string; keys?: string; channel: string; phased?: string; keyring?: string; json?: boolean }): Promise<number> {
  const keyringPem = await loadKeyring(ctx.config, o.keyring);
  // The manifest is read only from an archive whose signature verifies: a repository never lists
  // what a device would reject anyway.
  let manifest;
  {
    await using a = await openArchive(archive, { keyringPem, allowedSigners: ctx.config.allowedSigners });
    manifest = a.manifest;
  }
  const img = await publish({ dir: o.repo, keysDir: keysDirOf(o.repo, o.keys), archive, manifest, channel: o.channel, phased: percent(o.phased, 100) });
  if (o.json) ctx.out(JSON.stringify(img));
  else ctx.out(`published ${img.compatible} ${img.version} (build ${img.build}) on ${o.channel}${img.channels[o.channel]!.phased < 100 ? ` phased ${img.channels[o.channel]!.phased}%` : ''}: ${img.path}`);
  return 0;
}
