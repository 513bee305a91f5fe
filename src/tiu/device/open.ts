/** Opening a device root for the snapshot commands: btrfs check, store, facts. */
import type { System } from '../system.ts';
import { assertBtrfs } from '../../snapshot/btrfs.ts';
import { openSnapshotStore, type SnapshotStore } from '../../snapshot/store.ts';
import type { SnapshotFacts } from './policy.ts';
import { TiuError } from '../errors.ts';

export async function openDevice(sys: System, root: string, snapper: 'auto' | 'yes' | 'no' = 'auto'): Promise<SnapshotStore> {
  await assertBtrfs(sys, root);
  return openSnapshotStore(sys, root, { snapper });
}

export async function facts(store: SnapshotStore): Promise<SnapshotFacts[]> {
  const list = await store.list();
  return list.map((s) => ({
    num: s.num,
    date: s.date instanceof Date ? s.date.toISOString().replace(/\.\d{3}Z$/, 'Z') : String(s.date),
    description: s.description ?? '',
    cleanup: s.cleanup ?? '',
    userdata: s.userdata ?? {},
    isDefault: s.isDefault,
    isMounted: s.isMounted,
  }));
}

export function parseSnapshotNumber(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < 1) throw new TiuError('USAGE', `'${text}' is not a snapshot number`, { hint: 'see tiu status for the numbers' });
  return n;
}
