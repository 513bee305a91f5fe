/**
 * Bounded concurrency for independent filesystem operations. Awaiting thousands of small calls
 * (lutimes, lstat) one after another leaves the libuv thread pool idle between them: an update
 * that only re-dates 2,800 files spent most of its apply step waiting.
 */

/**
 * Runs `fn` on every item with at most `limit` calls in flight; resolves when all are done.
 * The first rejection stops handing out new items and is rethrown once the calls in flight
 * have settled (nothing is left running behind the caller's back). `slot` (0 … limit-1) names
 * the one of the `limit` lanes a call runs in, for per-lane scratch files.
 */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T, index: number, slot: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  let error: unknown;
  const worker = async (slot: number): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i, slot);
      } catch (e) {
        if (!failed) {
          failed = true;
          error = e;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, (_, slot) => worker(slot)));
  if (failed) throw error;
}

/**
 * Runs independent tasks at once and waits for all of them, also when one fails (so nothing is
 * still running when the caller cleans up); then returns their results, or throws the first
 * failure in argument order.
 */
export async function allSettledOrThrow<T extends readonly unknown[]>(...tasks: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(tasks);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
