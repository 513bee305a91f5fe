/** `tiu unpin N`: let cleanup delete a snapshot again. */
import type { Context } from '../context.ts';
import { setPinned } from './pin.ts';

export function run(ctx: Context, n: string, o: { root: string; json?: boolean }): Promise<number> {
  return setPinned(ctx, n, o, false);
}
