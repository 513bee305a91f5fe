/**
 * The health check's decisions, as data (pure): given the snapshots, the check results, the
 * bootloader's trial state and the state file, what to do. health-run.ts gathers the facts and
 * carries the actions out.
 *
 * Rules (after openSUSE's health-checker):
 *  - Healthy: the booted snapshot is marked `tiu-health=good`, its boot trial ends (GRUB flag
 *    cleared / BLS entry blessed), the state file is removed.
 *  - Unhealthy on a snapshot that never booted healthy, and no rollback recorded yet: it is marked
 *    `tiu-health=bad`, the last good snapshot becomes the default, the state file records the
 *    rollback, and the machine reboots once (unless `tiu.health.reboot=0`).
 *  - Unhealthy otherwise (a snapshot that was good before, or a second failure after a rollback,
 *    or nothing to roll back to): no reboot — the machine stops in emergency.target with a
 *    message on the console, so it cannot loop.
 *  - Before that: if the loader was trying the default snapshot and fell back to the booted one
 *    (the default did not even reach the health check), the default is marked bad and the booted
 *    snapshot becomes the default.
 */
import { TiuError } from '../../core/errors.ts';
import { rollbackTarget, health, type SnapshotFacts } from '../device/policy.ts';
import { UD } from '../device/paths.ts';
import type { BootTry } from './types.ts';

/** What the state file remembers between boots. */
export interface HealthState {
  /** The snapshot that failed and was rolled back from. */
  rolledBackFrom: number;
  rolledBackTo: number;
  /** ISO date of the rollback. */
  date: string;
}

export const STATE_PATH = 'var/lib/tiu/health.state';

/** Renders the state file (KEY=VALUE lines, readable from a shell or GRUB-free scripts). */
export function renderHealthState(s: HealthState): string {
  return `# tiu health-check: a failed snapshot was rolled back; removed after the next healthy boot\nROLLED_BACK_FROM=${s.rolledBackFrom}\nROLLED_BACK_TO=${s.rolledBackTo}\nDATE=${s.date}\n`;
}

/** Parses the state file strictly; INPUT_INVALID names the first bad line. */
export function parseHealthState(text: string): HealthState {
  if (text.length > 4096) throw new TiuError('INPUT_INVALID', 'the health state file is larger than 4 KiB');
  const v: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(ROLLED_BACK_FROM|ROLLED_BACK_TO|DATE)=(.*)$/.exec(line);
    if (!m) throw new TiuError('INPUT_INVALID', `health state file line ${i + 1}: unexpected '${line.slice(0, 60)}'`);
    v[m[1]!] = m[2]!;
  }
  const n = (k: string) => {
    const s = v[k];
    if (s === undefined || !/^[1-9]\d{0,9}$/.test(s)) throw new TiuError('INPUT_INVALID', `health state file: ${k} is missing or not a snapshot number`);
    return Number(s);
  };
  return { rolledBackFrom: n('ROLLED_BACK_FROM'), rolledBackTo: n('ROLLED_BACK_TO'), date: v.DATE ?? '' };
}

/** Whether the kernel command line allows the automatic reboot (`tiu.health.reboot=0` disables it). */
export function rebootAllowedByCmdline(cmdline: string): boolean {
  let allowed = true;
  for (const w of cmdline.split(/\s+/)) {
    const m = /^tiu\.health\.reboot=(.*)$/.exec(w);
    if (m) allowed = !/^(0|no|false|off)$/i.test(m[1]!);
  }
  return allowed;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  /** Why it failed, or what was checked. */
  detail: string;
  skipped?: boolean;
}

export interface HealthInput {
  snapshots: readonly SnapshotFacts[];
  checks: readonly CheckResult[];
  trial: BootTry | undefined;
  state: HealthState | undefined;
  rebootAllowed: boolean;
}

export type HealthAction =
  | { kind: 'mark'; num: number; health: 'good' | 'bad' }
  | { kind: 'end-try'; num: number; outcome: 'good' | 'bad' }
  | { kind: 'set-default'; num: number }
  | { kind: 'write-state'; state: HealthState }
  | { kind: 'remove-state' }
  | { kind: 'reboot' }
  | { kind: 'emergency' };

export type Verdict = 'healthy' | 'rolled-back' | 'emergency' | 'not-a-snapshot';

