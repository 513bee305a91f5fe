/**
 * The `snapper` command line, run without D-Bus on a root directory: argv builders, the
 * capability probe and the parser of `snapper --jsonout list`. Everything here is pure except
 * {@link snapperCapabilities} and {@link runSnapper}.
 */
import { z } from '../core/zod.ts';
import { TiuError } from '../core/errors.ts';
import type { RunResult, System } from '../core/system.ts';
import { parseSnapperDate, type SnapshotInfo } from './infoxml.ts';
import { changing } from './btrfs.ts';

import { SNAPPER_CONFIG } from './modes.ts';

export { SNAPPER_CONFIG };

export interface SnapperCapabilities {
  version: string;
  /** `snapper modify --default` (snapper > 0.10.4): sets the btrfs default subvolume. */
  modifyDefault: boolean;
  /** `snapper modify --read-only/--read-write`. */
  modifyReadOnly: boolean;
}

/** The options listed in the `modify` section of `snapper --help`. Pure. */
export function parseSnapperHelp(help: string, versionText: string): SnapperCapabilities {
  const version = /snapper (\d+(?:\.\d+)*)/.exec(versionText)?.[1] ?? 'unknown';
  const start = help.indexOf("Options for 'modify' command:");
  let section = '';
  if (start >= 0) {
    const rest = help.slice(start);
    // The section ends at the next command heading (a line indented by two spaces, not a tab).
    const end = rest.slice(1).search(/\n  \S/);
    section = end < 0 ? rest : rest.slice(0, end + 1);
  }
  return {
    version,
    modifyDefault: /--default\b/.test(section),
    modifyReadOnly: /--read-only\b/.test(section),
  };
}

/** Probes the installed snapper (two cheap commands that touch no config). */
export async function snapperCapabilities(sys: System): Promise<SnapperCapabilities> {
  const version = await sys.run('snapper', ['--version'], { allowFailure: true });
  const help = await sys.run('snapper', ['--help'], { allowFailure: true });
  return parseSnapperHelp(help.stdout + help.stderr, version.stdout);
}

/** Runs `snapper --no-dbus --root <root> -c root <args>`; failures become SNAPSHOT_FAILED. */
export async function runSnapper(sys: System, root: string, args: readonly string[], global: readonly string[] = []): Promise<RunResult> {
  const argv = ['--no-dbus', '--root', root, '-c', SNAPPER_CONFIG, ...global, ...args];
  const r = await changing(() => sys.run('snapper', argv, { allowFailure: true }));
  if (r.exitCode !== 0) {
    const text = (r.stderr || r.stdout).trim().split('\n').filter((l) => !/^(loading \d+ failed|snapshot check failed)/.test(l)).slice(-2).join(' | ');
    throw new TiuError('SNAPSHOT_FAILED', `snapper ${args[0]} failed (exit ${r.exitCode})${text ? `: ${text}` : ''}`, {
      hint: `check the snapper config ${root}/etc/snapper/configs/${SNAPPER_CONFIG}, or use the plain btrfs backend (snapper: 'no')`,
      details: { command: r.command, stderr: r.stderr },
    });
  }
  return r;
}

/** `--userdata` argument: `k=v,k2=v2`; a null or '' value removes the key (snapper modify semantics). */
export function userdataArg(userdata: Record<string, string | null | undefined>): string {
  return Object.entries(userdata).map(([k, v]) => `${k}=${v ?? ''}`).join(',');
}

const jsonSnapshot = z.object({
  number: z.number().int().nonnegative(),
  type: z.enum(['single', 'pre', 'post']),
  'pre-number': z.number().int().positive().nullable().optional(),
  date: z.string(),
  cleanup: z.string().optional().default(''),
  description: z.string().optional().default(''),
  userdata: z.record(z.string(), z.string()).nullable().optional(),
});
const jsonList = z.record(z.string(), z.array(z.looseObject(jsonSnapshot.shape)));

/**
 * Parses `snapper --utc --jsonout list` into info.xml data (snapshot 0, "current", left out).
 * Pure. Throws TOOL_FAILED if the output is not the documented JSON shape.
 */
export function parseSnapperJsonList(text: string): SnapshotInfo[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new TiuError('TOOL_FAILED', 'snapper list did not print JSON', { cause: e });
  }
  const parsed = jsonList.safeParse(data);
  if (!parsed.success) throw new TiuError('TOOL_FAILED', `unexpected JSON from snapper list: ${parsed.error.issues[0]?.message ?? ''}`);
  const rows = parsed.data[SNAPPER_CONFIG];
  if (!rows) throw new TiuError('TOOL_FAILED', `snapper list printed no '${SNAPPER_CONFIG}' config`);
  const out: SnapshotInfo[] = [];
  for (const row of rows) {
    if (row.number === 0) continue;
    const date = parseSnapperDate(row.date);
    if (!date) throw new TiuError('TOOL_FAILED', `snapper list: bad date '${row.date}' for snapshot ${row.number}`);
    const info: SnapshotInfo = {
      num: row.number,
      type: row.type,
      date,
      description: row.description,
      cleanup: row.cleanup,
      userdata: { ...(row.userdata ?? {}) },
    };
    if (row['pre-number'] != null) info.preNum = row['pre-number'];
    out.push(info);
  }
  return out;
}
