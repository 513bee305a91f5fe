/**
 * `tiu health-check`'s I/O: the checks (built-ins and plugins), gathering the facts for
 * {@link decideHealth}, and carrying its actions out. Reboot and isolate go through `sys.run`
 * (`systemctl --no-block …`); with `dryRun` (or TIU_HEALTH_DRY=1) they are printed instead, so
 * tests observe the decision without rebooting. Everything else (userdata, default, state
 * file, boot entries) is done for real in a dry run too.
 */
import { access, constants, lstat, mkdir, readdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { System } from '../../core/system.ts';
import { isReadonly } from '../../snapshot/btrfs.ts';
import { mountAt, parseMountinfo } from '../../snapshot/mountinfo.ts';
import type { Device } from '../device/open.ts';
import { UD } from '../device/paths.ts';
import { decideHealth, parseHealthState, renderHealthState, STATE_PATH, type CheckResult, type HealthDecision, type HealthState } from './health.ts';
import { syncBoot, type SyncResult } from './sync.ts';
import { writeFileAtomic } from '../../core/atomic.ts';

/** Plugin directories, relative to the root; a name in /etc replaces the same name in /usr/lib. */
export const PLUGIN_DIRS = ['usr/lib/tiu/health.d', 'etc/tiu/health.d'] as const;

export interface Plugin {
  name: string;
  path: string;
}

/**
 * The plugins of a root: executable regular files in PLUGIN_DIRS, merged by name (later
 * directories win; a symlink to /dev/null disables a name, as in systemd), sorted by name.
 */
export async function listPlugins(root: string): Promise<Plugin[]> {
  const byName = new Map<string, string | null>();
  for (const d of PLUGIN_DIRS) {
    const dir = join(root, d);
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (name.startsWith('.')) continue;
      const p = join(dir, name);
      const l = await lstat(p);
      if (l.isSymbolicLink() && (await realpath(p).catch(() => '')) === '/dev/null') {
        byName.set(name, null);
        continue;
      }
      const st = await stat(p).catch(() => undefined);
      if (!st?.isFile() || (st.mode & 0o111) === 0) continue;
      byName.set(name, p);
    }
  }
  return [...byName.entries()]
    .filter((e): e is [string, string] => e[1] !== null)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([name, path]) => ({ name, path }));
}

/** Runs each plugin as `<plugin> check` with a timeout; exit 0 = healthy. */
export async function runPlugins(sys: System, root: string, timeoutMs: number): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const p of await listPlugins(root)) {
    try {
      const r = await sys.run(p.path, ['check'], { allowFailure: true, timeoutMs, env: { TIU_ROOT: root } });
      const last = (r.stderr.trim() || r.stdout.trim()).split('\n').at(-1) ?? '';
      out.push({ name: `plugin ${p.name}`, ok: r.exitCode === 0, detail: r.exitCode === 0 ? 'exit 0' : `exit ${r.exitCode}${last ? `: ${last}` : ''}` });
    } catch (e) {
      out.push({ name: `plugin ${p.name}`, ok: false, detail: (e as Error).message });
    }
  }
  return out;
}

