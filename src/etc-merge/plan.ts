/**
 * The /etc merge planner: decides, per path, what the new snapshot's /etc gets, from three scans
 * (base = the old vendor /etc, local = the running /etc, new = the new vendor /etc). Pure: no fs,
 * no processes; file contents come from the caller's {@link ContentSource}, and only for the
 * files a text or account merge needs.
 *
 * Rules (the table is in docs/etc-merge.md):
 * - not changed on the device -> the vendor's new version (including a vendor deletion);
 * - changed on the device, not by the vendor -> the device's version (including a local deletion);
 * - the same change on both sides -> that version, no conflict;
 * - changed differently on both sides -> content and metadata are merged separately when only one
 *   side changed the content (each attribute: device changed it -> device's, else vendor's);
 *   text files both changed are line-merged (diff3); otherwise a conflict: the device's version
 *   stays (or the path stays deleted) and the vendor's is written beside it as `<name>.tiunew`;
 * - directories present as directories on both sides merge entry by entry; where one side has a
 *   directory and the other not, the whole subtree is decided at once by the same rules.
 * passwd, group, shadow, gshadow, subuid and subgid are merged by account (accounts.ts).
 * Nothing the device changed is dropped without a conflict record.
 */
import { createHash } from 'node:crypto';
import { TiuError } from '../core/errors.ts';
import { comparePaths, displayPath } from '../core/fileindex/types.ts';
import { contentEqual, metaDiff, parentOf, sameEntry } from './compare.ts';
import { isText, mergeText } from './textmerge.ts';
import { ACCOUNT_FILES, mergeAccounts, type AccountFile, type AccountInput } from './accounts.ts';
import { TEXT_MAX_BYTES, TIUNEW_SUFFIX, type ContentSource, type EtcAction, type EtcEntry, type EtcPlan, type EtcSide, type EtcTree, type Source } from './types.ts';

type Attrs = Pick<EtcEntry, 'mode' | 'uid' | 'gid' | 'xattrs'>;

/**
 * Per-attribute three-way merge of mode, uid, gid and each xattr: the device's value if the
 * device changed it, else the vendor's. `b` undefined (no common ancestor): the device's value
 * wins where they differ. Fields both sides changed differently are returned in `both`.
 */
export function mergeAttrs(b: EtcEntry | undefined, l: EtcEntry, n: EtcEntry): Attrs & { both: string[] } {
  const both: string[] = [];
  const pick = <T>(field: string, bv: T | undefined, lv: T, nv: T): T => {
    if (lv === nv || (b !== undefined && nv === bv)) return lv;
    if (b !== undefined && lv === bv) return nv;
    both.push(field);
    return lv;
  };
  const mode = l.type === 'symlink' || n.type === 'symlink' ? n.mode : pick('mode', b?.mode, l.mode, n.mode);
  const uid = pick('uid', b?.uid, l.uid, n.uid);
  const gid = pick('gid', b?.gid, l.gid, n.gid);
  const names = new Set([...Object.keys(l.xattrs ?? {}), ...Object.keys(n.xattrs ?? {}), ...Object.keys(b?.xattrs ?? {})]);
  const xattrs: Record<string, string> = {};
  for (const k of [...names].sort()) {
    const v = pick(`xattr ${k}`, b?.xattrs?.[k], l.xattrs?.[k], n.xattrs?.[k]);
    if (v !== undefined) xattrs[k] = v;
  }
  return { mode, uid, gid, ...(Object.keys(xattrs).length ? { xattrs } : {}), both };
}

