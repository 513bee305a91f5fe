/**
 * Pure parser of `unsquashfs -lln` output (ls -l style, numeric ids).
 *
 * unsquashfs prints names raw: spaces, non-UTF-8 bytes and even newlines are written as they are
 * (4.5.1 has no escaping option), and symlinks as `name -> target`. To parse that unambiguously the
 * runner passes a random marker as the destination prefix (`-d <marker>`), so every entry starts
 * at a line beginning with `<attributes> <marker>` and a newline inside a name cannot forge an
 * entry without guessing the marker. An entry's name runs up to the byte before the next entry's
 * line, less the one newline unsquashfs appends. A symlink's target is the last `size` bytes
 * (size = target length), so ` -> ` inside a name or target is no problem either.
 *
 * Times: 4.5.1 prints `YYYY-MM-DD HH:MM` (minute precision, local time: the runner sets TZ=UTC);
 * 4.6 with `-full-precision` adds `:SS`.
 */
import { TiuError } from '../core/errors.ts';
import type { EntryType } from '../core/fileindex/types.ts';

export interface SquashfsListEntry {
  /** Byte-string path (latin1) relative to the image root; the root is `.`. */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  /** Files: bytes; symlinks: target length; directories: squashfs directory size; others 0. */
  size: number;
  /** Seconds since the epoch, truncated to `mtimePrecision`. */
  mtime: number;
  /** 60 when the tool prints only minutes (4.5.1), 1 with seconds (4.6 `-full-precision`). */
  mtimePrecision: 1 | 60;
  /** Symlinks: the target as a byte string. */
  target?: string;
  /** chr/blk: device numbers. */
  rdev?: { major: number; minor: number };
}

const TYPES: Record<string, EntryType> = { '-': 'file', d: 'dir', l: 'symlink', c: 'chr', b: 'blk', p: 'fifo', s: 'socket' };

function listingError(message: string): TiuError {
  return new TiuError('TOOL_FAILED', `cannot parse unsquashfs listing: ${message}`, {
    hint: 'unexpected unsquashfs output format; check the squashfs-tools version',
  });
}

/** Parses `rwsr-xr-x` (the 9 permission chars of ls -l) into mode bits. Throws on malformed input. */
export function parsePermissions(perm: string): number {
  if (perm.length !== 9) throw listingError(`bad permissions '${perm}'`);
  let mode = 0;
  const bit = (i: number, ch: string, value: number) => {
    if (perm[i] === ch) mode |= value;
    else if (perm[i] !== '-') throw listingError(`bad permissions '${perm}'`);
  };
  const special = (i: number, set: string, unset: string, special: number, exec: number) => {
    const c = perm[i];
    if (c === 'x') mode |= exec;
    else if (c === set) mode |= exec | special;
    else if (c === unset) mode |= special;
    else if (c !== '-') throw listingError(`bad permissions '${perm}'`);
  };
  bit(0, 'r', 0o400);
  bit(1, 'w', 0o200);
  special(2, 's', 'S', 0o4000, 0o100);
  bit(3, 'r', 0o040);
  bit(4, 'w', 0o020);
  special(5, 's', 'S', 0o2000, 0o010);
  bit(6, 'r', 0o004);
  bit(7, 'w', 0o002);
  special(8, 't', 'T', 0o1000, 0o001);
  return mode;
}

/**
 * unsquashfs prints a device as `(int)rdev >> 8, rdev & 0xff` of the on-disk (Linux "new")
 * encoding, so for minor > 255 or major > 127 the printed pair is not major,minor
 * (tried: 259:300 prints `4355, 44`; 4095:1048575 prints `-1,255`). Undo that here.
 */
