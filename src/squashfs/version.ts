/**
 * Detecting the installed squashfs-tools version, because flags differ between releases
 * (4.5.1 in Debian bookworm; 4.6 adds `-percentage` and unsquashfs `-full-precision`).
 */
import { TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';

export interface SquashfsToolsVersion {
  major: number;
  minor: number;
  patch: number;
  /** The first line the tool printed, e.g. `mksquashfs version 4.5.1 (2022/03/17)`. */
  raw: string;
}

/** Parses `mksquashfs -version` / `unsquashfs -version` output. Pure; undefined if unrecognised. */
export function parseSquashfsVersion(text: string): SquashfsToolsVersion | undefined {
  const line = text.split('\n').find((l) => /version\s+\d/.test(l));
  if (!line) return undefined;
  const m = /version\s+(\d+)\.(\d+)(?:\.(\d+))?/.exec(line);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0), raw: line.trim() };
}

/** Compares dotted versions numerically: negative if a < b, 0 if equal, positive if a > b. */
export function compareVersions(a: Pick<SquashfsToolsVersion, 'major' | 'minor' | 'patch'>, b: Pick<SquashfsToolsVersion, 'major' | 'minor' | 'patch'>): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch;
}

/** Parses `x.y` or `x.y.z` (a minimum given by a caller). Throws INTERNAL on a malformed literal. */
export function parseMinimum(minimum: string): { major: number; minor: number; patch: number } {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?$/.exec(minimum);
  if (!m) throw new TiuError('INTERNAL', `malformed minimum version '${minimum}'`);
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0) };
}

/** True when `v` is at least `minimum` (`x.y[.z]`). */
export function atLeast(v: SquashfsToolsVersion, minimum: string): boolean {
  return compareVersions(v, parseMinimum(minimum)) >= 0;
}

function format(v: SquashfsToolsVersion): string {
  return v.patch ? `${v.major}.${v.minor}.${v.patch}` : `${v.major}.${v.minor}`;
}

const cache = new WeakMap<System, Map<string, Promise<SquashfsToolsVersion>>>();

async function detect(sys: System, tool: 'mksquashfs' | 'unsquashfs'): Promise<SquashfsToolsVersion> {
  // Throws TOOL_MISSING when the binary is not installed. Old releases exit non-zero on -version.
  const r = await sys.run(tool, ['-version'], { allowFailure: true });
  const v = parseSquashfsVersion(r.stdout) ?? parseSquashfsVersion(r.stderr);
  if (!v) {
    throw new TiuError('TOOL_FAILED', `cannot determine the version of ${tool}: unexpected output '${(r.stdout || r.stderr).split('\n')[0] ?? ''}'`, {
      hint: 'install squashfs-tools 4.4 or newer from your distribution',
      details: { command: r.command, stdout: r.stdout, stderr: r.stderr },
    });
  }
  return v;
}

function cached(sys: System, tool: 'mksquashfs' | 'unsquashfs'): Promise<SquashfsToolsVersion> {
  let perSys = cache.get(sys);
  if (!perSys) cache.set(sys, (perSys = new Map()));
  let p = perSys.get(tool);
  if (!p) {
    p = detect(sys, tool);
    // A failed detection (e.g. not installed yet) must not be remembered.
    p.catch(() => perSys!.delete(tool));
    perSys.set(tool, p);
  }
  return p;
}

/**
 * The version of the installed squashfs-tools (the lower of mksquashfs and unsquashfs, which
 * normally come from one package). Runs `-version` once per System and caches the answer.
 * Throws TOOL_MISSING if either tool is not installed, TOOL_FAILED if the output is unrecognised.
 */
export async function squashfsToolsVersion(sys: System): Promise<SquashfsToolsVersion> {
  const [mk, un] = await Promise.all([cached(sys, 'mksquashfs'), cached(sys, 'unsquashfs')]);
  return compareVersions(mk, un) <= 0 ? mk : un;
}

/**
 * Ensures squashfs-tools at least `minimum` are installed and returns their version.
 * Throws TOOL_MISSING when not installed or too old ("too old (4.3), need ≥ 4.4").
 */
export async function requireSquashfsTools(sys: System, minimum = '4.4'): Promise<SquashfsToolsVersion> {
  const v = await squashfsToolsVersion(sys);
  if (!atLeast(v, minimum)) {
    throw new TiuError('TOOL_MISSING', `squashfs-tools too old (${format(v)}), need ≥ ${minimum}`, {
      hint: `install squashfs-tools ${minimum} or newer (Debian/Ubuntu: apt-get install squashfs-tools; openSUSE: zypper install squashfs)`,
      details: { version: v.raw },
    });
  }
  return v;
}
