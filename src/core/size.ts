/**
 * Sizes on the command line and in tiu.conf: a whole or decimal number with an optional binary
 * unit suffix (k = KiB, M = MiB, G = GiB, case-insensitive, an optional trailing "B" or "iB"),
 * as curl's --limit-rate and --max-filesize take them. Pure; the one place sizes are parsed.
 */
import { TiuError } from './errors.ts';

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * Parses `text` ("500k", "2M", "1.5G", "4096") into a positive whole number of bytes.
 * Throws USAGE naming `what` (e.g. "--limit-rate") for anything else.
 */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$/i.exec(text.trim());
  const n = m ? Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new TiuError('USAGE', `${what} must be a size like 500k or 2M, got '${text}'`, { hint: 'a number of bytes with an optional k, M or G suffix' });
  }
  return n;
}
