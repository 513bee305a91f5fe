/**
 * `tiu check [--json]`: what `tiu update` would install and why, changing nothing on the system
 * (only the repository metadata cache is refreshed, as TUF requires). With --source: what the
 * archive is against what is installed.
 */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { compareVersions } from '../archive/version-order.ts';
import { checkRepository, installedImage } from '../repo/device.ts';
import { checkJson, checkLines } from '../repo/report.ts';

export async function run(ctx: Context, o: { root: string; repository?: string; channel?: string; source?: string; keyring?: string; allowDowngrade?: boolean; json?: boolean }): Promise<number> {
  if (o.source) {
    if (/^[a-z]+:\/\//.test(o.source)) throw new TiuError('USAGE', 'tiu check --source takes a local archive file', { hint: 'download it first, or use a repository' });
    // Archive code (pkijs, verity) only for --source: a repository check does not load it.
    const [{ openArchive }, { loadKeyring }] = await Promise.all([import('../archive/open.ts'), import('../archive/trust.ts')]);
    const installed = await installedImage(ctx, o.root);
    await using a = await openArchive(o.source, { keyringPem: await loadKeyring(ctx.config, o.keyring), allowedSigners: ctx.config.allowedSigners });
    const m = a.manifest;
    const cmp = installed ? compareVersions(m.version, installed.version) : 1;
    const compatible = (ctx.config.compatible ?? installed?.compatible) === undefined || (ctx.config.compatible ?? installed?.compatible) === m.compatible;
    const verdict = !compatible ? 'incompatible' : cmp > 0 ? 'newer' : cmp === 0 ? (installed?.index === m.index.sha256 ? 'same' : 'same-version') : 'older';
    if (o.json) ctx.out(JSON.stringify({ source: 'archive', archive: o.source, compatible: m.compatible, version: m.version, index: m.index.sha256, installed: installed ? { version: installed.version, index: installed.index, snapshot: installed.snapshot } : null, verdict }, null, 2));
    else ctx.out(`${o.source}: ${m.compatible} ${m.version}; installed ${installed ? installed.version : 'nothing'}: ${{ newer: 'an update', same: 'the installed image', 'same-version': 'same version, different content', older: 'older (a downgrade)', incompatible: 'not for this device' }[verdict]}`);
    return 0;
  }
  const c = await checkRepository(ctx, o);
  if (o.json) ctx.out(JSON.stringify(checkJson(c), null, 2));
  else for (const l of checkLines(c)) ctx.out(l);
  return 0;
}
