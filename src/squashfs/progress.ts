/**
 * Pure parsing of mksquashfs progress output.
 *
 * What the tools really print on a pipe (not a tty):
 * - 4.5.1 `-progress`: the bar `\r[=====|   ] 345/690  50%`, but progressbar.c only redraws
 *   when the block count is a multiple of 100 at the moment its 250 ms timer fires, or at the end,
 *   so on a pipe one mostly sees the final `690/690 100%` (tried: 90 MB, 690 blocks, 5.8 s: one
 *   update). There is no other machine-readable progress in 4.5.1.
 * - 4.6+ `-percentage`: a line with just the integer percentage, each time it changes.
 */

/** Fraction 0..1 from one line (or `\r`-separated chunk) of mksquashfs stdout; undefined if none. */
export function parseProgressLine(line: string): number | undefined {
  const bar = /\]\s*(\d+)\/(\d+)\s+\d+%/.exec(line);
  if (bar) {
    const cur = Number(bar[1]);
    const max = Number(bar[2]);
    if (max > 0 && cur <= max) return cur / max;
    return undefined;
  }
  const pct = /^\s*(\d{1,3})\s*$/.exec(line);
  if (pct) {
    const p = Number(pct[1]);
    if (p <= 100) return p / 100;
  }
  return undefined;
}

/**
 * Wraps a user callback so it sees a non-decreasing fraction in 0..1, each value at most once.
 * (The bar can briefly go back when mksquashfs finds duplicates and decrements its count.)
 */
export function monotonicProgress(cb: (fraction: number) => void): (fraction: number) => void {
  let last = -1;
  return (f) => {
    const v = Math.min(1, Math.max(0, f));
    if (v > last) {
      last = v;
      cb(v);
    }
  };
}
