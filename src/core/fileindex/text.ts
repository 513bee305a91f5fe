/**
 * Byte strings in the JSON index: which names can be written as readable JSON text and which
 * must be base64, and the checks every path and xattr name must pass. Pure.
 */

/** Longest file name component Linux allows (NAME_MAX). */
export const NAME_MAX = 255;
/** Longest symlink target (PATH_MAX without the NUL). */
export const TARGET_MAX = 4095;
/** Longest xattr name and value the Linux VFS allows (XATTR_NAME_MAX, XATTR_SIZE_MAX). */
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65536;

/**
 * The readable form of a byte string, or undefined when it must be written as base64: the bytes
 * must be valid UTF-8 and contain no control character (C0, DEL, C1), so every index line stays
 * one line of printable text and the choice between the two forms is a function of the bytes.
 */
export function textForm(bytes: string): string | undefined {
  if (/^[\x20-\x7e]*$/.test(bytes)) return bytes;
  const buf = Buffer.from(bytes, 'latin1');
  const text = buf.toString('utf8');
  // Node replaces invalid sequences with U+FFFD; a lossless round trip proves the bytes were valid.
  if (!Buffer.from(text, 'utf8').equals(buf)) return undefined;
  if (/[\x00-\x1f\x7f-\x9f]/.test(text)) return undefined;
  return text;
}

/** Byte string (latin1) of the UTF-8 encoding of a JS string. */
export function utf8Bytes(text: string): string {
  // ASCII is its own UTF-8 (most paths of an index): no round trip through a Buffer.
  return ASCII.test(text) ? text : Buffer.from(text, 'utf8').toString('latin1');
}
const ASCII = /^[\x00-\x7f]*$/;

/** The only base64 form accepted: standard alphabet, padded, and re-encoding gives the same text. */
export function decodeCanonicalBase64(b64: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) return undefined;
  const buf = Buffer.from(b64, 'base64');
  return buf.toString('base64') === b64 ? buf : undefined;
}

/**
 * Why a relative byte-string path is not acceptable, or undefined if it is. Accepted: `.` (the
 * root) or `/`-separated non-empty components, none `.` or `..`, no NUL, each at most NAME_MAX bytes.
 */
export function pathProblem(p: string): string | undefined {
  if (p === '.') return undefined;
  if (p.length === 0) return 'empty path';
  if (p.includes('\0')) return 'path contains a NUL byte';
  if (p.startsWith('/')) return 'path is absolute';
  // Component by component without splitting (this runs for every entry of every index read).
  for (let start = 0; start <= p.length; ) {
    let end = p.indexOf('/', start);
    if (end < 0) end = p.length;
    const n = end - start;
    if (n === 0) return 'path has an empty component (leading, trailing or double /)';
    if (p.charCodeAt(start) === 0x2e && (n === 1 || (n === 2 && p.charCodeAt(start + 1) === 0x2e))) return `path has a '${p.slice(start, end)}' component`;
    if (n > NAME_MAX) return `path component longer than ${NAME_MAX} bytes`;
    start = end + 1;
  }
  return undefined;
}

/** Linux xattr namespaces; a name is `<namespace>.<rest>` with a non-empty rest. */
const XATTR_NAME = /^(?:security|system|trusted|user)\.[^\0]+$/s;

/** Why an xattr name (byte string) is not acceptable, or undefined if it is. */
export function xattrNameProblem(name: string): string | undefined {
  if (name.length > XATTR_NAME_MAX) return `xattr name longer than ${XATTR_NAME_MAX} bytes`;
  if (!XATTR_NAME.test(name)) return 'xattr name is not <security|system|trusted|user>.<name>';
  return undefined;
}

/** Byte order for names and paths (byte strings compare like their bytes). */
export function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
