/**
 * Three-way merge of the account databases (passwd, group, shadow, gshadow, subuid, subgid)
 * by entry name, not by line. Pure: bytes in, bytes and notes out.
 *
 * Rules (docs/etc-merge.md, "Accounts"):
 * - the device's accounts, passwords and memberships are kept; the vendor's new accounts are
 *   appended (local order first, then new vendor entries in vendor order);
 * - a vendor change to an account the device did not change is applied; an account both sides
 *   changed is merged field by field, and where both changed the same field the device's value
 *   wins (noted);
 * - member lists (group members, gshadow admins and members) are merged as sets: added by either
 *   side kept, removed by either side removed;
 * - a vendor account whose uid/gid a different local account already holds is NOT added (no
 *   silent duplicate ids, no silent remapping): it is skipped and noted with both names and the
 *   id; so are its shadow/gshadow/subuid/subgid entries and, for a skipped vendor group, the
 *   vendor users whose primary group it was;
 * - comment, blank and NIS compat (`+`/`-`) lines of the device's file are kept in place; the
 *   vendor's are not added.
 * Files are handled as latin1 byte strings, so non-UTF-8 bytes (e.g. in GECOS) survive.
 * Malformed lines are rejected with an ETC_MERGE error naming the file and line.
 */
import { TiuError } from '../core/errors.ts';
import { displayPath } from '../core/fileindex/types.ts';

export const ACCOUNT_FILES = ['group', 'gshadow', 'passwd', 'shadow', 'subgid', 'subuid'] as const;
export type AccountFile = (typeof ACCOUNT_FILES)[number];

const FIELD_NAMES: Record<AccountFile, readonly string[]> = {
  passwd: ['name', 'password', 'uid', 'gid', 'gecos', 'home', 'shell'],
  group: ['name', 'password', 'gid', 'members'],
  shadow: ['name', 'password', 'lastchg', 'min', 'max', 'warn', 'inactive', 'expire', 'reserved'],
  gshadow: ['name', 'password', 'admins', 'members'],
  subuid: ['name', 'start', 'count'],
  subgid: ['name', 'start', 'count'],
};
const NUMERIC: Record<AccountFile, readonly number[]> = { passwd: [2, 3], group: [2], shadow: [], gshadow: [], subuid: [1, 2], subgid: [1, 2] };
const LISTS: Record<AccountFile, readonly number[]> = { passwd: [], group: [3], shadow: [], gshadow: [2, 3], subuid: [], subgid: [] };
/** The id field checked for collisions. */
const ID_FIELD: Partial<Record<AccountFile, number>> = { passwd: 2, group: 2 };

type Line = { kind: 'entry'; name: string; fields: string[] } | { kind: 'other'; text: string };

export interface ParsedAccounts {
  file: AccountFile;
  lines: Line[];
  /** Entries by name (passwd/group/shadow/gshadow only: names are unique there). */
  byName: Map<string, string[]>;
}

export interface AccountNote {
  file: AccountFile;
  name: string;
  reason: string;
}

/** Parses one account file strictly (throws ETC_MERGE on a malformed line). `label` names it in errors. */
export function parseAccounts(file: AccountFile, text: Buffer | string, label: string = file): ParsedAccounts {
  const s = typeof text === 'string' ? text : text.toString('latin1');
  const raw = s.split('\n');
  if (raw.at(-1) === '') raw.pop();
  const lines: Line[] = [];
  const byName = new Map<string, string[]>();
  const count = FIELD_NAMES[file].length;
  raw.forEach((text, i) => {
    const fail = (what: string) =>
      new TiuError('ETC_MERGE', `${label} line ${i + 1}: ${what}`, {
        hint: `fix the line (e.g. with vipw/vigr or pwck/grpck), then retry the update`,
        details: { file, line: i + 1 },
      });
    if (text.trim() === '' || text.startsWith('#') || text.startsWith('+') || text.startsWith('-')) {
      lines.push({ kind: 'other', text });
      return;
    }
    const fields = text.split(':');
    if (fields.length !== count) throw fail(`expected ${count} colon-separated fields, found ${fields.length}`);
    const name = fields[0]!;
    // eslint-disable-next-line no-control-regex
    if (!/^[^\s\x00-\x1f\x7f]+$/.test(name)) throw fail('invalid entry name');
    for (const k of NUMERIC[file]) {
      if (!/^\d{1,10}$/.test(fields[k]!)) throw fail(`field ${FIELD_NAMES[file][k]} is not a number`);
    }
    if (file !== 'subuid' && file !== 'subgid') {
      if (byName.has(name)) throw fail(`duplicate entry '${displayPath(name)}'`);
      byName.set(name, fields);
    }
    lines.push({ kind: 'entry', name, fields });
  });
  return { file, lines, byName };
}

