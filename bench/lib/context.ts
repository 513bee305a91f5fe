/** What every benchmark phase receives, and small helpers to record rows. */
import { join } from 'node:path';
import type { System } from '../../src/core/system.ts';
import { medians, type Sample } from './stats.ts';
import type { BenchReport, Row } from './types.ts';

export interface Keys {
  key: string;
  cert: string;
  keyring: string;
}

export interface BenchContext {
  sys: System;
  /** The repository checkout (bin/tiu.js lives here). */
  repo: string;
  /** Scratch directory outside the repo; removed at the end. */
  work: string;
  runs: number;
  keys: Keys;
  /** File GNU time writes its report to. */
  timeFile: string;
  report: BenchReport;
  /** Progress line on stderr. */
  say(msg: string): void;
}

/**
 * argv that runs this checkout's tiu with the running (>= 24) Node: the bundle (dist/tiu.mjs, made
 * by run.ts at the start), which is what devices run; BENCH_TIU=source runs bin/tiu.js instead.
 */
export function tiuArgv(ctx: BenchContext, ...args: string[]): string[] {
  return [process.execPath, join(ctx.repo, process.env.BENCH_TIU === 'source' ? 'bin/tiu.js' : 'dist/tiu.mjs'), ...args];
}

/** `arr` rotated left by `i` (alternation: each round starts with another tool). */
export function rotate<T>(arr: readonly T[], i: number): T[] {
  const k = arr.length ? i % arr.length : 0;
  return [...arr.slice(k), ...arr.slice(0, k)];
}

export function newRow(id: string, label: string, extra: Partial<Row> = {}): Row {
  return { id, label, runs: [], median: {}, ...extra };
}

export function addRun(row: Row, s: Sample): void {
  row.runs.push(s);
  row.median = medians(row.runs);
}

/** Marks a row as not measured, keeping the first reason. */
export function failRow(row: Row, err: unknown): void {
  row.error ??= errorText(err);
}

/** One line: the error's message (TiuError messages already carry the tool's last stderr lines). */
export function errorText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/\s+/g, ' ').trim().slice(0, 400);
}
