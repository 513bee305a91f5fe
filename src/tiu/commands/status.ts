/** `tiu status`: the snapshots with version, booted, default, in progress, health, pinned. */
import { readBounded } from '../../core/boundedread.ts';
import type { Context } from '../context.ts';
import { openDevice } from '../device/open.ts';
import { statusRows } from '../device/policy.ts';

export async function run(ctx: Context, o: { root: string; json?: boolean }): Promise<number> {
  await using dev = await openDevice(ctx.sys, o.root, { snapper: ctx.config.snapper });
  const { store } = dev;
  const rows = statusRows(await dev.facts());
  // Say why a snapshot shows no metadata (a FIFO, huge or damaged info.xml), on stderr.
  for (const e of await store.list()) if (e.missingInfo) ctx.log.warn(`snapshot ${e.num}: ${e.infoError ?? 'no info.xml'}`);
  if (o.json) {
    const withEtc = await Promise.all(
      rows.map(async (r) => {
        let etcMerge: unknown = null;
        try {
          const file = `${o.root.replace(/\/+$/, '')}/.snapshots/${r.number}/tiu-etc-merge.json`;
          etcMerge = JSON.parse((await readBounded(file, { max: 16 * 1024 * 1024, what: file })).toString('utf8'));
        } catch {}
        return { ...r, etcMerge };
      }),
    );
    ctx.out(JSON.stringify({ root: o.root, snapshots: withEtc }, null, 2));
    return 0;
  }
  const table = [['#', 'date', 'version', 'flags', 'health', 'description']];
  for (const r of rows) {
    const flags = [r.booted ? 'booted' : '', r.default ? 'default' : '', r.inProgress ? 'in-progress' : '', r.pinned ? 'pinned' : ''].filter(Boolean).join(',') || '-';
    table.push([String(r.number), r.date, r.version ?? '-', flags, r.health, r.description]);
  }
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  for (const row of table) ctx.out(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  const pending = rows.find((r) => r.default && !r.booted);
  if (pending && rows.some((r) => r.booted)) ctx.out(`\nsnapshot ${pending.number} (${pending.version ?? pending.description}) boots next; reboot to activate it`);
  return 0;
}
