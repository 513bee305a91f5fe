/**
 * Typed mksquashfs pseudo-file definitions and their rendering into a pseudo file (`-pf`).
 * Pure: validates and returns bytes, no I/O.
 *
 * What squashfs-tools 4.5.1 supports (mksquashfs -help, man mksquashfs, and tried here):
 *   d/D dir · m/M modify an existing source path · b/B c/C devices · i/I fifo or socket ·
 *   s/S symlink · l hard link / reference to a host file (content AND mode/owner/mtime come
 *   from that host file) · f/F file from the stdout of a shell command. We build no shell
 *   strings from data: the one command tiu writes is the constant `exec cat`, for a file whose
 *   content mksquashfs reads from its own stdin (`stdin` below). mksquashfs runs that command
 *   when its reader thread reaches the file, not at start (tried on 4.5.1: files before it are
 *   read and compressed while `cat` waits), so the content can be produced while the image is
 *   being built. There is no `-pd`, and no `x` (xattr) type before 4.6.
 * The upper-case forms carry an explicit mtime; the lower-case ones stamp the *current* time,
 * which would make images unreproducible, so every created entry is rendered upper-case.
 *
 * Name syntax (pseudo.c): a name is read up to unquoted white space; `"` toggles quoting and `\`
 * takes the next byte literally; a line whose first character is `#` is a comment; a `\` at the
 * end of a line continues it. So we quote every name, escape `\` and `"`, and refuse names with a
 * newline or NUL, which cannot be written at all. The `l` host path is read the same way; a
 * symlink target is NOT: it is the raw rest of the line.
 *
 * mksquashfs *ignores with only a warning* (exit 0) a definition for a path that already exists,
 * a second definition for one path, and a modify of a missing path. We reject duplicates here;
 * the runner also checks the source tree and treats such warnings as errors.
 */
import { TiuError } from '../core/errors.ts';

interface Owned {
  /** Path inside the image as a byte string (latin1, one char per byte), relative to the root. */
  path: string;
  /** Permission bits including setuid/setgid/sticky (0..0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch; defaults to the image's mkfs time. */
  mtime?: number;
}

/** A regular file whose content, mode, owner and mtime are those of a host file (`l`). */
export interface PseudoHostFile {
  type: 'file';
  path: string;
  /** Absolute host path of an existing regular file (a JS string, UTF-8 on disk). */
  source: string;
}
/**
 * A regular file whose content is what mksquashfs reads from its stdin (`F … exec cat`): the
 * caller writes it there, possibly while the build runs. At most one per image.
 */
export interface PseudoStdinFile extends Owned {
  type: 'stdin';
}
export interface PseudoDir extends Owned {
  type: 'dir';
}
export interface PseudoDevice extends Owned {
  type: 'chr' | 'blk';
  major: number;
  minor: number;
}
export interface PseudoFifo extends Owned {
  type: 'fifo' | 'socket';
}
export interface PseudoSymlink {
  type: 'symlink';
  path: string;
  /** Link target as a byte string. */
  target: string;
  uid: number;
  gid: number;
  mtime?: number;
}
/** Changes mode/owner (and mtime when given) of a path that exists in the source tree (`m`/`M`). */
export interface PseudoModify extends Owned {
  type: 'modify';
}

export type PseudoDefinition = PseudoHostFile | PseudoStdinFile | PseudoDir | PseudoDevice | PseudoFifo | PseudoSymlink | PseudoModify;

function invalid(message: string): TiuError {
  return new TiuError('INPUT_INVALID', `invalid pseudo definition: ${message}`);
}

function checkUint(value: number, max: number, what: string, path: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) throw invalid(`${what} ${value} out of range 0..${max} for '${path}'`);
}

/**
 * Normalizes an image path: strips a leading `/`, refuses empty, `.`/`..` components,
 * the root itself, newline and NUL (which the pseudo-file syntax cannot express).
 */
