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
