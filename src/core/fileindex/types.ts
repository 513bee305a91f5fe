/**
 * The per-file index: one entry per path of an image, stored inside the image
 * (so dm-verity protects it) at {@link INDEX_PATH}, and its sha256 is in the signed manifest.
 *
 * Paths are *byte strings*: the raw bytes of the file name decoded as latin1, one char per byte,
 * so names that are not UTF-8 survive unchanged. Use {@link pathBytes} to get a Buffer for fs calls.
 * Paths are relative to the image root, without leading slash; the root itself is `.`.
 * Entries are in *tree order* ({@link comparePaths}): a directory comes before its children,
 * siblings sorted by bytes.
 */

export type EntryType = 'file' | 'dir' | 'symlink' | 'chr' | 'blk' | 'fifo' | 'socket';

export interface IndexEntry {
  /** Relative byte-string path, `.` for the root. */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time in whole seconds (squashfs precision). */
  mtime: number;
  /** Regular files: size in bytes. */
  size?: number;
  /** Regular files: sha256 of the content, lowercase hex. */
  sha256?: string;
  /** Regular files with holes in the source (allocated < size). */
  sparse?: boolean;
  /** Regular files: for the 2nd..nth member of a hardlink group, the path of the first member. */
  hardlink?: string;
  /** Symlinks: the target as a byte string. */
  target?: string;
  /** chr/blk: device numbers. */
  rdev?: { major: number; minor: number };
  /** Extended attributes including security.* and system.posix_acl_*: name -> base64 value. */
  xattrs?: Record<string, string>;
}

/** Where the index lives inside the image (and so in every snapshot made from it). */
export const INDEX_PATH = 'usr/lib/tiu/image/index.jsonl';
/** Where the manifest of the image a snapshot was made from is recorded inside the snapshot. */
export const MANIFEST_COPY_PATH = 'usr/lib/tiu/image/manifest.json';

export function pathBytes(p: string): Buffer {
  return Buffer.from(p, 'latin1');
}

/** Byte string from a Buffer file name. */
export function bytesToPath(b: Buffer): string {
  return b.toString('latin1');
}

/** Human-readable form of a byte-string path (invalid UTF-8 shown with U+FFFD). */
export function displayPath(p: string): string {
  return Buffer.from(p, 'latin1').toString('utf8');
}

/** Tree order: compares component by component, bytes within a component. `.` is first. */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '.') return -1;
  if (b === '.') return 1;
  // Without splitting (this runs inside sorts of whole indexes): at the first differing char, a
  // '/' means that side's component ended first, i.e. it is a prefix of the other's component.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1;
    if (y === 0x2f) return 1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}
