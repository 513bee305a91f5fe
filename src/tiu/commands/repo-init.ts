/** `tiu repo init <dir>`: keys (in a separate directory) and the first signed metadata. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { init } from '../repo/ops.ts';
import { keysDirOf } from '../repo/cli-util.ts';

const whole = (text: string | undefined, what: string): number => {
  if (text === undefined) return 1;
  if (!/^\d{1,2}$/.test(text)) throw new TiuError('USAGE', `${what} must be a whole number, got '${text}'`);
  return Number(text);
};

export async function run(ctx: Context, dir: string, o: { keys?: string; rootKeys?: string; threshold?: string; json?: boolean }): Promise<number> {
  const keys = keysDirOf(dir, o.keys);
  const repo = await init(dir, keys, new Date(), { rootKeys: whole(o.rootKeys, '--root-keys'), threshold: whole(o.threshold, '--threshold') });
  const role = repo.root.signed.roles.root!;
  if (o.json) ctx.out(JSON.stringify({ repository: dir, keys, root: repo.root.signed.version, rootKeyids: role.keyIDs, rootThreshold: role.threshold }));
  else {
    ctx.out(`repository ${dir}: root, targets, snapshot and timestamp metadata version 1`);
    if (role.keyIDs.length > 1) ctx.out(`root: ${role.threshold} of ${role.keyIDs.length} keys must sign every new root version (root.key.pem, root-2.key.pem, …): give them to different holders`);
    ctx.out(`keys in ${keys}: move the root key(s) and targets.key.pem offline; snapshot/timestamp keys stay for tiu repo refresh`);
    ctx.out(`ship ${dir}/metadata/1.root.json in the image as /usr/lib/tiu/repository-root.json`);
  }
  return 0;
}
