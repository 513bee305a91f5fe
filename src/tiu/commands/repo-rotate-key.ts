/** `tiu repo rotate-key <role>`: new key, new root version signed by the old root key. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { rotateKey } from '../repo/ops.ts';
import { ROLES, type Role } from '../repo/keys.ts';
import { keysDirOf } from '../repo/cli-util.ts';

export async function run(ctx: Context, role: string, o: { repo: string; keys?: string; json?: boolean }): Promise<number> {
  if (!(ROLES as readonly string[]).includes(role)) throw new TiuError('USAGE', `'${role}' is not a role`, { hint: `one of ${ROLES.join(', ')}` });
  const r = await rotateKey({ dir: o.repo, keysDir: keysDirOf(o.repo, o.keys), role: role as Role });
  if (o.json) ctx.out(JSON.stringify({ role, ...r }));
  else ctx.out(`${role} key rotated: root version ${r.rootVersion} trusts key ${r.keyID.slice(0, 16)}; clients follow it from their trusted root`);
  return 0;
}
