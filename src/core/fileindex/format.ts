/**
 * The index line format (see docs/index-format.md): one JSON object per line, keys in a fixed
 * order, no optional whitespace, so that serializing the same entries always gives the same bytes.
 *
 * Pure. {@link parseIndexLine} treats its input as hostile: it checks every key and type, then
 * re-serializes the entry and requires the exact same text, so a line is accepted only in its one
 * canonical form (no duplicate keys, number spellings, escapes or base64 variants slip through).
 */
import { TiuError } from '../errors.ts';
import type { EntryType, IndexEntry } from './types.ts';
import {
  TARGET_MAX, XATTR_SIZE_MAX, compareBytes, decodeCanonicalBase64, pathProblem, textForm, utf8Bytes, xattrNameProblem,
} from './text.ts';

/** The first line of every index file. */
export const INDEX_HEADER = '{"format":"tiu-index","version":1}';
export const INDEX_FORMAT = 'tiu-index';
export const INDEX_VERSION = 1;
/** Longest accepted line in bytes, newline excluded. */
export const MAX_LINE_BYTES = 1024 * 1024;
/** Most entries accepted in one index. */
export const MAX_ENTRIES = 10_000_000;

const TYPES: readonly EntryType[] = ['file', 'dir', 'symlink', 'chr', 'blk', 'fifo', 'socket'];
const UINT32_MAX = 0xffff_ffff;

/** A byte string as a JSON member: `"key":"text"` or `"keyB64":"base64"`. */
function bytesMember(key: string, bytes: string): string {
  const text = textForm(bytes);
  return text !== undefined ? `"${key}":${JSON.stringify(text)}` : `"${key}B64":"${Buffer.from(bytes, 'latin1').toString('base64')}"`;
}

/**
 * Serializes one entry as its canonical line (without the newline). Does not validate: use
 * {@link entryProblem} (or the sequence validator) first for entries that may be malformed.
 */
export function serializeEntry(e: IndexEntry): string {
  let s = `{${bytesMember('path', e.path)},"type":"${e.type}","mode":${e.mode},"uid":${e.uid},"gid":${e.gid},"mtime":${e.mtime}`;
  if (e.size !== undefined) s += `,"size":${e.size}`;
  if (e.sha256 !== undefined) s += `,"sha256":"${e.sha256}"`;
  if (e.sparse) s += `,"sparse":true`;
  if (e.hardlink !== undefined) s += `,${bytesMember('hardlink', e.hardlink)}`;
  if (e.target !== undefined) s += `,${bytesMember('target', e.target)}`;
  if (e.rdev !== undefined) s += `,"rdev":{"major":${e.rdev.major},"minor":${e.rdev.minor}}`;
  const names = Object.keys(e.xattrs ?? {}).sort(compareBytes);
  const text: string[] = [];
  const b64: string[] = [];
  for (const name of names) {
    const value = JSON.stringify(e.xattrs![name]);
    const t = textForm(name);
    if (t !== undefined) text.push(`${JSON.stringify(t)}:${value}`);
    else b64.push(`"${Buffer.from(name, 'latin1').toString('base64')}":${value}`);
  }
  if (text.length > 0) s += `,"xattrs":{${text.join(',')}}`;
  if (b64.length > 0) s += `,"xattrsB64":{${b64.join(',')}}`;
  return s + '}';
}

const isUint = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

