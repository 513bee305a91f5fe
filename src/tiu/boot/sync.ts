/**
 * Reconciling the bootloader with the snapshots: one entry per finished snapshot that has a
 * kernel, no entries for deleted ones, the loader's default = the btrfs default subvolume, and a
 * boot trial (fallback to a known-good snapshot) while the default has never booted healthy.
 *
 * The btrfs default is the single source of truth; this makes the loader follow it. It runs
 * after an update switched the default, on every boot from the health check, and from
 * `tiu health-check --sync-only` (installer, after a manual `btrfs subvolume set-default`).
 * {@link planBootSync} decides (pure), {@link syncBoot} carries the plan out.
 */
import type { Device } from '../device/open.ts';
import { UD } from '../device/paths.ts';
import type { Health } from '../device/policy.ts';
import type { BootEntryInfo, BootTry, BootloaderKind, SnapshotBoot } from './types.ts';
import { describeSnapshot, rootFacts } from './backend.ts';

export interface SyncSnapshot {
  num: number;
  health: Health;
  inProgress: boolean;
  isDefault: boolean;
  isMounted: boolean;
  /** Has a kernel (so an entry can be made). */
  bootable: boolean;
}

export interface SyncFacts {
  snapshots: SyncSnapshot[];
  entries: BootEntryInfo[];
  loaderDefault: number | undefined;
  trial: BootTry | undefined;
}

export interface SyncPlan {
  add: { num: number; trial: boolean }[];
  remove: number[];
  /** Entries of snapshots the health check marked bad: the loader must skip them. */
  markBad: number[];
  setDefault?: { num: number; fallback?: number };
  /** A trial that no longer applies (its snapshot is not the default any more). */
  endStaleTry?: number;
  warnings: string[];
}

/**
 * The snapshot to fall back to while `def` is on trial: the booted one (it runs, so it boots)
 * unless it is bad; else the newest good one; else the newest older one not known bad.
 */
export function chooseFallback(snapshots: readonly SyncSnapshot[], def: number): number | undefined {
  const usable = snapshots.filter((s) => s.num !== def && s.bootable && !s.inProgress && s.health !== 'bad');
  const booted = usable.find((s) => s.isMounted);
  if (booted) return booted.num;
  const byNewest = [...usable].sort((a, b) => b.num - a.num);
  return byNewest.find((s) => s.health === 'good')?.num ?? byNewest.find((s) => s.num < def)?.num;
}

/** Decides what to change (pure). */
export function planBootSync(f: SyncFacts): SyncPlan {
  const plan: SyncPlan = { add: [], remove: [], markBad: [], warnings: [] };
  const wanted = new Map(f.snapshots.filter((s) => !s.inProgress && s.bootable).map((s) => [s.num, s]));
  const have = new Set(f.entries.map((e) => e.num));
  const def = f.snapshots.find((s) => s.isDefault);
  const booted = f.snapshots.find((s) => s.isMounted);

  let trialFallback: number | undefined;
  if (def && wanted.has(def.num) && def.health === 'unknown' && def.num !== booted?.num) trialFallback = chooseFallback(f.snapshots, def.num);
  const needsTrial = trialFallback !== undefined;

  for (const e of f.entries) if (!wanted.has(e.num)) plan.remove.push(e.num);
  for (const s of wanted.values()) {
    if (!have.has(s.num)) plan.add.push({ num: s.num, trial: needsTrial && s.num === def?.num });
    if (s.health === 'bad' && s.num !== def?.num && !f.entries.find((e) => e.num === s.num)?.bad) plan.markBad.push(s.num);
  }

  if (!def) {
    plan.warnings.push('the btrfs default subvolume is not a snapshot: the boot loader default is left alone');
  } else if (!wanted.has(def.num)) {
    plan.warnings.push(`the default snapshot ${def.num} has no kernel: the boot loader default is left alone`);
  } else {
    const trialOk = f.trial?.num === def.num && f.trial.fallback === trialFallback;
    if (f.loaderDefault !== def.num || (needsTrial && !trialOk)) {
      plan.setDefault = needsTrial ? { num: def.num, fallback: trialFallback } : { num: def.num };
    } else if (!needsTrial && f.trial?.num === def.num && def.health === 'good') {
      // The health check blessed it but the loader still counts: finish that.
      plan.endStaleTry = def.num;
    }
  }
  // A trial armed for a snapshot that is no longer the default (GRUB's tiu_boot_try; BLS trials always belong to its default entry).
  if (f.trial && f.trial.num !== def?.num && !plan.setDefault) plan.endStaleTry = f.trial.num;
  return plan;
}

export interface SyncResult {
  kind: BootloaderKind;
  location: string | undefined;
  plan: SyncPlan;
}

/**
 * Makes the bootloader of the device match its snapshots (see the module comment). The device
 * is opened with its lock. Writes only boot files (ESP, GRUB directory); snapshots are read.
 */
export async function syncBoot(dev: Device): Promise<SyncResult> {
  const { sys } = dev;
  if (dev.bootloader === 'none') return { kind: 'none', location: undefined, plan: { add: [], remove: [], markBad: [], warnings: [] } };
  const { backend } = await dev.boot();
  if (backend.kind === 'none') return { kind: 'none', location: undefined, plan: { add: [], remove: [], markBad: [], warnings: [] } };
  const facts = await rootFacts(sys, dev.root);

  const list = await dev.store.list();
  const described = new Map<number, SnapshotBoot>();
  const snapshots: SyncSnapshot[] = [];
  for (const s of list) {
    const inProgress = s.userdata[UD.inProgress] === 'yes';
    const d = inProgress ? undefined : await describeSnapshot(facts, s.num);
    if (d) described.set(s.num, d);
    const h = s.userdata[UD.health];
    snapshots.push({ num: s.num, health: h === 'good' || h === 'bad' ? h : 'unknown', inProgress, isDefault: s.isDefault, isMounted: s.isMounted, bootable: d !== undefined });
  }
  const [entries, loaderDefault, trial] = await Promise.all([backend.listEntries(), backend.getDefault(), backend.getTry()]);
  const plan = planBootSync({ snapshots, entries, loaderDefault, trial });
  for (const w of plan.warnings) sys.log.warn(`boot: ${w}`);

  for (const n of plan.remove) {
    sys.log.debug(`boot: removing the ${backend.kind} entry of snapshot ${n}`);
    await backend.removeEntry(n);
  }
  for (const a of plan.add) {
    sys.log.debug(`boot: adding the ${backend.kind} entry of snapshot ${a.num}${a.trial ? ' (on trial)' : ''}`);
    await backend.addEntry(described.get(a.num)!, { trial: a.trial });
  }
  for (const n of plan.markBad) await backend.endTry(n, 'bad');
  if (plan.setDefault) {
    const { num, fallback } = plan.setDefault;
    sys.log.info(`boot: ${backend.kind} boots snapshot ${num} next${fallback !== undefined ? ` (on trial; falls back to snapshot ${fallback})` : ''}`);
    await backend.setDefault(num, fallback !== undefined ? { fallback } : {});
  }
  if (plan.endStaleTry !== undefined) await backend.endTry(plan.endStaleTry, 'good');
  return { kind: backend.kind, location: backend.location, plan };
}
