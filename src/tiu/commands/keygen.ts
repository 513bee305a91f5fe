/** `tiu keygen`: a development CA and signing certificate, so a new user needs no openssl. */
import { mkdir } from 'node:fs/promises';
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { generateDevKeys } from '../sign/keygen.ts';

export async function run(ctx: Context, o: { out: string; cn: string; days: string; intermediate?: boolean }): Promise<number> {
  const days = Number(o.days);
  if (!Number.isInteger(days) || days <= 0) throw new TiuError('USAGE', `--days must be a positive whole number, got '${o.days}'`);
  await mkdir(o.out, { recursive: true, mode: 0o700 });
  const r = await generateDevKeys({ outDir: o.out, commonName: o.cn, days, intermediate: !!o.intermediate });
  ctx.out(`wrote development keys to ${o.out}:`);
  for (const [what, path] of Object.entries(r)) if (typeof path === 'string') ctx.out(`  ${what.padEnd(16)} ${path}`);
  ctx.out(`sign with:  tiu create <rootfs> -o os.tiu --key ${r.signingKey} --cert ${r.signingCert}${'chain' in r && r.chain ? ` --chain ${r.chain}` : ''} --compatible <device> --version <v>`);
  ctx.out(`trust with: install -D -m 0644 ${r.keyring} /etc/tiu/keyring.pem   (or pass --keyring)`);
  ctx.log.warn('these keys are for development only: keep production signing keys offline or in an HSM');
  return 0;
}
