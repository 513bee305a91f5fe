/**
 * The update plan: what one update does, decided before any byte is written. `tiu extract
 * --dry-run` prints it; the real run carries out the same value (computed by the same function,
 * on the same inputs: the target index, the base's state, the base's vendor /etc and its local
 * /etc — live for the dry run, frozen in the syncpoint for the real run).
 */
import type { System } from '../../core/system.ts';
import { planApply, type ApplyPlan } from '../apply/plan.ts';
import { displayPath, type IndexEntry } from '../../core/fileindex/types.ts';
import { formatPlan } from '../../etc-merge/report.ts';
import { fillDigests, scanActual } from './state.ts';
import { excludedMatcher, protectedMatcher } from './paths.ts';
import { trustedActual, type ProbeCounts } from './trusted.ts';
import { planLines } from './plan-lines.ts';
import { planEtcStep, type EtcStepPlan } from './etc.ts';

export interface UpdatePlan {
  /** The tree step: what makes the snapshot equal to the image. */
  apply: ApplyPlan;
  /** How the snapshot's state was read (trusted index or full scan). */
  probe: ProbeCounts;
  /**
   * The /etc step; undefined for a delta (its image is never mounted, so the new /etc's contents
   * exist only once the tree step wrote them: the real run plans /etc right after that step).
   */
  etc: EtcStepPlan | undefined;
}

export interface PlanUpdateOptions {
  /** The tree the image is applied to (the base for a dry run, its new snapshot for the real run). */
  treeDir: string;
  /** The base's trusted index, when it has one (only differing paths are read). */
  oldIndex: IndexEntry[] | undefined;
  target: IndexEntry[];
  excluded: readonly string[];
  /** The /etc sides; omitted for a delta (see {@link UpdatePlan.etc}). */
  etc?: { baseDir: string; localDir: string; newContentRoot: string };
}

/** Computes the update plan. Reads only. */
export async function planUpdate(sys: System, o: PlanUpdateOptions): Promise<UpdatePlan> {
  // (--debug: where the plan's time goes)
  const t0 = performance.now();
  const mark = (what: string) => sys.log.debug(`plan: ${what} after ${(performance.now() - t0).toFixed(0)} ms`);
  const { actual, counts } = await actualState(sys, o.treeDir, o.oldIndex, o.target, o.excluded);
  await fillDigests(o.treeDir, actual, o.target, o.oldIndex);
  mark(`the tree's state read (${counts.mode}, ${counts.pathsRead} paths)`);
  const apply = planApply(o.target, actual, { isExcluded: excludedMatcher(o.excluded), isProtected: protectedMatcher(o.excluded) });
  mark('tree step planned');
  const etc = o.etc ? await planEtcStep(sys, { ...o.etc, target: o.target }) : undefined;
  if (etc) mark('/etc merge planned');
  return { apply, probe: counts, etc };
}

/** The /etc lines of a plan (one per action, then a summary). */
export function etcPlanLines(plan: UpdatePlan): string[] {
  return plan.etc ? formatPlan(plan.etc.plan) : ['(not shown for a delta: its image is never mounted)'];
}

/** The dry-run listing: the tree step, then the /etc merge (`etc`: its lines when not the plan's). Pure. */
export function updatePlanLines(plan: UpdatePlan, etc: string[] = etcPlanLines(plan)): string[] {
  return [...planLines(plan.apply, displayPath), '', '/etc merge:', ...etc];
}

/**
 * The snapshot's actual state for the planner: from the base's trusted index (volatile places and
 * differing paths read for real), or, without one, a full scan.
 */
async function actualState(sys: System, dir: string, oldIndex: IndexEntry[] | undefined, target: IndexEntry[], excluded: readonly string[]): Promise<{ actual: Map<string, IndexEntry>; counts: ProbeCounts }> {
  if (oldIndex) return trustedActual(sys, dir, oldIndex, target, { exclude: excluded });
  const actual = await scanActual(sys, dir, { exclude: excluded });
  return { actual, counts: { mode: 'full-scan', pathsRead: actual.size } };
}
