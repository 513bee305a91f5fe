/** `tiu repo init <dir>`: keys (in a separate directory) and the first signed metadata. */
import type { Context } from '../context.ts';
import { init } from '../repo/ops.ts';
import { keysDirOf } from '../repo/cli-util.ts';

export async function run(ctx: Context, dir: string, o: { keys?: string; json?: boolean }): Promise<number> {
  const keys = keysDirOf(dir, o.keys);
  const repo = await init(dir, keys);
  if (o.json) ctx.out(JSON.stringify({ repository: dir, keys, root: repo.root.signed.version, rootKeyids: repo.root.signed.roles.root?.keyIDs ?? [] }));
  else {
    ctx.out(`repository ${dir}: root, targets, snapshot and timestamp metadata version 1`);
    ctx.out(`keys in ${keys}: move root.key.pem and targets.key.pem offline; snapshot/timestamp keys stay for tiu repo refresh`);
    ctx.out(`ship ${dir}/metadata/1.root.json in the image as /usr/lib/tiu/repository-root.json`);
  }
  return 0;
}