export function normalizePseudoPath(path: string): string {
  const p = path.replace(/^\/+/, '');
  if (p === '' || p === '.') throw invalid('the root directory cannot be a pseudo definition');
  if (/[\n\0]/.test(p)) throw invalid(`path ${JSON.stringify(p)} contains a newline or NUL, which pseudo files cannot express`);
  for (const c of p.split('/')) {
    if (c === '' || c === '.' || c === '..') throw invalid(`path ${JSON.stringify(p)} has an empty, '.' or '..' component`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[^\x00-\xff]/.test(p)) throw invalid(`path ${JSON.stringify(p)} is not a byte string (chars above U+00FF)`);
  return p;
}

/** Quotes one pseudo-file token: `"…"` with `\` and `"` escaped. */
export function quotePseudoToken(bytes: Buffer): Buffer {
  const out: number[] = [0x22];
  for (const b of bytes) {
    if (b === 0x22 || b === 0x5c) out.push(0x5c);
    out.push(b);
  }
  out.push(0x22);
  return Buffer.from(out);
}

const oct = (mode: number) => mode.toString(8).padStart(4, '0');

/** Parent paths that a definition needs: every proper prefix of the normalized path. */
export function parentOf(path: string): string | undefined {
  const i = path.lastIndexOf('/');
  return i < 0 ? undefined : path.slice(0, i);
}

/**
 * Validates definitions and renders them as pseudo-file bytes, one per line.
 * `defaultTime` stamps entries without an mtime. Throws INPUT_INVALID on a bad definition
 * or two definitions for one path.
 */
export function renderPseudoFile(defs: readonly PseudoDefinition[], defaultTime: number): Buffer {
  checkUint(defaultTime, 0xffff_ffff, 'time', '(default)');
  const all = defs.map((d) => normalizePseudoPath(d.path));
  for (const def of defs) {
    // 4.5.1 turns `M` (modify with time) into a non-directory pseudo entry: a definition below it
    // is then dropped ("already exists as a non directory.. Ignoring") with exit 0. `m` is fine.
    if (def.type === 'modify' && def.mtime !== undefined) {
      const p = normalizePseudoPath(def.path);
      const child = all.find((c) => c.startsWith(p + '/'));
      if (child !== undefined) throw invalid(`cannot set the mtime of '${p}' (modify with mtime) and also define '${child}' below it (mksquashfs would drop one)`);
    }
  }
  if (defs.filter((d) => d.type === 'stdin').length > 1) throw invalid('more than one file reads stdin');
  const seen = new Set<string>();
  const lines: Buffer[] = [];
  for (const def of defs) {
    const path = normalizePseudoPath(def.path);
    if (seen.has(path)) throw invalid(`'${path}' is defined twice (mksquashfs would silently ignore one)`);
    seen.add(path);
    const name = quotePseudoToken(Buffer.from(path, 'latin1'));
    const line = (rest: Buffer | string) => lines.push(Buffer.concat([name, Buffer.from(' '), typeof rest === 'string' ? Buffer.from(rest, 'latin1') : rest, Buffer.from('\n')]));
    if (def.type === 'file') {
      if (typeof def.source !== 'string' || !def.source.startsWith('/')) throw invalid(`host file for '${path}' must be an absolute path`);
      if (/[\n\0]/.test(def.source)) throw invalid(`host file path for '${path}' contains a newline or NUL`);
      line(Buffer.concat([Buffer.from('l '), quotePseudoToken(Buffer.from(def.source, 'utf8'))]));
      continue;
    }
    const time = def.mtime ?? defaultTime;
    checkUint(time, 0xffff_ffff, 'mtime', path);
    checkUint(def.uid, 0xffff_ffff, 'uid', path);
    checkUint(def.gid, 0xffff_ffff, 'gid', path);
    const owner = `${def.uid} ${def.gid}`;
    if (def.type === 'symlink') {
      // The target is the raw rest of the line (no quoting or escapes; tried on 4.5.1): leading
      // white space is skipped and a trailing `\` joins the next line, so both are refused.
      const t = def.target;
      if (typeof t !== 'string' || t === '' || /[\n\0]/.test(t) || /[^\x00-\xff]/.test(t) || /^\s/.test(t) || t.endsWith('\\')) {
        throw invalid(`symlink target ${JSON.stringify(t)} for '${path}' cannot be expressed (empty, newline/NUL, leading white space or trailing backslash)`);
      }
      line(`S ${time} 0777 ${owner} ${t}`);
      continue;
    }
    checkUint(def.mode, 0o7777, 'mode', path);
    const mode = oct(def.mode);
    switch (def.type) {
      case 'dir':
        line(`D ${time} ${mode} ${owner}`);
        break;
      case 'chr':
      case 'blk':
        checkUint(def.major, 0xfff, 'major', path);
        checkUint(def.minor, 0xfffff, 'minor', path);
        line(`${def.type === 'chr' ? 'C' : 'B'} ${time} ${mode} ${owner} ${def.major} ${def.minor}`);
        break;
      case 'stdin':
        line(`F ${time} ${mode} ${owner} exec cat`);
        break;
      case 'fifo':
      case 'socket':
        line(`I ${time} ${mode} ${owner} ${def.type === 'fifo' ? 'f' : 's'}`);
        break;
      case 'modify':
        // Lower-case `m` keeps the source file's mtime; `M` sets it.
        line(def.mtime === undefined ? `m ${mode} ${owner}` : `M ${def.mtime} ${mode} ${owner}`);
        break;
      default:
        throw invalid(`unknown type '${(def as { type: unknown }).type}'`);
    }
  }
  return Buffer.concat(lines);
}
