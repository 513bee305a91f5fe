/**
 * Pure parsers for the text output of the `btrfs` CLI (btrfs-progs 6.x, run with LC_ALL=C).
 *
 * Strict on what tiu relies on (ids, paths, uuids, flags), tolerant of lines it does not use,
 * so a newer btrfs-progs that adds fields still parses. Every parser throws a TOOL_FAILED
 * {@link TiuError} naming the command when the output does not have the expected shape.
 */
import { TiuError } from '../core/errors.ts';

/** A subvolume as `btrfs subvolume show` describes it. */
export interface SubvolumeInfo {
  /** Subvolume id (5 for the top level). */
  id: number;
  /** Path relative to the top level, without leading slash ('' for the top level itself). */
  path: string;
  /** Last path component ('' for the top level). */
  name: string;
  uuid: string;
  /** UUID of the subvolume this one is a snapshot of, or undefined. */
  parentUuid: string | undefined;
  /** Id of the subvolume containing this one (0 for the top level). */
  parentId: number;
  /** Transaction id of the last change in this subvolume. */
  generation: number;
  readonly: boolean;
}

/** A row of `btrfs subvolume list -u -q`. */
export interface SubvolumeListEntry {
  id: number;
  generation: number;
  /** Id of the containing subvolume. */
  topLevel: number;
  uuid: string;
  parentUuid: string | undefined;
  /** Path relative to the top level, without leading slash. */
  path: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function bad(command: string, what: string, output: string): TiuError {
  const excerpt = output.length > 200 ? `${output.slice(0, 200)}…` : output;
  return new TiuError('TOOL_FAILED', `unexpected output of '${command}': ${what}`, {
    hint: 'this btrfs-progs version prints something tiu does not understand; report it with `btrfs --version`',
    details: { command, output: excerpt },
  });
}

function parseUint(text: string, command: string, what: string, output: string): number {
  if (!/^\d{1,19}$/.test(text)) throw bad(command, `${what} is not a number: '${text}'`, output);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw bad(command, `${what} is too large: '${text}'`, output);
  return n;
}

function parseUuid(text: string, command: string, what: string, output: string): string | undefined {
  if (text === '-') return undefined;
  if (!UUID_RE.test(text)) throw bad(command, `${what} is not a UUID: '${text}'`, output);
  return text;
}

/** Removes the `<FS_TREE>/` prefix btrfs-progs puts on paths shown relative to the top level. */
function stripFsTree(path: string): string {
  if (path === '<FS_TREE>') return '';
  return path.startsWith('<FS_TREE>/') ? path.slice('<FS_TREE>/'.length) : path;
}

/** Parses `btrfs subvolume show <path>`. */
export function parseSubvolumeShow(output: string): SubvolumeInfo {
  const command = 'btrfs subvolume show';
  const lines = output.split('\n');
  const first = lines[0]?.trim() ?? '';
  if (!first) throw bad(command, 'empty output', output);
  const fields = new Map<string, string>();
  for (const line of lines.slice(1)) {
    // Fields are `\tKey: \t\tvalue`; the snapshot and quota lists below are indented twice.
    const m = /^\t([A-Za-z][A-Za-z ()]*):\s*(.*)$/.exec(line);
    if (m && !fields.has(m[1]!)) fields.set(m[1]!, m[2]!.trim());
  }
  const need = (key: string): string => {
    const v = fields.get(key);
    if (v === undefined) throw bad(command, `no '${key}' field`, output);
    return v;
  };
  const id = parseUint(need('Subvolume ID'), command, 'Subvolume ID', output);
  const uuid = parseUuid(need('UUID'), command, 'UUID', output);
  if (!uuid) throw bad(command, 'subvolume has no UUID', output);
  const flags = need('Flags');
  if (!/^(-|[a-z_]+(,\s*[a-z_]+)*)$/.test(flags)) throw bad(command, `unknown flags '${flags}'`, output);
  const path = first === '/' ? '' : stripFsTree(first.replace(/^\/+/, ''));
  const name = path === '' ? '' : path.slice(path.lastIndexOf('/') + 1);
  return {
    id,
    path,
    name,
    uuid,
    parentUuid: parseUuid(need('Parent UUID'), command, 'Parent UUID', output),
    parentId: parseUint(need('Parent ID'), command, 'Parent ID', output),
    generation: parseUint(need('Generation'), command, 'Generation', output),
    readonly: flags.split(/,\s*/).includes('readonly'),
  };
}

/** Parses `btrfs subvolume list -u -q <mount>` (no `-a`: paths are relative to the top level). */
export function parseSubvolumeList(output: string): SubvolumeListEntry[] {
  const command = 'btrfs subvolume list';
  const out: SubvolumeListEntry[] = [];
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^ID (\d+) gen (\d+) top level (\d+) parent_uuid (\S+)\s+uuid (\S+) path (.+)$/.exec(line);
    if (!m) throw bad(command, `cannot parse line '${line}'`, output);
    const uuid = parseUuid(m[5]!, command, 'uuid', output);
    if (!uuid) throw bad(command, 'subvolume without uuid', output);
    out.push({
      id: parseUint(m[1]!, command, 'ID', output),
      generation: parseUint(m[2]!, command, 'gen', output),
      topLevel: parseUint(m[3]!, command, 'top level', output),
      parentUuid: parseUuid(m[4]!, command, 'parent_uuid', output),
      uuid,
      path: stripFsTree(m[6]!),
    });
  }
  return out;
}

/** Parses the ids out of `btrfs subvolume list [-r] <mount>` (any column set). */
export function parseSubvolumeIds(output: string): number[] {
  const ids: number[] = [];
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^ID (\d+) /.exec(line);
    if (!m) throw bad('btrfs subvolume list', `cannot parse line '${line}'`, output);
    ids.push(parseUint(m[1]!, 'btrfs subvolume list', 'ID', output));
  }
  return ids;
}

/** Parses `btrfs subvolume get-default <mount>`: the top level is `ID 5 (FS_TREE)`. */
export function parseGetDefault(output: string): { id: number; path: string } {
  const command = 'btrfs subvolume get-default';
  const line = output.trim();
  if (/^ID 5 \(FS_TREE\)$/.test(line)) return { id: 5, path: '' };
  const m = /^ID (\d+) gen \d+ top level \d+ path (.+)$/.exec(line);
  if (!m) throw bad(command, `cannot parse '${line}'`, output);
  return { id: parseUint(m[1]!, command, 'ID', output), path: stripFsTree(m[2]!) };
}

/** Parses `btrfs filesystem du -s --raw <path>`: the exclusive bytes of the one row. */
export function parseDuExclusive(output: string): number {
  const command = 'btrfs filesystem du';
  const lines = output.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 2 || !/^\s*Total\s+Exclusive\s+Set shared\s+Filename\s*$/.test(lines[0]!)) {
    throw bad(command, 'expected a header and one row', output);
  }
  const m = /^\s*(\d+)\s+(\d+)\s+(\d+|-)\s+/.exec(lines[1]!);
  if (!m) throw bad(command, `cannot parse '${lines[1]}'`, output);
  return parseUint(m[2]!, command, 'Exclusive', output);
}

/** Parses `btrfs filesystem show <path>`: the filesystem UUID (fsid). */
export function parseFilesystemUuid(output: string): string {
  const m = /uuid: ([0-9a-f-]{36})/.exec(output);
  if (!m || !UUID_RE.test(m[1]!)) throw bad('btrfs filesystem show', 'no uuid', output);
  return m[1]!;
}
