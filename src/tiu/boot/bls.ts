/**
 * Boot Loader Specification Type #1 entries as tiu writes them for systemd-boot, with
 * systemd's Automatic Boot Assessment counters in the file names. Pure: names and texts in,
 * names and texts out.
 *
 * One entry per snapshot: `loader/entries/tiu-<N>[+LEFT[-DONE]].conf`. systemd-boot renames an
 * entry with a counter on every try (`tiu-5+3.conf` → `tiu-5+2-1.conf` → … → `tiu-5+0-3.conf`,
 * which is "bad"); `systemd-bless-boot good` (or tiu) renames it to `tiu-5.conf`.
 *
 * Which entry boots: loader.conf says `default tiu-*`; of the matching entries systemd-boot takes
 * the one that sorts first, bad entries (no tries left) last, then by `sort-key`, then by
 * `version` newest first. All tiu entries share one sort-key, and tiu writes the `version` as
 * `<rank>.<N>`: 3 for the default, 2 for the fallback of a boot trial, 1 for the others. So the
 * default boots; when its tries run out, the fallback; the snapshot number orders the rest.
 * (Old systemd-boot sorted the other way round and took the last match: the same winner.)
 */
import { TiuError } from '../../core/errors.ts';

export const ENTRY_PREFIX = 'tiu-';
/** The loader.conf `default` pattern: every tiu entry; ranks decide (see above). */
export const DEFAULT_PATTERN = 'tiu-*';
export const SORT_KEY = 'tiu';
/** Tries a new snapshot gets before systemd-boot falls back (as systemd's `+3` examples). */
export const DEFAULT_TRIES = 3;

export type Rank = 'default' | 'fallback' | 'other';
const RANK_DIGIT: Record<Rank, number> = { default: 3, fallback: 2, other: 1 };

export interface EntryName {
  num: number;
  /** Boot counter, if the name has one. */
  tries?: { left: number; done: number };
}

/**
 * Parses a tiu entry file name, following systemd-boot's counter syntax (`+LEFT[-DONE]` right
 * before `.conf`). Undefined for names that are not tiu's.
 */
export function parseEntryName(file: string): EntryName | undefined {
  const m = /^tiu-([1-9]\d{0,9})(?:\+(\d{1,9})(?:-(\d{1,9}))?)?\.conf$/.exec(file);
  if (!m) return undefined;
  const num = Number(m[1]);
  if (num > 0xffffffff) return undefined;
  if (m[2] === undefined) return { num };
  return { num, tries: { left: Number(m[2]), done: m[3] === undefined ? 0 : Number(m[3]) } };
}

/** The file name of snapshot `num`'s entry with the given counter (none: a blessed entry). */
export function entryFileName(num: number, tries?: { left: number; done: number }): string {
  if (!Number.isInteger(num) || num < 1) throw new TiuError('INTERNAL', `bad snapshot number ${num}`);
  if (!tries) return `${ENTRY_PREFIX}${num}.conf`;
  return `${ENTRY_PREFIX}${num}+${tries.left}${tries.done ? `-${tries.done}` : ''}.conf`;
}

/** Whether systemd-boot considers an entry bad (counter present, no tries left). */
export function isBad(name: EntryName): boolean {
  return name.tries !== undefined && name.tries.left === 0;
}

/** The `version` field for snapshot `num` with `rank` (see the module comment). */
export function rankVersion(num: number, rank: Rank): string {
  return `${RANK_DIGIT[rank]}.${num}`;
}

/** The rank encoded in a version written by {@link rankVersion}, if it is one. */
export function rankOf(version: string | undefined): Rank | undefined {
  const m = /^([123])\.\d+$/.exec(version ?? '');
  if (!m) return undefined;
  return m[1] === '3' ? 'default' : m[1] === '2' ? 'fallback' : 'other';
}

export interface BlsEntry {
  title: string;
  version: string;
  sortKey: string;
  /** Paths on the ESP, starting with '/'. */
  linux: string;
  initrd?: string;
  options: string[];
}

function field(key: string, value: string): string {
  if (/[\n\r]/.test(value)) throw new TiuError('INTERNAL', `BLS ${key} must be one line`);
  return `${key.padEnd(9)} ${value}\n`;
}

