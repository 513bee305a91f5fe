/**
 * The new index sent as an edit script against the old signed index (docs/delta-format.md,
 * "The index diff"). Pure.
 *
 * Most of an index's bytes are sha256s and mtimes that a security update leaves alone, or
 * changes in a handful of patterns (a package's files all get the same new mtime). A zstd patch
 * of the serialized text pays for every changed line; a script of per-entry field changes
 * repeats the same short line (`~{"mtime":…}`), which compresses to almost nothing.
 *
 * Script: UTF-8 lines, each one of
 * - `=N`  the next N old entries, unchanged;
 * - `-N`  skip the next N old entries (removed);
 * - `~{…}` the next old entry with these fields replaced (`null` removes a field; never `path`);
 * - `+{…}` a new entry, as its canonical index line.
 * The device applies it to the old index (already checked against its signed digest), serializes
 * the result canonically and accepts it only if it hashes to the new signed index digest.
 */
import { TiuError } from '../../core/errors.ts';
import { INDEX_HEADER, MAX_ENTRIES, MAX_LINE_BYTES, parseIndexLine, serializeEntry } from '../../core/fileindex/format.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';

/** Fields a `~` line may replace (every IndexEntry field but the path). */
const FIELDS = ['type', 'mode', 'uid', 'gid', 'mtime', 'size', 'sha256', 'sparse', 'hardlink', 'target', 'rdev', 'xattrs'] as const;
type Field = (typeof FIELDS)[number];
const FIELD_SET: ReadonlySet<string> = new Set(FIELDS);

/** The edit script turning `old` into `neu` (entries matched by path, in order). */
export function diffIndex(old: readonly IndexEntry[], neu: readonly IndexEntry[]): Buffer {
  const oldAt = new Map<string, number>();
  old.forEach((e, i) => oldAt.set(e.path, i));
  const out: string[] = [];
  let same = 0;
  const flush = () => {
    if (same > 0) out.push(`=${same}`);
    same = 0;
  };
  let j = 0;
  for (const e of neu) {
    const i = oldAt.get(e.path);
    if (i === undefined || i < j) {
      flush();
      out.push('+' + serializeEntry(e));
      continue;
    }
    if (i > j) {
      flush();
      out.push(`-${i - j}`);
    }
    const o = old[i]!;
    j = i + 1;
    if (serializeEntry(o) === serializeEntry(e)) {
      same++;
      continue;
    }
    flush();
    const change: Record<string, unknown> = {};
    for (const k of FIELDS) {
      const a = JSON.stringify(o[k] ?? null);
      const b = JSON.stringify(e[k] ?? null);
      if (a !== b) change[k] = e[k] ?? null;
    }
    out.push('~' + JSON.stringify(change));
  }
  flush();
  return Buffer.from(out.join('\n') + '\n', 'utf8');
}

function corrupt(message: string): TiuError {
  return new TiuError('DELTA_CORRUPT', `the delta's index diff ${message}`, { hint: 'the delta is damaged or not for this base; use the full image' });
}

function count(s: string, line: number): number {
  if (!/^[1-9][0-9]{0,8}$/.test(s)) throw corrupt(`line ${line}: bad count`);
  return Number(s);
}

/**
 * Applies a script to the old index; returns the new index file's bytes (not yet checked: the
 * caller compares their sha256 with the signed one). Throws DELTA_CORRUPT on a malformed script.
 */
export function applyIndexDiff(old: readonly IndexEntry[], script: Buffer): Buffer {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(script);
  } catch {
    throw corrupt('is not UTF-8');
  }
  if (!text.endsWith('\n')) throw corrupt('does not end with a newline');
  const lines = text.slice(0, -1).split('\n');
  const parts: string[] = [INDEX_HEADER + '\n'];
  let j = 0;
  let n = 0;
  const take = (k: number, ln: number) => {
    if (j + k > old.length) throw corrupt(`line ${ln}: goes past the old index`);
  };
  lines.forEach((l, idx) => {
    const ln = idx + 1;
    if (l.length > MAX_LINE_BYTES) throw corrupt(`line ${ln} is too long`);
    const op = l[0];
    const rest = l.slice(1);
    if (op === '=') {
      const k = count(rest, ln);
      take(k, ln);
      for (let i = 0; i < k; i++) parts.push(serializeEntry(old[j++]!) + '\n');
      n += k;
    } else if (op === '-') {
      const k = count(rest, ln);
      take(k, ln);
      j += k;
    } else if (op === '~') {
      take(1, ln);
      let change: unknown;
      try {
        change = JSON.parse(rest);
      } catch {
        throw corrupt(`line ${ln} is not JSON`);
      }
      if (typeof change !== 'object' || change === null || Array.isArray(change)) throw corrupt(`line ${ln} is not an object`);
      const e: Record<string, unknown> = { ...old[j++]! };
      for (const [k, v] of Object.entries(change)) {
        if (!FIELD_SET.has(k)) throw corrupt(`line ${ln} changes an unknown field ${JSON.stringify(k.slice(0, 32))}`);
        if (v === null) delete e[k as Field];
        else e[k] = v;
      }
      // Values of any shape serialize to some line; the digest check rejects every wrong one,
      // and the caller parses the result strictly.
      try {
        parts.push(serializeEntry(e as unknown as IndexEntry) + '\n');
      } catch {
        throw corrupt(`line ${ln} sets a field to a value of the wrong kind`);
      }
      n++;
    } else if (op === '+') {
      // Only a canonical line parses, so the line itself is its serialization.
      try {
        parseIndexLine(rest, ln);
      } catch (err) {
        throw corrupt(`line ${ln}: ${(err as Error).message}`);
      }
      parts.push(rest + '\n');
      n++;
    } else {
      throw corrupt(`line ${ln} has no known operation`);
    }
    if (n > MAX_ENTRIES) throw corrupt('makes too many entries');
  });
  return Buffer.from(parts.join(''), 'utf8');
}