function withAttrs(e: EtcEntry, a: Attrs): EtcEntry {
  const { xattrs: _drop, ...rest } = e;
  return { ...rest, mode: a.mode, uid: a.uid, gid: a.gid, ...(a.xattrs ? { xattrs: a.xattrs } : {}) };
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * Plans the merge. `contents(side, path)` must return the bytes of a regular file of that side
 * (it is checked against the scanned sha256). Throws ETC_MERGE when an account file is malformed
 * or a file's content does not match its scan (it changed while merging).
 */
export async function planEtcMerge(base: EtcTree, local: EtcTree, next: EtcTree, contents: ContentSource): Promise<EtcPlan> {
  const actions: EtcAction[] = [];
  let unchanged = 0;

  const children = new Map<string, string[]>();
  for (const p of new Set([...base.keys(), ...local.keys(), ...next.keys()])) {
    if (p === '.') continue;
    const parent = parentOf(p);
    const list = children.get(parent);
    if (list) list.push(p);
    else children.set(parent, [p]);
  }
  for (const list of children.values()) list.sort(comparePaths);

  const taken = new Set<string>([...local.keys(), ...next.keys()]);
  const tiunewName = (p: string): string => {
    let name = p + TIUNEW_SUFFIX;
    for (let i = 2; taken.has(name); i++) name = `${p}${TIUNEW_SUFFIX}.${i}`;
    taken.add(name);
    return name;
  };

  const below = (p: string, f: (q: string) => boolean): boolean => (children.get(p) ?? []).every((q) => f(q) && below(q, f));
  const subtreeSame = (a: EtcTree, b: EtcTree, p: string) => sameEntry(a.get(p), b.get(p)) && below(p, (q) => sameEntry(a.get(q), b.get(q)));
  const descendants = (m: EtcTree, p: string): EtcEntry[] => {
    const out: EtcEntry[] = [];
    const walk = (d: string) => {
      for (const q of children.get(d) ?? []) {
        const e = m.get(q);
        if (e) out.push(e);
        walk(q);
      }
    };
    if (m.get(p)?.type === 'dir') walk(p);
    return out;
  };

  const read = async (side: EtcSide, e: EtcEntry): Promise<Buffer> => {
    const b = await contents(side, e.path);
    if (b === undefined) throw new TiuError('ETC_MERGE', `cannot read /etc/${displayPath(e.path)} (${side})`, { hint: 'check that the file is readable, then retry' });
    if (e.sha256 !== undefined && sha256(b) !== e.sha256) {
      throw new TiuError('ETC_MERGE', `/etc/${displayPath(e.path)} (${side}) changed while merging`, { hint: 'retry the update' });
    }
    return b;
  };

  const notesOf = (both: string[], p: string) => (both.length ? [`${displayPath(p)}: ${both.join(', ')} changed on this device and by the vendor; kept this device's`] : []);
  const push = (a: EtcAction) => {
    if (a.notes && a.notes.length === 0) delete a.notes;
    actions.push(a);
  };

  const takeNew = (p: string, n: EtcEntry, reason: string, notes?: string[]) => push({ op: 'take-new', path: p, reason, subtree: n.type === 'dir', notes });
  const keepLocal = (p: string, l: EtcEntry, n: EtcEntry | undefined, reason: string) => {
    if (n && l.type !== 'dir' && n.type === l.type && contentEqual(l, n)) {
      push({ op: 'meta', path: p, reason, entry: l, before: n, fields: metaDiff(n, l), source: 'local' });
    } else push({ op: 'keep-local', path: p, reason, entry: l, descendants: descendants(local, p), source: 'local' });
  };
  const conflict = (p: string, l: EtcEntry | undefined, n: EtcEntry | undefined, reason: string) =>
    push({
      op: 'conflict',
      path: p,
      reason,
      keep: l ? 'local' : 'deleted',
      ...(l ? { entry: l } : {}),
      descendants: l ? descendants(local, p) : [],
      ...(n ? { tiunew: { path: tiunewName(p), entry: n, descendants: descendants(next, p) } } : {}),
    });

  /** Emits a combined result (content of one side or merged bytes, merged attributes) as the cheapest action. */
  const emitCombined = (p: string, b: EtcEntry | undefined, l: EtcEntry, n: EtcEntry, result: EtcEntry, content: Buffer | undefined, reason: string, notes: string[]) => {
    if (contentEqual(result, n)) {
      const fields = metaDiff(n, result);
      if (fields.length === 0) {
        if (sameEntry(l, n) && sameEntry(l, b) && notes.length === 0) unchanged++;
        else if (sameEntry(l, n) && notes.length === 0) takeNew(p, n, 'the same change on both sides');
        else takeNew(p, n, reason, notes);
      } else {
        const source: Source = contentEqual(l, n) && metaDiff(l, result).length === 0 ? 'local' : 'both';
        push({ op: 'meta', path: p, reason, entry: result, before: n, fields, source, notes });
      }
    } else if (contentEqual(result, l)) {
      push({ op: 'keep-local', path: p, reason, entry: result, descendants: [], source: metaDiff(l, result).length ? 'both' : 'local', notes });
    } else {
      push({ op: 'merged', path: p, reason, entry: result, content: content!, notes });
    }
  };

  // The account files are merged together (a skipped vendor account is skipped everywhere), up front.
  const accounts = new Map<string, { content: Buffer; notes: string[] }>();
  {
    const inputs: Partial<Record<AccountFile, AccountInput>> = {};
    for (const f of ACCOUNT_FILES) {
      const [b, l, n] = [base.get(f), local.get(f), next.get(f)];
      if (l?.type !== 'file' || n?.type !== 'file' || (b && b.type !== 'file') || contentEqual(l, n)) continue;
      inputs[f] = { ...(b ? { base: await read('base', b) } : {}), local: await read('local', l), next: await read('new', n) };
    }
    const r = mergeAccounts(inputs);
    for (const f of ACCOUNT_FILES) {
      const content = r.files[f];
      if (content) accounts.set(f, { content, notes: r.notes.filter((x) => x.file === f).map((x) => x.reason) });
    }
  }

  const leaf = async (p: string, b: EtcEntry | undefined, l: EtcEntry | undefined, n: EtcEntry | undefined) => {
    const acc = accounts.get(p);
    if (acc && l && n) {
      const a = mergeAttrs(b, l, n);
      const result = withAttrs({ ...l, size: acc.content.length, sha256: sha256(acc.content) }, a);
      emitCombined(p, b, l, n, result, acc.content, 'account entries merged by name', [...acc.notes, ...notesOf(a.both, p)]);
      return;
    }
    if (sameEntry(l, b)) {
      if (sameEntry(l, n)) unchanged++;
      else if (n) takeNew(p, n, 'changed by the vendor, not on this device');
      else push({ op: 'delete', path: p, reason: 'deleted by the vendor, not changed on this device' });
      return;
    }
    if (sameEntry(n, b)) {
      if (l) keepLocal(p, l, n, 'changed on this device, not by the vendor');
      else push({ op: 'delete', path: p, reason: 'deleted on this device, not changed by the vendor' });
      return;
    }
    if (sameEntry(l, n)) {
      if (n) takeNew(p, n, 'the same change on both sides');
      else push({ op: 'delete', path: p, reason: 'deleted on both sides' });
      return;
    }
    if (!l) return conflict(p, l, n, 'deleted on this device but changed by the vendor: stays deleted, vendor version written beside it');
    if (!n) return conflict(p, l, n, 'changed on this device but deleted by the vendor: kept');
    if (l.type === n.type) {
      // Only one side changed the content (or both the same way): merge the attributes alone.
      const winner = contentEqual(l, n) || (b && contentEqual(l, b)) ? n : b && contentEqual(n, b) ? l : undefined;
      if (winner) {
        const a = mergeAttrs(b, l, n);
        emitCombined(p, b, l, n, withAttrs(winner, a), undefined, 'content and metadata merged', notesOf(a.both, p));
        return;
      }
    }
    if (l.type === 'file' && n.type === 'file' && (!b || b.type === 'file')) {
      if ([b, l, n].some((e) => (e?.size ?? 0) > TEXT_MAX_BYTES)) return conflict(p, l, n, 'changed on both sides (file too large to merge)');
      const [bb, lb, nb] = [b ? await read('base', b) : Buffer.alloc(0), await read('local', l), await read('new', n)];
      if (![bb, lb, nb].every(isText)) return conflict(p, l, n, 'changed on both sides (binary file)');
      const m = mergeText(bb, lb, nb);
      if (!m.clean) return conflict(p, l, n, 'changed on both sides in overlapping lines');
      const a = mergeAttrs(b, l, n);
      const result = withAttrs({ ...l, size: m.merged.length, sha256: sha256(m.merged) }, a);
      emitCombined(p, b, l, n, result, m.merged, 'changes of both sides merged line by line', notesOf(a.both, p));
      return;
    }
    conflict(p, l, n, l.type === n.type ? `changed on both sides (${l.type})` : `changed on both sides (${l.type} on this device, ${n.type} from the vendor)`);
  };

  /** One side has a directory and the other not: the subtree is one unit. */
  const subtree = (p: string, l: EtcEntry | undefined, n: EtcEntry | undefined) => {
    if (subtreeSame(local, base, p)) {
      if (n) takeNew(p, n, 'changed by the vendor, not on this device');
      else push({ op: 'delete', path: p, reason: 'deleted by the vendor, not changed on this device' });
    } else if (subtreeSame(next, base, p)) {
      if (l) keepLocal(p, l, n, 'changed on this device, not by the vendor');
      else push({ op: 'delete', path: p, reason: 'deleted on this device, not changed by the vendor' });
    } else if (!l) conflict(p, l, n, 'deleted on this device but changed by the vendor: stays deleted, vendor version written beside it');
    else if (!n) conflict(p, l, n, 'changed on this device but deleted by the vendor: kept');
    else conflict(p, l, n, `changed on both sides (${l.type} on this device, ${n.type} from the vendor)`);
  };

  const visit = async (p: string): Promise<void> => {
    const [b, l, n] = [base.get(p), local.get(p), next.get(p)];
    const ld = l?.type === 'dir';
    const nd = n?.type === 'dir';
    if (ld && nd) {
      const a = mergeAttrs(b?.type === 'dir' ? b : undefined, l, n);
      emitCombined(p, b, l, n, withAttrs(n, a), undefined, sameEntry(l, b) ? 'changed by the vendor, not on this device' : 'directory metadata merged', notesOf(a.both, p));
      for (const q of children.get(p) ?? []) await visit(q);
    } else if (ld || nd) subtree(p, l, n);
    else await leaf(p, b, l, n);
  };

  if (local.get('.')?.type === 'dir' && next.get('.')?.type === 'dir') await visit('.');
  else for (const q of children.get('.') ?? []) await visit(q);
  return { actions, unchanged };
}