/** Renders an entry file. Every value must be one line. */
export function renderEntry(e: BlsEntry): string {
  let out = '# Written by tiu; tiu rewrites or removes it (see docs/boot.md).\n';
  out += field('title', e.title);
  out += field('version', e.version);
  out += field('sort-key', e.sortKey);
  out += field('linux', e.linux);
  if (e.initrd) out += field('initrd', e.initrd);
  out += field('options', e.options.join(' '));
  return out;
}

/**
 * Parses an entry file into keys (values of repeated keys in order). Lines are `key value`
 * separated by spaces or tabs; `#` lines and blank lines are skipped (as systemd-boot does).
 */
export function parseEntry(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)[ \t]+(.*)$/.exec(line);
    if (!m) continue;
    const list = out.get(m[1]!) ?? [];
    list.push(m[2]!.trim());
    out.set(m[1]!, list);
  }
  return out;
}

/**
 * loader.conf with `default` set to `pattern`: an existing `default` line is replaced (others
 * removed, systemd-boot uses the last one), every other line is kept; without one it is added
 * at the top. Pure.
 */
export function setLoaderDefault(text: string | undefined, pattern: string): string {
  if (/\s/.test(pattern)) throw new TiuError('INTERNAL', 'a loader.conf default pattern has no spaces');
  const lines = (text ?? '').split('\n');
  if (lines.at(-1) === '') lines.pop();
  const out: string[] = [];
  let done = false;
  for (const l of lines) {
    if (/^\s*default(\s|$)/.test(l)) {
      if (!done) out.push(`default ${pattern}`);
      done = true;
    } else out.push(l);
  }
  if (!done) out.unshift(`default ${pattern}`);
  return `${out.join('\n')}\n`;
}

/** The `default` value of a loader.conf, if any (the last one wins, as in systemd-boot). */
export function loaderDefault(text: string): string | undefined {
  let found: string | undefined;
  for (const l of text.split('\n')) {
    const m = /^\s*default\s+(\S+)\s*$/.exec(l);
    if (m) found = m[1];
  }
  return found;
}

/** Vendor GUID of systemd-boot's EFI variables (LoaderEntryOneShot, LoaderBootCountPath, …). */
export const LOADER_GUID = '4a67b082-0a4c-41cf-b6c7-440b29bb8c4f';
/** EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS */
const EFI_ATTRS = 0x07;

/**
 * The bytes to write to efivarfs for a string variable: 4-byte little-endian attributes, then
 * the value as UTF-16LE with a terminating NUL (what systemd-boot reads with efivar_get()).
 */
export function encodeEfiString(value: string): Buffer {
  const attrs = Buffer.alloc(4);
  attrs.writeUInt32LE(EFI_ATTRS);
  return Buffer.concat([attrs, Buffer.from(`${value}\0`, 'utf16le')]);
}

/** Inverse of {@link encodeEfiString}: the string of an efivarfs file (attributes skipped). */
export function decodeEfiString(buf: Buffer): string {
  if (buf.length < 4 || (buf.length - 4) % 2 !== 0) throw new TiuError('INPUT_INVALID', 'not an EFI string variable');
  return buf.subarray(4).toString('utf16le').replace(/\0+$/, '');
}

export interface RankedEntry {
  num: number;
  file: string;
  tries?: { left: number; done: number };
}

/**
 * Which entry systemd-boot boots by default, given the entries with their ranks (pure model of
 * its selection, used to test the ranking and by `tiu status`-like reporting): bad ones last,
 * then rank, then snapshot number, highest first.
 */
export function predictBoot(entries: readonly (RankedEntry & { rank: Rank })[]): RankedEntry | undefined {
  const score = (e: RankedEntry & { rank: Rank }) => [e.tries?.left === 0 ? 0 : 1, RANK_DIGIT[e.rank], e.num];
  return [...entries].sort((a, b) => {
    const sa = score(a);
    const sb = score(b);
    for (let i = 0; i < sa.length; i++) if (sa[i] !== sb[i]) return sb[i]! - sa[i]!;
    return 0;
  })[0];
}

/** An entry text with its `version` line replaced (or added after `title`). Pure. */
export function withVersion(text: string, version: string): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => /^\s*version(\s|$)/.test(l));
  const line = field('version', version).trimEnd();
  if (i >= 0) lines[i] = line;
  else {
    const t = lines.findIndex((l) => /^\s*title(\s|$)/.test(l));
    lines.splice(t >= 0 ? t + 1 : lines.length, 0, line);
  }
  return lines.join('\n');
}