async function writable(path: string): Promise<{ ok: boolean; why: string }> {
  try {
    await access(path, constants.W_OK);
    return { ok: true, why: 'writable' };
  } catch (e) {
    return { ok: false, why: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
}

/** Whether systemd runs this machine (sd_booted(3): /run/systemd/system exists). */
async function systemdBooted(): Promise<boolean> {
  return (await lstat('/run/systemd/system').catch(() => undefined))?.isDirectory() ?? false;
}

/**
 * The built-in checks: no failed systemd units (only when systemd is PID 1 and the root is
 * the running system), /var mounted and writable, /etc writable, the root snapshot read-only.
 */
export async function builtinChecks(sys: System, root: string): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const realRoot = await realpath(root);
  if (realRoot === '/' && (await systemdBooted())) {
    const r = await sys.run('systemctl', ['--failed', '--plain', '--no-legend', '--no-pager'], { allowFailure: true });
    const units = r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter((u) => u && u !== 'tiu-health.service');
    out.push(r.exitCode !== 0 ? { name: 'failed units', ok: false, detail: `systemctl failed: ${r.stderr.trim()}` } : { name: 'failed units', ok: units.length === 0, detail: units.length ? units.join(', ') : 'none' });
  } else {
    out.push({ name: 'failed units', ok: true, skipped: true, detail: realRoot === '/' ? 'systemd is not running' : `not checked for --root ${root}` });
  }

  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const varPath = join(realRoot, 'var');
  const varMount = mountAt(mounts, varPath);
  const varW = await writable(varPath);
  out.push({ name: '/var', ok: !!varMount && varW.ok, detail: !varMount ? `${varPath} is not a mount point` : varW.ok ? `mounted (${varMount.root})` : `not writable: ${varW.why}` });

  const etcW = await writable(join(realRoot, 'etc'));
  out.push({ name: '/etc', ok: etcW.ok, detail: etcW.ok ? 'writable' : `not writable: ${etcW.why}` });

  let ro: boolean | undefined;
  try {
    ro = await isReadonly(sys, realRoot);
  } catch (e) {
    out.push({ name: 'read-only root', ok: false, detail: `cannot read the ro property of ${realRoot}: ${(e as Error).message}` });
  }
  if (ro !== undefined) out.push({ name: 'read-only root', ok: ro, detail: ro ? 'the snapshot subvolume is read-only' : 'the root snapshot is writable (ro=false): it was modified outside tiu' });
  return out;
}

export async function readHealthState(sys: System, root: string): Promise<HealthState | undefined> {
  const text = await readFile(join(root, STATE_PATH), 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return parseHealthState(text);
  } catch (e) {
    sys.log.warn(`ignoring ${join(root, STATE_PATH)}: ${(e as Error).message}`);
    return undefined;
  }
}

export interface HealthRunOptions {
  /** Print reboot/isolate instead of running them. */
  dryRun: boolean;
  /** Kernel command line (tiu.health.reboot=0); read from /proc/cmdline by the command. */
  rebootAllowed: boolean;
  pluginTimeoutMs: number;
  /** Where progress and the decision are written (console/journal). */
  say: (line: string) => void;
  now?: Date;
}

export interface HealthRunResult {
  checks: CheckResult[];
  decision: HealthDecision;
  sync: SyncResult | undefined;
}

/** Runs a command that changes what the machine does, or prints it in a dry run. */
async function act(sys: System, o: HealthRunOptions, argv: string[]): Promise<void> {
  if (o.dryRun) {
    o.say(`health-check: dry run: would run: ${argv.join(' ')}`);
    return;
  }
  await sys.run(argv[0]!, argv.slice(1));
}

/** Checks, decides and acts (see health.ts) on `dev`, opened with its lock. */
export async function runHealthCheck(dev: Device, o: HealthRunOptions): Promise<HealthRunResult> {
  const { sys, store, root } = dev;
  const { backend } = await dev.boot();

  const checks = [...(await builtinChecks(sys, root)), ...(await runPlugins(sys, root, o.pluginTimeoutMs))];
  for (const c of checks) o.say(`health-check: ${c.skipped ? 'skip' : c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);

  const decision = decideHealth(
    {
      snapshots: await dev.facts(),
      checks,
      trial: await backend.getTry(),
      state: await readHealthState(sys, root),
      rebootAllowed: o.rebootAllowed,
    },
    o.now ?? new Date(),
  );
  for (const m of decision.messages) o.say(`health-check: ${m}`);

  let sync: SyncResult | undefined;
  const statePath = join(root, STATE_PATH);
  for (const a of decision.actions) {
    switch (a.kind) {
      case 'mark':
        await store.setUserdata(a.num, { [UD.health]: a.health });
        break;
      case 'end-try':
        await backend.endTry(a.num, a.outcome);
        break;
      case 'set-default':
        await store.setDefault(a.num);
        break;
      case 'write-state':
        await mkdir(join(statePath, '..'), { recursive: true, mode: 0o755 });
        await writeFileAtomic(statePath, renderHealthState(a.state));
        break;
      case 'remove-state':
        await rm(statePath, { force: true });
        break;
      case 'reboot':
        // The boot entries must follow the new default before the machine goes down.
        sync = await syncBoot(dev);
        await act(sys, o, ['systemctl', '--no-block', 'reboot']);
        break;
      case 'emergency':
        o.say('health-check: *** the system failed its health check; see the messages above ***');
        await act(sys, o, ['systemctl', '--no-block', 'isolate', 'emergency.target']);
        break;
    }
  }
  // Entries for new/deleted snapshots, the loader default = btrfs default (unless done above).
  if (!sync) {
    try {
      sync = await syncBoot(dev);
    } catch (e) {
      if (decision.verdict === 'healthy') throw e;
      sys.log.warn(`could not update the boot entries: ${(e as Error).message}`);
    }
  }
  return { checks, decision, sync };
}