export interface HealthDecision {
  verdict: Verdict;
  /** The booted snapshot, if the root is one. */
  booted: number | undefined;
  actions: HealthAction[];
  /** Lines for the console/journal explaining the decision. */
  messages: string[];
}

/** The newest good snapshot other than `exclude` (finished), else rollbackTarget's choice. */
function lastGood(list: readonly SnapshotFacts[], exclude: number): number | undefined {
  const finished = list.filter((s) => s.num !== exclude && s.userdata[UD.inProgress] !== 'yes');
  const good = finished.filter((s) => health(s) === 'good').sort((a, b) => b.num - a.num)[0];
  if (good) return good.num;
  // rollbackTarget thinks from the default: present the failed snapshot as the default.
  const asDefault = list.map((s) => ({ ...s, isDefault: s.num === exclude, isMounted: s.num === exclude }));
  try {
    const t = rollbackTarget(asDefault, undefined, false);
    return t === exclude ? undefined : t;
  } catch {
    return undefined;
  }
}

/** Decides (pure). `now` is the date recorded in a new state file. */
export function decideHealth(input: HealthInput, now: Date): HealthDecision {
  const list = input.snapshots;
  const booted = list.find((s) => s.isMounted);
  const actions: HealthAction[] = [];
  const messages: string[] = [];
  const failed = input.checks.filter((c) => !c.ok && !c.skipped);
  if (!booted) {
    messages.push('the root is not a booted tiu snapshot: nothing to mark');
    return { verdict: failed.length ? 'emergency' : 'not-a-snapshot', booted: undefined, actions: failed.length ? [{ kind: 'emergency' }] : [], messages };
  }
  const b = booted.num;
  const def = list.find((s) => s.isDefault);
  const marks = new Map(list.map((s) => [s.num, health(s)]));

  // The loader gave up on the default and booted us instead: the default never got this far.
  const t = input.trial;
  if (t && def && t.num === def.num && t.num !== b && t.triesLeft === 0 && marks.get(t.num) !== 'bad') {
    messages.push(`snapshot ${t.num} did not boot (the boot loader used up its tries and fell back to snapshot ${b}); marking it bad`);
    actions.push({ kind: 'mark', num: t.num, health: 'bad' }, { kind: 'end-try', num: t.num, outcome: 'bad' }, { kind: 'set-default', num: b });
    marks.set(t.num, 'bad');
  }

  if (failed.length === 0) {
    if (marks.get(b) !== 'good') actions.push({ kind: 'mark', num: b, health: 'good' });
    actions.push({ kind: 'end-try', num: b, outcome: 'good' });
    if (input.state) actions.push({ kind: 'remove-state' });
    messages.push(`snapshot ${b} is healthy`);
    return { verdict: 'healthy', booted: b, actions, messages };
  }

  for (const c of failed) messages.push(`check failed: ${c.name}: ${c.detail}`);
  const isNew = marks.get(b) === 'unknown';
  const target = isNew && !input.state ? lastGood(list.filter((s) => marks.get(s.num) !== 'bad' || s.num === b), b) : undefined;
  if (target !== undefined) {
    actions.push(
      { kind: 'mark', num: b, health: 'bad' },
      { kind: 'end-try', num: b, outcome: 'bad' },
      { kind: 'set-default', num: target },
      { kind: 'write-state', state: { rolledBackFrom: b, rolledBackTo: target, date: now.toISOString() } },
    );
    messages.push(`snapshot ${b} failed its first health check: marked bad; snapshot ${target} is the default again`);
    if (input.rebootAllowed) {
      actions.push({ kind: 'reboot' });
      messages.push(`rebooting into snapshot ${target}`);
    } else {
      messages.push(`not rebooting (tiu.health.reboot=0): reboot to boot snapshot ${target}`);
    }
    return { verdict: 'rolled-back', booted: b, actions, messages };
  }

  if (input.state) messages.push(`snapshot ${input.state.rolledBackFrom} was already rolled back to snapshot ${input.state.rolledBackTo} (${input.state.date}); not rebooting again`);
  else if (!isNew) messages.push(`snapshot ${b} passed its health check before; not rolling back`);
  else messages.push(`there is no earlier good snapshot to roll back to`);
  messages.push('stopping in emergency mode: log in on the console, fix the failed checks (or tiu rollback), then reboot');
  actions.push({ kind: 'emergency' });
  return { verdict: 'emergency', booted: b, actions, messages };
}
