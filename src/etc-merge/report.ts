/**
 * Views of a plan, all pure: the report (what happened, JSON), the `--dry-run` text, the tree the
 * plan produces (for verification), and the local changes of an /etc (`tiu etc diff`).
 */
import { comparePaths, displayPath } from '../core/fileindex/types.ts';
import { entryDiff, isBelow, sameEntry } from './compare.ts';
import type { EtcAction, EtcChange, EtcEntry, EtcMergeReport, EtcPlan, EtcTree } from './types.ts';

/** The report bucket of an action. */
function bucket(a: EtcAction): Exclude<keyof EtcMergeReport, 'conflicts'> | undefined {
  switch (a.op) {
    case 'take-new':
      return 'takenFromVendor';
    case 'keep-local':
    case 'meta':
      return a.source === 'local' ? 'keptLocal' : 'merged';
    case 'merged':
      return 'merged';
    case 'delete':
      return 'deleted';
    case 'conflict':
      return undefined;
  }
}

/** The report of a plan (paths as display strings; lossy for names that are not UTF-8). */
export function planReport(plan: EtcPlan): EtcMergeReport {
  const r: EtcMergeReport = { takenFromVendor: [], keptLocal: [], merged: [], deleted: [], conflicts: [] };
  for (const a of plan.actions) {
    const path = displayPath(a.path);
    if (a.op === 'conflict') {
      r.conflicts.push({ path, reason: a.reason, ...(a.tiunew ? { tiunew: displayPath(a.tiunew.path) } : {}) });
    } else {
      r[bucket(a)!].push(path);
    }
    for (const reason of a.notes ?? []) r.conflicts.push({ path, reason });
  }
  return r;
}

/** A printable path: JSON string escaping makes newlines, control and non-UTF-8 bytes visible. */
function shown(p: string): string {
  const d = displayPath(p);
  return /^[\x21-\x7e\u00a0-\uffff]+$/.test(d) && !d.includes('\ufffd') ? d : JSON.stringify(d).replace(/\ufffd/g, '\\ufffd');
}

/** One line per action, for `--dry-run`, plus a summary line. */
export function formatPlan(plan: EtcPlan): string[] {
  const lines = plan.actions.map((a) => {
    const extra = a.op === 'conflict' ? `${a.keep === 'deleted' ? ' (stays deleted)' : ''}${a.tiunew ? ` -> ${shown(a.tiunew.path)}` : ''}` : a.op === 'meta' ? ` [${a.fields.join(',')}]` : '';
    const notes = (a.notes ?? []).map((n) => `\n    note: ${n}`).join('');
    return `${a.op.padEnd(10)} /etc/${shown(a.path)}${extra}: ${a.reason}${notes}`;
  });
  const r = planReport(plan);
  lines.push(
    `${plan.unchanged} unchanged, ${r.takenFromVendor.length} from the vendor, ${r.keptLocal.length} kept, ${r.merged.length} merged, ${r.deleted.length} deleted, ${r.conflicts.length} conflicts`,
  );
  return lines;
}

function rename(e: EtcEntry, from: string, to: string): EtcEntry {
  return { ...e, path: to + e.path.slice(from.length) };
}

/**
 * The tree the plan produces from `next` (the result directory's starting state). Used to verify
 * an executed merge against a scan of its result, and by the property tests.
 */
export function planResult(plan: EtcPlan, next: EtcTree): Map<string, EtcEntry> {
  const out = new Map(next);
  const drop = (p: string) => {
    for (const q of [...out.keys()]) if (q === p || isBelow(q, p)) out.delete(q);
  };
  const put = (entries: EtcEntry[]) => {
    for (const e of entries) out.set(e.path, e);
  };
  for (const a of plan.actions) {
    switch (a.op) {
      case 'take-new':
        break;
      case 'delete':
        drop(a.path);
        break;
      case 'keep-local':
        drop(a.path);
        put([a.entry, ...a.descendants]);
        break;
      case 'merged':
      case 'meta':
        out.set(a.path, a.entry);
        break;
      case 'conflict':
        if (a.tiunew) put([a.tiunew.entry, ...a.tiunew.descendants].map((e) => rename(e, a.path, a.tiunew!.path)));
        drop(a.path);
        if (a.keep === 'local') put([a.entry!, ...a.descendants]);
        break;
    }
  }
  return out;
}

/**
 * The local changes of an /etc (`local`) against the vendor's (`base`), like
 * `ostree admin config-diff`: added, modified (with what differs) and deleted paths, in tree
 * order. Below an added or deleted directory only the directory itself is listed.
 */
export function diffTrees(base: EtcTree, local: EtcTree): EtcChange[] {
  const out: EtcChange[] = [];
  const paths = [...new Set([...base.keys(), ...local.keys()])].sort(comparePaths);
  let skipBelow: string | undefined;
  for (const p of paths) {
    if (skipBelow !== undefined && isBelow(p, skipBelow)) continue;
    skipBelow = undefined;
    const b = base.get(p);
    const l = local.get(p);
    if (sameEntry(b, l)) continue;
    const path = displayPath(p);
    if (!b || !l) {
      out.push({ path, change: b ? 'deleted' : 'added' });
      if ((b ?? l)!.type === 'dir') skipBelow = p;
    } else {
      out.push({ path, change: 'modified', what: entryDiff(b, l) });
      if (b.type !== l.type) skipBelow = p;
    }
  }
  return out;
}
