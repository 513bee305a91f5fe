/** `tiu channel` (show) and `tiu channel set NAME`: the channel is chosen explicitly and recorded. */
import type { Context } from '../context.ts';
import { TiuError } from '../../core/errors.ts';
import { effectiveChannel, readChannelState, writeChannelState } from '../repo/device.ts';

export async function run(ctx: Context, action: string | undefined, name: string | undefined, o: { root: string; json?: boolean }): Promise<number> {
  if (action !== undefined) {
    if (action !== 'set' || name === undefined) throw new TiuError('USAGE', 'usage: tiu channel [set NAME]');
    const s = await writeChannelState(o.root, ctx.config, name);
    if (o.json) ctx.out(JSON.stringify(s));
    else ctx.out(`channel ${s.channel} from ${s.since}${s.previous ? ` (was ${s.previous})` : ''}; run tiu check to see what it offers`);
    return 0;
  }
  const { channel, from } = await effectiveChannel(o.root, ctx.config, undefined);
  const s = await readChannelState(o.root, ctx.config);
  if (o.json) ctx.out(JSON.stringify({ channel, from, since: s?.since ?? null, previous: s?.previous ?? null }));
  else ctx.out(`${channel} (${from === 'device state' ? `set ${s!.since}${s!.previous ? `, was ${s!.previous}` : ''}` : 'from the configuration'})`);
  return 0;
}