function serialize(lines: Line[]): Buffer {
  if (lines.length === 0) return Buffer.alloc(0);
  return Buffer.from(lines.map((l) => (l.kind === 'entry' ? l.fields.join(':') : l.text)).join('\n') + '\n', 'latin1');
}

function list(s: string): string[] {
  return s === '' ? [] : s.split(',');
}

/** Set merge keeping local's order: (L ∪ (N∖B)) ∖ (B∖N). */
function mergeList(b: string | undefined, l: string, n: string): string {
  const B = new Set(list(b ?? ''));
  const N = new Set(list(n));
  const out: string[] = [];
  for (const x of list(l)) if (!(B.has(x) && !N.has(x)) && !out.includes(x)) out.push(x);
  for (const x of N) if (!B.has(x) && !out.includes(x)) out.push(x);
  return out.join(',');
}

function mergeFields(file: AccountFile, name: string, b: string[] | undefined, l: string[], n: string[], notes: AccountNote[]): string[] {
  const out = [name];
  const both: string[] = [];
  for (let i = 1; i < l.length; i++) {
    const [bi, li, ni] = [b?.[i], l[i]!, n[i]!];
    if (LISTS[file].includes(i)) out.push(mergeList(bi, li, ni));
    else if (li === ni || ni === bi) out.push(li);
    else if (li === bi) out.push(ni);
    else {
      out.push(li);
      both.push(FIELD_NAMES[file][i]!);
    }
  }
  if (both.length) {
    // No values in the note: shadow fields are password hashes.
    notes.push({ file, name, reason: `${file} entry '${displayPath(name)}': ${both.join(', ')} changed on this device and by the vendor; kept this device's value` });
  }
  return out;
}

export interface FileMerge {
  content: Buffer;
  notes: AccountNote[];
  /** Vendor entries not added (id collision or a skipped dependency). */
  skipped: { name: string; id?: string }[];
}

/**
 * Merges one account file. `skip`: names whose vendor-added entry must not be added (their
 * account was skipped in passwd/group); `skipGids`: gids of skipped vendor groups (passwd only).
 */
export function mergeAccountFile(
  file: AccountFile,
  base: ParsedAccounts | undefined,
  local: ParsedAccounts,
  next: ParsedAccounts,
  skip: ReadonlySet<string> = new Set(),
  skipGids: ReadonlySet<string> = new Set(),
): FileMerge {
  if (file === 'subuid' || file === 'subgid') return mergeRanges(file, base, local, next, skip);
  const B = base?.byName ?? new Map<string, string[]>();
  const L = local.byName;
  const N = next.byName;
  const idField = ID_FIELD[file];
  const notes: AccountNote[] = [];
  const skipped: FileMerge['skipped'] = [];
  const out: Line[] = [];
  const idFromVendor: Line[] = [];
  const same = (a: string[], b: string[]) => a.join(':') === b.join(':');

  for (const line of local.lines) {
    if (line.kind === 'other') {
      out.push(line);
      continue;
    }
    const { name, fields: l } = line;
    const b = B.get(name);
    const n = N.get(name);
    if (!n) {
      if (!b) out.push(line);
      else if (!same(l, b)) {
        out.push(line);
        notes.push({ file, name, reason: `${file} entry '${displayPath(name)}' was removed by the vendor but changed on this device; kept` });
      }
      continue;
    }
    const merged: Line = { kind: 'entry', name, fields: mergeFields(file, name, b, l, n, notes) };
    out.push(merged);
    if (idField !== undefined && merged.fields[idField] !== l[idField]) idFromVendor.push(merged);
  }

  // A vendor id that another account in the result holds, unless the vendor gives it that id too.
  const holder = (name: string, id: string): string | undefined => {
    for (const e of out) {
      if (e.kind !== 'entry' || e.name === name || e.fields[idField!] !== id) continue;
      if (N.get(e.name)?.[idField!] !== id) return e.name;
    }
    return undefined;
  };
  const idName = file === 'passwd' ? 'uid' : 'gid';
  for (const e of idFromVendor) {
    if (e.kind !== 'entry') continue;
    const id = e.fields[idField!]!;
    const other = holder(e.name, id);
    if (other === undefined) continue;
    e.fields[idField!] = L.get(e.name)![idField!]!;
    notes.push({ file, name: e.name, reason: `${file}: the vendor changed the ${idName} of '${displayPath(e.name)}' to ${id}, which '${displayPath(other)}' holds on this device; kept ${e.fields[idField!]}` });
  }

  for (const line of next.lines) {
    if (line.kind === 'other' || L.has(line.name)) continue;
    const { name, fields: n } = line;
    const b = B.get(name);
    if (b) {
      if (!same(n, b)) notes.push({ file, name, reason: `${file} entry '${displayPath(name)}' was deleted on this device and changed by the vendor; stays deleted` });
      continue;
    }
    if (skip.has(name)) {
      skipped.push({ name });
      notes.push({ file, name, reason: `${file} entry '${displayPath(name)}' not added: its account was not added (see the id conflict)` });
      continue;
    }
    if (file === 'passwd' && skipGids.has(n[3]!)) {
      skipped.push({ name, id: n[2] });
      notes.push({ file, name, reason: `passwd: vendor user '${displayPath(name)}' not added: its primary group ${n[3]} was not added (gid conflict)` });
      continue;
    }
    if (idField !== undefined) {
      const other = holder(name, n[idField]!);
      if (other !== undefined) {
        skipped.push({ name, id: n[idField] });
        notes.push({
          file,
          name,
          reason: `${file}: vendor ${file === 'passwd' ? 'user' : 'group'} '${displayPath(name)}' not added: ${idName} ${n[idField]} is held by '${displayPath(other)}' on this device`,
        });
        continue;
      }
    }
    out.push(line);
  }
  return { content: serialize(out), notes, skipped };
}