/** What is wrong with an entry on its own (not its place in the index), or undefined. */
export function entryProblem(e: IndexEntry): string | undefined {
  const p = pathProblem(e.path);
  if (p) return p;
  if (!TYPES.includes(e.type)) return `unknown type '${String(e.type)}'`;
  if (!isUint(e.mode, 0o7777)) return 'mode must be an integer 0..07777';
  // 4294967295 is (uid_t)-1, which chown(2) reads as "leave unchanged": it could never be applied.
  if (!isUint(e.uid, UINT32_MAX - 1) || !isUint(e.gid, UINT32_MAX - 1)) return 'uid and gid must be integers 0..4294967294 (4294967295 means "unchanged" to chown)';
  if (typeof e.mtime !== 'number' || !Number.isSafeInteger(e.mtime)) return 'mtime must be an integer';
  if (e.path === '.' && e.type !== 'dir') return 'the root must be a directory';
  const isFile = e.type === 'file';
  if (isFile !== (e.size !== undefined)) return isFile ? 'file without size' : `size on a ${e.type}`;
  if (isFile !== (e.sha256 !== undefined)) return isFile ? 'file without sha256' : `sha256 on a ${e.type}`;
  if (e.size !== undefined && !isUint(e.size, Number.MAX_SAFE_INTEGER)) return 'size must be a non-negative integer';
  if (e.sha256 !== undefined && (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256))) return 'sha256 must be 64 lowercase hex digits';
  if (e.sparse !== undefined && (!isFile || e.sparse !== true)) return 'sparse must be true and only on files';
  if (e.hardlink !== undefined) {
    if (!isFile) return `hardlink on a ${e.type}`;
    const hp = typeof e.hardlink === 'string' ? pathProblem(e.hardlink) : 'not a string';
    if (hp) return `hardlink: ${hp}`;
    if (e.hardlink === '.') return 'hardlink to the root';
  }
  if ((e.type === 'symlink') !== (e.target !== undefined)) return e.type === 'symlink' ? 'symlink without target' : `target on a ${e.type}`;
  if (e.target !== undefined) {
    if (typeof e.target !== 'string' || e.target.length === 0 || e.target.length > TARGET_MAX || e.target.includes('\0')) {
      return `symlink target must be 1..${TARGET_MAX} bytes without NUL`;
    }
  }
  const isDev = e.type === 'chr' || e.type === 'blk';
  if (isDev !== (e.rdev !== undefined)) return isDev ? 'device without rdev' : `rdev on a ${e.type}`;
  if (e.rdev !== undefined && (!isUint(e.rdev.major, UINT32_MAX) || !isUint(e.rdev.minor, UINT32_MAX))) return 'rdev major/minor must be integers 0..4294967295';
  if (e.xattrs !== undefined) {
    const names = Object.keys(e.xattrs);
    if (names.length === 0) return 'empty xattrs (omit the key instead)';
    for (const name of names) {
      const np = xattrNameProblem(name);
      if (np) return np;
      const v = e.xattrs[name];
      const buf = typeof v === 'string' ? decodeCanonicalBase64(v) : undefined;
      if (!buf) return `xattr ${JSON.stringify(name)}: value is not canonical base64`;
      if (buf.length > XATTR_SIZE_MAX) return `xattr ${JSON.stringify(name)}: value longer than ${XATTR_SIZE_MAX} bytes`;
    }
  }
  return undefined;
}

const KEYS = new Set(['path', 'pathB64', 'type', 'mode', 'uid', 'gid', 'mtime', 'size', 'sha256', 'sparse', 'hardlink', 'hardlinkB64', 'target', 'targetB64', 'rdev', 'xattrs', 'xattrsB64']);

