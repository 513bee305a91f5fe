/**
 * Running a procedure (one or more commands) under GNU time and turning it into a Sample.
 * Side effects: runs the commands; writes GNU time's report to `reportFile`.
 */
import { readFile } from 'node:fs/promises';
import type { System } from '../../src/core/system.ts';
import { parseTimeReport } from './timev.ts';
import type { Sample } from './stats.ts';

export const GNU_TIME = '/usr/bin/time';

/** One command of a procedure. */
export interface Step {
  argv: string[];
  cwd?: string;
}

export interface TimedResult {
  sample: Sample;
  /** stdout of each step, in order. */
  stdout: string[];
}

/** 1-minute load average (first field of /proc/loadavg). */
export async function load1(): Promise<number> {
  return Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[0]);
}

/** Seconds after which a step is killed (a hung tool must not stall the whole benchmark). */
export const STEP_TIMEOUT_S = Number(process.env.BENCH_STEP_TIMEOUT ?? 900);

/**
 * Runs the steps one after the other, each as `/usr/bin/time -v timeout … <step>`. Wall time is
 * measured here around each spawn (GNU time's own has 10 ms resolution); memory is the largest
 * process of all steps; CPU and write_bytes are summed. Throws, with the end of stderr, if a step
 * fails or runs longer than STEP_TIMEOUT_S.
 */
export async function runTimed(sys: System, steps: readonly Step[], reportFile: string, timeoutS = STEP_TIMEOUT_S): Promise<TimedResult> {
  const out: Sample = { wallS: 0, cpuS: 0, maxRssKiB: 0, procWriteBytes: 0, load1: await load1() };
  const stdout: string[] = [];
  for (const step of steps) {
    const [file, ...args] = step.argv;
    if (!file) throw new Error('empty step');
    const t0 = performance.now();
    const r = await sys.run(GNU_TIME, ['-v', '-o', reportFile, 'timeout', '-k', '10', String(timeoutS), file, ...args], { allowFailure: true, ...(step.cwd ? { cwd: step.cwd } : {}) });
    out.wallS += (performance.now() - t0) / 1000;
    if (r.exitCode !== 0) {
      const tail = (r.stderr || r.stdout).split('\n').filter((l) => l.trim() && !/^Command (exited|terminated)/.test(l)).slice(-3).join(' | ');
      throw new Error(r.exitCode === 124 || r.exitCode === 137
        ? `${file} ${args[0] ?? ''} timed out after ${timeoutS} s (killed)`
        : `${file} ${args.slice(0, 2).join(' ')} failed (exit ${r.exitCode}): ${tail}`);
    }
    const rep = parseTimeReport(await readFile(reportFile, 'utf8'));
    out.cpuS += rep.userS + rep.sysS;
    out.maxRssKiB = Math.max(out.maxRssKiB, rep.maxRssKiB);
    out.procWriteBytes += rep.fsOutputs * 512;
    stdout.push(r.stdout);
  }
  return { sample: out, stdout };
}

/** Adds up samples of procedures run one after the other (e.g. mksquashfs then veritysetup). */
export function sumSamples(parts: readonly Sample[]): Sample {
  if (parts.length === 0) throw new Error('sumSamples: nothing to add');
  const add = (k: 'devWriteBytes' | 'growthBytes' | 'exclusiveBytes') =>
    parts.every((p) => p[k] !== undefined) ? parts.reduce((a, p) => a + p[k]!, 0) : undefined;
  const s: Sample = {
    wallS: parts.reduce((a, p) => a + p.wallS, 0),
    cpuS: parts.reduce((a, p) => a + p.cpuS, 0),
    maxRssKiB: Math.max(...parts.map((p) => p.maxRssKiB)),
    procWriteBytes: parts.reduce((a, p) => a + p.procWriteBytes, 0),
    load1: parts[0]!.load1,
  };
  for (const k of ['devWriteBytes', 'growthBytes', 'exclusiveBytes'] as const) {
    const v = add(k);
    if (v !== undefined) s[k] = v;
  }
  return s;
}