/** subuid/subgid: a user may own several ranges, so entries are whole lines, merged as a set. */
function mergeRanges(file: AccountFile, base: ParsedAccounts | undefined, local: ParsedAccounts, next: ParsedAccounts, skip: ReadonlySet<string>): FileMerge {
  const text = (l: Line) => (l.kind === 'entry' ? l.fields.join(':') : l.text);
  const B = new Set((base?.lines ?? []).filter((l) => l.kind === 'entry').map(text));
  const N = new Set(next.lines.filter((l) => l.kind === 'entry').map(text));
  const L = new Set(local.lines.filter((l) => l.kind === 'entry').map(text));
  const notes: AccountNote[] = [];
  const skipped: FileMerge['skipped'] = [];
  const out = local.lines.filter((l) => l.kind === 'other' || !(B.has(text(l)) && !N.has(text(l))));
  const range = (f: string[]) => [Number(f[1]), Number(f[1]) + Number(f[2])] as const;
  for (const line of next.lines) {
    if (line.kind === 'other') continue;
    const t = text(line);
    if (B.has(t) || L.has(t)) continue;
    if (skip.has(line.name)) {
      skipped.push({ name: line.name });
      notes.push({ file, name: line.name, reason: `${file} range of '${displayPath(line.name)}' not added: its account was not added (see the id conflict)` });
      continue;
    }
    const [s, e] = range(line.fields);
    const clash = out.find((o) => {
      if (o.kind !== 'entry' || o.name === line.name || N.has(text(o))) return false;
      const [os, oe] = range(o.fields);
      return s < oe && os < e;
    });
    if (clash && clash.kind === 'entry') {
      skipped.push({ name: line.name, id: line.fields[1] });
      notes.push({ file, name: line.name, reason: `${file}: vendor range ${line.fields[1]}+${line.fields[2]} of '${displayPath(line.name)}' not added: it overlaps '${displayPath(clash.name)}''s range on this device` });
      continue;
    }
    out.push(line);
  }
  return { content: serialize(out), notes, skipped };
}

export interface AccountInput {
  /** Absent when the old vendor /etc had no such file. */
  base?: Buffer;
  local: Buffer;
  next: Buffer;
}

export interface AccountsMerge {
  files: Partial<Record<AccountFile, Buffer>>;
  notes: AccountNote[];
}

/**
 * Merges the given account files together (a vendor account skipped in passwd/group is skipped
 * in the shadow and sub-id files too). Files not given are not touched. Throws ETC_MERGE on a
 * malformed line in any input.
 */
export function mergeAccounts(inputs: Partial<Record<AccountFile, AccountInput>>): AccountsMerge {
  const files: Partial<Record<AccountFile, Buffer>> = {};
  const notes: AccountNote[] = [];
  const run = (file: AccountFile, skip?: ReadonlySet<string>, skipGids?: ReadonlySet<string>): FileMerge | undefined => {
    const i = inputs[file];
    if (!i) return undefined;
    const parse = (side: string, b: Buffer) => parseAccounts(file, b, `${side} /etc/${file}`);
    const r = mergeAccountFile(file, i.base && parse('vendor (old)', i.base), parse('local', i.local), parse('vendor (new)', i.next), skip, skipGids);
    files[file] = r.content;
    notes.push(...r.notes);
    return r;
  };
  const group = run('group');
  const skippedGroups = new Set(group?.skipped.map((s) => s.name));
  const passwd = run('passwd', new Set(), new Set(group?.skipped.flatMap((s) => (s.id === undefined ? [] : [s.id]))));
  const skippedUsers = new Set(passwd?.skipped.map((s) => s.name));
  run('gshadow', skippedGroups);
  run('shadow', skippedUsers);
  run('subuid', skippedUsers);
  run('subgid', skippedUsers);
  return { files, notes };
}
