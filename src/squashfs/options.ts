/**
 * mksquashfs options: validation and argv building. Pure (no I/O), so every flag decision is
 * unit-tested; the runner in mksquashfs.ts only adds the temp pseudo-file path.
 */
import { TiuError } from '../core/errors.ts';
import type { PseudoDefinition } from './pseudo.ts';
import type { SquashfsCompression } from './superblock.ts';
import { atLeast, type SquashfsToolsVersion } from './version.ts';

export interface MksquashfsOptions {
  compression: SquashfsCompression;
  /** Compressor level: gzip 1..9, lzo 1..9, zstd 1..22. xz, lz4 and lzma have none in 4.5.1. */
  level?: number;
  /** Data block size: a power of two, 4096..1048576 (default 131072). */
  blockSize?: number;
  /** Compressor threads (default: all CPUs). */
  processors?: number;
  /** Filesystem creation time in the superblock, seconds (default: now). Always passed explicitly. */
  mkfsTime?: number;
  /**
   * Sets EVERY inode's mtime. Normally not used: tiu keeps file mtimes (they are data).
   */
  allTime?: number;
  /** Wildcard patterns relative to the source root (`var/*`, `... *.pyc`), passed as `-wildcards -e`. */
  excludes?: string[];
  /** Host path of a mksquashfs sort file (`-sort`). */
  sortFile?: string;
  /** Store extended attributes (default true). POSIX ACLs are dropped by mksquashfs whatever this says. */
  xattrs?: boolean;
  /** Extra entries / attribute changes, written to a temp pseudo file passed with `-pf`. */
  pseudo?: PseudoDefinition[];
  /**
   * What mksquashfs's stdin carries: the content of the `stdin` pseudo file, required with one
   * (and refused without). It may still be written while the build runs; mksquashfs waits for
   * its end when it reaches that file.
   */
  stdin?: import('node:stream').Readable;
  /** Called with a non-decreasing fraction 0..1 (see progress.ts for how sparse 4.5.1 is). */
  progress?: (fraction: number) => void;
  /** Abort signal: the child is killed and the partial output removed. */
  signal?: AbortSignal;
  /** Called once mksquashfs has been started. */
  onStart?: () => void;
}

const LEVELS: Partial<Record<SquashfsCompression, [number, number]>> = {
  gzip: [1, 9],
  lzo: [1, 9],
  zstd: [1, 22],
};

const COMPRESSIONS: readonly SquashfsCompression[] = ['gzip', 'xz', 'zstd', 'lz4', 'lzo', 'lzma'];

function invalid(message: string, hint?: string): TiuError {
  return new TiuError('INPUT_INVALID', message, hint ? { hint } : {});
}

function checkTime(value: number | undefined, what: string): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw invalid(`${what} ${value} is not a whole number of seconds in 0..4294967295 (squashfs stores unsigned 32-bit times)`);
  }
}

/** Validates options; throws INPUT_INVALID with the offending value. Pure. */
export function validateMksquashfsOptions(o: MksquashfsOptions): void {
  if (!COMPRESSIONS.includes(o.compression)) throw invalid(`unknown compression '${String(o.compression)}'`, `use one of ${COMPRESSIONS.join(', ')}`);
  if (o.level !== undefined) {
    const range = LEVELS[o.compression];
    if (!range) throw invalid(`compression ${o.compression} has no level option`, 'omit the level');
    if (!Number.isInteger(o.level) || o.level < range[0] || o.level > range[1]) {
      throw invalid(`${o.compression} level ${o.level} out of range ${range[0]}..${range[1]}`);
    }
  }
  if (o.blockSize !== undefined) {
    const b = o.blockSize;
    if (!Number.isInteger(b) || b < 4096 || b > 1024 * 1024 || (b & (b - 1)) !== 0) {
      throw invalid(`block size ${b} is not a power of two between 4096 and 1048576`);
    }
  }
  if (o.processors !== undefined && (!Number.isInteger(o.processors) || o.processors < 1 || o.processors > 4096)) {
    throw invalid(`processors ${o.processors} must be a positive integer`);
  }
  checkTime(o.mkfsTime, 'mkfs time');
  checkTime(o.allTime, 'all-time');
  for (const e of o.excludes ?? []) {
    if (typeof e !== 'string' || e === '' || /[\n\0]/.test(e)) throw invalid(`bad exclude pattern ${JSON.stringify(e)}`);
    if (e.startsWith('/')) throw invalid(`exclude pattern '${e}' must be relative to the source root`, `write '${e.replace(/^\/+/, '')}'`);
  }
}

export interface ArgvInputs {
  source: string;
  output: string;
  mkfsTime: number;
  /** Path of the rendered pseudo file, when there are definitions. */
  pseudoFile?: string;
}

/**
 * The mksquashfs argv (without the program). Version-dependent: 4.6+ reports progress with
 * `-percentage`; 4.5.1 with its bar (`-progress`). `-e` comes last: it takes the rest of argv.
 */
export function buildMksquashfsArgs(o: MksquashfsOptions, v: SquashfsToolsVersion, inp: ArgvInputs): string[] {
  validateMksquashfsOptions(o);
  checkTime(inp.mkfsTime, 'mkfs time');
  const a = [inp.source, inp.output, '-noappend', '-no-recovery', '-exit-on-error', '-reproducible'];
  a.push('-comp', o.compression);
  if (o.level !== undefined) a.push('-Xcompression-level', String(o.level));
  if (o.blockSize !== undefined) a.push('-b', String(o.blockSize));
  if (o.processors !== undefined) a.push('-processors', String(o.processors));
  a.push('-mkfs-time', String(inp.mkfsTime));
  if (o.allTime !== undefined) a.push('-all-time', String(o.allTime));
  a.push(o.xattrs === false ? '-no-xattrs' : '-xattrs');
  if (o.sortFile !== undefined) a.push('-sort', o.sortFile);
  if (inp.pseudoFile !== undefined) a.push('-pf', inp.pseudoFile);
  // 4.6 `-percentage` is not combined with -quiet (untested here whether -quiet would silence it);
  // the summary it may print is ignored by the progress parser (only bare integers count).
  if (o.progress) a.push(...(atLeast(v, '4.6') ? ['-percentage'] : ['-quiet', '-progress']));
  else a.push('-quiet', '-no-progress');
  if (o.excludes?.length) a.push('-wildcards', '-e', ...o.excludes);
  return a;
}
