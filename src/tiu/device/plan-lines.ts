/**
 * The dry-run listing of an apply plan, one line per path. The executor removes a file before
 * writing its replacement (a new inode, so hardlinks and a changed type come out right); the
 * listing shows such a pair as one `replace` line, which is what happens to the path. A file
 * rewritten in place (only its differing blocks written, the inode kept) is a `rewrite` line. Pure.
 */
import type { ApplyPlan } from '../apply/plan.ts';

export function planLines(plan: ApplyPlan, display: (p: string) => string): string[] {
  const lines: string[] = [];
  const removed = new Map(plan.removals.map((r) => [r.path, r]));
  const replaced = new Set(plan.changes.filter((c) => c.op !== 'meta' && removed.has(c.entry.path)).map((c) => c.entry.path));
  for (const r of plan.removals) if (!replaced.has(r.path)) lines.push(`remove  /${display(r.path)}${r.type === 'dir' ? '/' : ''}`);
  for (const c of plan.changes) {
    const p = `/${display(c.entry.path)}`;
    const was = removed.get(c.entry.path);
    if (c.op === 'meta') lines.push(`meta    ${p} (${c.fields.join(', ')})`);
    else if (c.op === 'write' && c.inPlace) lines.push(`rewrite ${p}`);
    else if (was) lines.push(`replace ${p}${was.type === c.entry.type ? '' : ` (${was.type} -> ${c.entry.type})`}`);
    else if (c.op === 'link') lines.push(`link    ${p} -> /${display(c.entry.hardlink!)}`);
    else lines.push(`${c.op.padEnd(7)} ${p}`);
  }
  const s = plan.stats;
  lines.push(`${s.written} files written (${s.writtenBytes} bytes), ${s.created} created, ${s.linked} linked, ${s.metaOnly} metadata-only, ${s.removed} removed, ${s.unchanged} unchanged`);
  return lines;
}