function fail(lineNo: number | undefined, msg: string): never {
  throw new TiuError('ARCHIVE_INDEX', `${lineNo === undefined ? 'index entry' : `index line ${lineNo}`}: ${msg}`, {
    hint: 'the image index is corrupt or was not made by a compatible tiu; rebuild the image or use a trusted one',
  });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Reads a byte string stored as `key` (text) or `keyB64` (base64); exactly one may be present. */
function bytesField(o: Record<string, unknown>, key: string, lineNo: number | undefined): string | undefined {
  const t = o[key];
  const b = o[`${key}B64`];
  if (t !== undefined && b !== undefined) fail(lineNo, `both ${key} and ${key}B64`);
  if (t !== undefined) {
    if (typeof t !== 'string') fail(lineNo, `${key} must be a string`);
    return utf8Bytes(t);
  }
  if (b !== undefined) {
    const buf = typeof b === 'string' ? decodeCanonicalBase64(b) : undefined;
    if (!buf) fail(lineNo, `${key}B64 must be canonical base64`);
    return buf.toString('latin1');
  }
  return undefined;
}

/**
 * Whether a decoded line is over {@link MAX_LINE_BYTES} bytes of UTF-8. A UTF-16 unit is at most
 * 3 bytes, so only a line that could be too long is measured. Pure.
 */
export function lineTooLong(line: string): boolean {
  return line.length > MAX_LINE_BYTES || (line.length * 3 > MAX_LINE_BYTES && Buffer.byteLength(line) > MAX_LINE_BYTES);
}

/**
 * Parses one entry line (without newline) strictly: unknown keys, wrong types, invalid paths or
 * xattr names, and any non-canonical spelling are rejected with ARCHIVE_INDEX (mentioning
 * `lineNo` when given). Checks the entry alone; order, duplicates and hardlink targets are checked
 * by the sequence validator (see validate.ts) that {@link readIndex} applies.
 */
export function parseIndexLine(line: string, lineNo?: number, canonical = true): IndexEntry {
  if (typeof line !== 'string') fail(lineNo, 'not a string');
  if (lineTooLong(line)) fail(lineNo, `line longer than ${MAX_LINE_BYTES} bytes`);
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    fail(lineNo, 'not valid JSON');
  }
  if (!isPlainObject(o)) fail(lineNo, 'not a JSON object');
  // (for-in: no array of keys per line; a JSON.parse object has only own, enumerable keys)
  for (const k in o) if (!KEYS.has(k)) fail(lineNo, `unknown key ${JSON.stringify(k.slice(0, 40))}`);
  const path = bytesField(o, 'path', lineNo);
  if (path === undefined) fail(lineNo, 'missing path');
  const e: IndexEntry = { path, type: o.type as EntryType, mode: o.mode as number, uid: o.uid as number, gid: o.gid as number, mtime: o.mtime as number };
  if (typeof o.type !== 'string') fail(lineNo, 'type must be a string');
  if (o.size !== undefined) e.size = o.size as number;
  if (o.sha256 !== undefined) e.sha256 = o.sha256 as string;
  if (o.sparse !== undefined) e.sparse = o.sparse as boolean;
  const hardlink = bytesField(o, 'hardlink', lineNo);
  if (hardlink !== undefined) e.hardlink = hardlink;
  const target = bytesField(o, 'target', lineNo);
  if (target !== undefined) e.target = target;
  if (o.rdev !== undefined) {
    if (!isPlainObject(o.rdev) || Object.keys(o.rdev).some((k) => k !== 'major' && k !== 'minor')) fail(lineNo, 'rdev must be {"major":n,"minor":n}');
    e.rdev = { major: o.rdev.major as number, minor: o.rdev.minor as number };
  }
  if (o.xattrs !== undefined || o.xattrsB64 !== undefined) {
    const x: Record<string, string> = {};
    for (const [key, b64] of [['xattrs', false], ['xattrsB64', true]] as const) {
      const m = o[key];
      if (m === undefined) continue;
      if (!isPlainObject(m)) fail(lineNo, `${key} must be an object`);
      for (const [k, v] of Object.entries(m)) {
        let name: string;
        if (b64) {
          const buf = decodeCanonicalBase64(k);
          if (!buf) fail(lineNo, 'xattrsB64 names must be canonical base64');
          name = buf.toString('latin1');
        } else {
          name = utf8Bytes(k);
        }
        if (Object.hasOwn(x, name)) fail(lineNo, 'duplicate xattr name');
        if (typeof v !== 'string') fail(lineNo, 'xattr values must be base64 strings');
        x[name] = v;
      }
    }
    e.xattrs = x;
  }
  const problem = entryProblem(e);
  if (problem) fail(lineNo, `${problem} (${JSON.stringify(line.slice(0, 80))})`);
  if (canonical && serializeEntry(e) !== line) fail(lineNo, 'entry is not in canonical form (key order, spelling, escapes or text/base64 choice)');
  return e;
}

/** Checks the header line; ARCHIVE_INDEX if it is not a tiu index of a supported version. */
export function parseIndexHeader(line: string): void {
  if (line === INDEX_HEADER) return;
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    /* reported below */
  }
  if (isPlainObject(o) && o.format === INDEX_FORMAT && typeof o.version === 'number' && o.version !== INDEX_VERSION) {
    throw new TiuError('ARCHIVE_INDEX', `index line 1: unsupported index version ${o.version} (this tiu reads version ${INDEX_VERSION})`, {
      hint: 'update tiu to a version that supports this image',
    });
  }
  fail(1, `not a tiu index header (expected ${INDEX_HEADER})`);
}
