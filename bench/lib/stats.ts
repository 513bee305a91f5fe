/** Medians, ratios and number formatting for the benchmark. Pure. */

/** One measured run of one procedure (a sequence of commands). */
export interface Sample {
  /** Sum of the steps' wall times, measured around each spawn (ms resolution). */
  wallS: number;
  /** user + system CPU of all processes of all steps. */
  cpuS: number;
  /** Largest single process of all steps (see timev.ts). */
  maxRssKiB: number;
  /** Sum of write_bytes of all processes (GNU time "File system outputs" x 512). */
  procWriteBytes: number;
  /** Bytes written to the device's loop block device (its /sys/block stat), after a sync. */
  devWriteBytes?: number;
  /** Growth of the filesystem's used bytes (statfs, like df) after `btrfs filesystem sync`. */
  growthBytes?: number;
  /** "Exclusive" column of `btrfs filesystem du -s --raw` of what the run created. */
  exclusiveBytes?: number;
  /** 1-minute load average when the run started (this machine may be shared). */
  load1: number;
}

export type Medians = Partial<Record<keyof Sample, number>>;

/** Median; the mean of the two middle values for an even count; NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Median of each field over the runs that have it. */
export function medians(runs: readonly Sample[]): Medians {
  const out: Medians = {};
  const keys = new Set(runs.flatMap((r) => Object.keys(r))) as Set<keyof Sample>;
  for (const k of keys) {
    const vals = runs.map((r) => r[k]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    if (vals.length) out[k] = median(vals);
  }
  return out;
}

/** a / b, or undefined when either is missing or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

export function fmtS(s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '–';
  return s >= 10 ? `${s.toFixed(1)} s` : `${s.toFixed(2)} s`;
}

/** Bytes in the largest fitting binary unit, e.g. "36.2 MiB". Negative values keep their sign. */
export function fmtBytes(b: number | undefined): string {
  if (b === undefined || !Number.isFinite(b)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = Math.abs(b);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${b < 0 ? '-' : ''}${u === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/**
 * A ratio with two decimals; more (up to four) where fewer would print the goal it is judged
 * against although it is not the goal (8.538 s / 8.094 s = 1.0548 is "1.055×" against ≤ 1.05×, not "1.05×").
 */
export function fmtRatio(r: number | undefined, goal?: number): string {
  if (r === undefined) return '–';
  let d = 2;
  // (more decimals, up to 4, while the printed value still equals the goal's)
  while (goal !== undefined && r !== goal && d < 4 && Number(r.toFixed(d)) === goal) d++;
  return `${r.toFixed(d)}×`;
}