export function decodeListedDevice(hi: number, lo: number): { major: number; minor: number } {
  const raw = ((hi << 8) | (lo & 0xff)) >>> 0;
  return { major: (raw >>> 8) & 0xfff, minor: (raw & 0xff) | ((raw >>> 12) & 0xfff00) };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

interface Header {
  start: number;
  nameStart: number;
  entry: Omit<SquashfsListEntry, 'path' | 'target'>;
  isRoot: boolean;
}

/**
 * Parses the stdout of `unsquashfs -lln -d <marker> image` (as raw bytes) into entries in the
 * order printed. `marker` must be the exact `-d` argument (no `/`, no newline). Pure.
 */
export function parseUnsquashfsListing(out: Buffer, marker: string): SquashfsListEntry[] {
  if (!marker || /[/\n]/.test(marker)) throw new TiuError('INTERNAL', `bad listing marker '${marker}'`);
  const re = new RegExp(
    `^([-dlcbps])([-rwxsStT]{9}) (\\d+)/(\\d+) +(\\d+|-?\\d+, *\\d+) (\\d{4})-(\\d\\d)-(\\d\\d) (\\d\\d):(\\d\\d)(?::(\\d\\d))? ${escapeRegExp(marker)}(/|\\n|$)`,
  );
  const text = out.toString('latin1');
  const headers: Header[] = [];
  for (let pos = 0; pos < text.length; ) {
    const nl = text.indexOf('\n', pos);
    // Only the first ~160 chars of a line can hold the attributes and the marker.
    const m = re.exec(text.slice(pos, Math.min(text.length, pos + 160 + marker.length)));
    if (m) {
      const type = TYPES[m[1]!]!;
      let size = 0;
      let rdev: { major: number; minor: number } | undefined;
      if (m[5]!.includes(',')) {
        const [hi, lo] = m[5]!.split(',').map((s) => Number(s.trim()));
        if (type !== 'chr' && type !== 'blk') throw listingError(`device numbers on a ${type}`);
        rdev = decodeListedDevice(hi!, lo!);
      } else {
        if (type === 'chr' || type === 'blk') throw listingError('device without major/minor');
        size = Number(m[5]);
      }
      const mtime = Date.UTC(Number(m[6]), Number(m[7]) - 1, Number(m[8]), Number(m[9]), Number(m[10]), Number(m[11] ?? 0)) / 1000;
      const isRoot = m[12] !== '/';
      headers.push({
        start: pos,
        nameStart: pos + m[0].length - (m[12] === '\n' ? 1 : 0),
        isRoot,
        entry: {
          type,
          mode: parsePermissions(m[2]!),
          uid: Number(m[3]),
          gid: Number(m[4]),
          size,
          mtime,
          mtimePrecision: m[11] === undefined ? 60 : 1,
          ...(rdev ? { rdev } : {}),
        },
      });
    } else if (headers.length === 0 && pos < text.length) {
      throw listingError(`unexpected first line '${text.slice(pos, nl < 0 ? undefined : nl).slice(0, 120)}'`);
    }
    if (nl < 0) break;
    pos = nl + 1;
  }
  const entries: SquashfsListEntry[] = [];
  headers.forEach((h, i) => {
    const end = i + 1 < headers.length ? headers[i + 1]!.start : text.length;
    let raw = text.slice(h.nameStart, end);
    if (!raw.endsWith('\n')) throw listingError('entry not terminated by a newline (truncated output?)');
    raw = raw.slice(0, -1);
    if (h.isRoot) {
      if (i !== 0 || raw !== '' || h.entry.type !== 'dir') throw listingError('root entry is not the first, a directory, or has a name');
      entries.push({ path: '.', ...h.entry });
      return;
    }
    let path = raw;
    let target: string | undefined;
    if (h.entry.type === 'symlink') {
      const arrow = raw.length - h.entry.size - 4;
      if (arrow < 1 || raw.slice(arrow, arrow + 4) !== ' -> ') throw listingError(`symlink line without ' -> ' + ${h.entry.size}-byte target`);
      path = raw.slice(0, arrow);
      target = raw.slice(arrow + 4);
    }
    if (path === '' || path.split('/').some((c) => c === '' || c === '.' || c === '..')) throw listingError(`bad path ${JSON.stringify(path)}`);
    entries.push({ path, ...h.entry, ...(target !== undefined ? { target } : {}) });
  });
  if (entries.length === 0) throw listingError('no entries');
  return entries;
}
