/**
 * Where a `tiu --debug` run spends its time, from its stderr lines stamped on arrival. Pure.
 * Phases come from tiu's non-TTY progress lines ("verifying: 0%"), when it prints them; commands
 * from the "debug: run: X" / "debug: exit N: X" pairs; in-process work from the silences.
 */

export interface StampedLine {
  /** Seconds since the process was started. */
  t: number;
  line: string;
}

export interface Breakdown {
  totalS: number;
  /**
   * In order; the first one is everything before the first progress line. Only in the JSON:
   * tiu prints progress lines sparsely (sometimes only "100%"), so they mislead as a table.
   */
  phases: { name: string; s: number }[];
  /** The slowest external commands. */
  slowest: { command: string; s: number }[];
  /** Time spent in external commands (sum, overlapping ones counted each). */
  commandsS: number;
  commands: number;
  /**
   * The longest silences between two consecutive stderr lines (process start and exit count as
   * lines): in-process work lies between the line before and the line after.
   */
  gaps: { after: string; before: string; s: number }[];
}

export function breakdown(lines: readonly StampedLine[], totalS: number, top = 6): Breakdown {
  const marks: { name: string; t: number }[] = [{ name: '(before the first progress line)', t: 0 }];
  const open = new Map<string, number[]>();
  const done: { command: string; s: number }[] = [];
  for (const { t, line } of lines) {
    const p = /^([a-z][\w /-]*): \d+%$/.exec(line);
    if (p && marks[marks.length - 1]!.name !== p[1]) marks.push({ name: p[1]!, t });
    const run = /^tiu: debug: run: (.*)$/.exec(line);
    if (run) open.set(run[1]!, [...(open.get(run[1]!) ?? []), t]);
    const exit = /^tiu: debug: exit [^:]+: (.*)$/.exec(line);
    if (exit) {
      const starts = open.get(exit[1]!);
      const t0 = starts?.shift();
      if (t0 !== undefined) done.push({ command: exit[1]!, s: t - t0 });
    }
  }
  const phases = marks.map((m, i) => ({ name: m.name, s: (marks[i + 1]?.t ?? totalS) - m.t }));
  const seq = [{ t: 0, line: '(process start)' }, ...lines, { t: totalS, line: '(process exit)' }];
  const gaps = seq.slice(1).map((l, i) => ({ after: seq[i]!.line, before: l.line, s: l.t - seq[i]!.t }));
  return {
    totalS,
    phases,
    slowest: [...done].sort((a, b) => b.s - a.s).slice(0, top),
    commandsS: done.reduce((a, c) => a + c.s, 0),
    commands: done.length,
    gaps: gaps.sort((a, b) => b.s - a.s).slice(0, top),
  };
}
