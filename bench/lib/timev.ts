/**
 * Parsing GNU time's `-v` report (`/usr/bin/time -v -o FILE cmd …`). Pure.
 *
 * What the kernel gives GNU time (wait4 rusage of the command and every descendant it waited for):
 * - "Maximum resident set size" is the MAXIMUM over the processes of the tree, each counted
 *   alone (Linux `ru_maxrss` of RUSAGE_CHILDREN), not their sum. For `node tiu.js` the Node
 *   process is normally the largest, so this is "peak memory including Node".
 * - "File system outputs" is the SUM over the tree of `/proc/<pid>/io` write_bytes / 512
 *   (`ru_oublock` is write_bytes >> 9): bytes the tree caused to be written to block devices,
 *   counted when pages are dirtied.
 */

export interface TimeReport {
  /** Wall time as GNU time reports it (10 ms resolution). */
  wallS: number;
  userS: number;
  sysS: number;
  maxRssKiB: number;
  /** 512-byte units, see the module comment. */
  fsOutputs: number;
  fsInputs: number;
  exitStatus: number;
}

function field(text: string, label: string): string {
  const re = new RegExp(`^\\s*${label.replace(/[()]/g, '\\$&')}:\\s*(.+)$`, 'm');
  const m = re.exec(text);
  if (!m) throw new Error(`GNU time report has no '${label}' line:\n${text.slice(0, 2000)}`);
  return m[1]!.trim();
}

function num(text: string, label: string): number {
  const v = Number(field(text, label));
  if (!Number.isFinite(v)) throw new Error(`GNU time report: '${label}' is not a number`);
  return v;
}

/** "h:mm:ss" or "m:ss.cc" -> seconds. */
export function parseElapsed(s: string): number {
  const parts = s.split(':').map(Number);
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !Number.isFinite(p))) throw new Error(`bad elapsed time '${s}'`);
  return parts.reduce((acc, p) => acc * 60 + p, 0);
}

/** Parses the `-v` report; throws if a field is missing (a different `time` was run). */
export function parseTimeReport(text: string): TimeReport {
  return {
    wallS: parseElapsed(field(text, 'Elapsed (wall clock) time (h:mm:ss or m:ss)')),
    userS: num(text, 'User time (seconds)'),
    sysS: num(text, 'System time (seconds)'),
    maxRssKiB: num(text, 'Maximum resident set size (kbytes)'),
    fsOutputs: num(text, 'File system outputs'),
    fsInputs: num(text, 'File system inputs'),
    exitStatus: num(text, 'Exit status'),
  };
}
