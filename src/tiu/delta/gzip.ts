/**
 * The gzip-aware delta method (`gzip-patch`, docs/delta-format.md): a `.gz` file is carried as a
 * patch of its uncompressed content and recompressed on the device with GNU gzip, whose output
 * for the same input and options is stable (Debian compresses man pages and changelogs with
 * `gzip -9n`; other files are often gzip's default level 6). Node's zlib decompresses, but its deflate does not reproduce gzip's bytes.
 *
 * The original header (name, mtime, OS byte) is carried as is; gzip's own 10-byte header is
 * replaced by it. `tiu delta` uses the method only for files this reproduces byte for byte.
 */
import type { System } from '../../core/system.ts';

/** How both sides run gzip: at the file's level, no name/mtime (the header is carried separately), to stdout. */
function gzipArgs(level: number): string[] {
  return [`-${level}`, '-n', '-c'];
}

/**
 * The levels to try for a gzip file, likeliest first: its header's XFL byte says 9 (2) or 1 (4);
 * 0 is any other level, most often gzip's default 6.
 */
export function gzipLevels(b: Buffer): number[] {
  const xfl = b[8];
  return xfl === 2 ? [9] : xfl === 4 ? [1] : [6, 5, 7, 8, 4, 3, 2];
}
/**
 * Largest uncompressed old or new content of a gzip patch: the device holds the old one (its
 * zstd dictionary), the new one and its recompression at once, so less than other patches.
 */
export const GZIP_RAW_MAX = 8 * 1024 * 1024;
/** Longest gzip header carried (a stored file name and comment included). */
export const MAX_GZIP_HEADER = 1024;

/** Length of a single-member gzip header (RFC 1952), or undefined when `b` does not start with one tiu carries. */
export function gzipHeaderLength(b: Buffer): number | undefined {
  if (b.length < 18 || b[0] !== 0x1f || b[1] !== 0x8b || b[2] !== 8) return undefined;
  const flg = b[3]!;
  if (flg & 0xe0) return undefined;
  let at = 10;
  if (flg & 4) {
    if (at + 2 > b.length) return undefined;
    at += 2 + b.readUInt16LE(at);
  }
  for (const bit of [8, 16]) {
    if (flg & bit) {
      const z = b.indexOf(0, at);
      if (z < 0) return undefined;
      at = z + 1;
    }
  }
  if (flg & 2) at += 2;
  return at <= MAX_GZIP_HEADER && at < b.length ? at : undefined;
}

/**
 * `gzip -<level>n` of `raw` behind `header`: what the device rebuilds for a `gzip-patch`, and
 * what `tiu delta` checks gives back the new file byte for byte before choosing the method.
 */
export async function regzip(run: System['run'], raw: Buffer, header: Buffer, level: number): Promise<Buffer> {
  const out = (await run('gzip', gzipArgs(level), { input: raw, binary: true })).stdoutBuffer!;
  return Buffer.concat([header, out.subarray(10)]);
}
