/**
 * Re-dating in a child process: an update re-dates thousands of files whose content and other
 * metadata stay as they are (a Debian security update: ~3,500 of its ~4,300 differing paths). Each
 * is a cold metadata lookup in the fresh snapshot plus one utimensat, ~35 µs of kernel work, which
 * on the main thread came one after another ahead of and between the content writes. Here they go
 * to one `sh` running `touch -h -d @<mtime> -- <paths>` (grouped by mtime: a few dozen groups), so
 * that work runs on another core while the main thread writes content.
 *
 * Safety: the paths are relative to the snapshot's root (the child's working directory). Before
 * the child starts, the caller checks every parent directory beneath the root (no symlink, no
 * mount point: {@link SafeRoot}); nothing in the plan turns a directory into something else (the
 * entries re-dated here have the same type on both sides, and so have their parents), and only tiu
 * writes into a new snapshot. `touch -h` never follows the last component and never creates a file
 * (a missing one fails the update). The script is bytes on stdin: names need not be UTF-8.
 *
 * Pure parts ({@link redatable}, {@link redateScript}) are unit-tested; {@link startRedate} runs it.
 */
import type { System } from '../../core/system.ts';
import { TiuError } from '../../core/errors.ts';
import type { IndexEntry } from '../../core/fileindex/types.ts';
import type { MetaField } from './plan.ts';

/** Below this many re-dated entries, the child's start costs more than the calls it takes over. */
export const REDATE_CHILD_MIN = 128;
/** Argument bytes per `touch` run (the kernel's limit for one exec is ~2 MiB with the environment). */
const MAX_ARG_BYTES = 128 * 1024;

/**
 * Whether a `meta` action only sets the mtime of a file or symlink that is not a hardlink follower
 * (a follower's inode is its leader's; it stays with the in-process calls). Pure.
 */
export function redatable(e: IndexEntry, fields: readonly MetaField[]): boolean {
  return fields.length === 1 && fields[0] === 'mtime' && (e.type === 'file' || e.type === 'symlink') && e.hardlink === undefined;
}

/** `p` single-quoted for sh: every byte but `'` stands for itself inside quotes. Pure. */
export function shellQuote(p: Buffer): Buffer {
  return Buffer.from(quoteLatin1(p.toString('latin1')), 'latin1');
}

/** {@link shellQuote} on a byte string (one char per byte). */
function quoteLatin1(p: string): string {
  return `'${p.includes("'") ? p.replaceAll("'", `'\\''`) : p}'`;
}

/**
 * The sh script that gives each entry its mtime (atime the same, as the in-process calls do):
 * `touch -h -d @<seconds> -- './path' …`, one run per mtime and at most {@link MAX_ARG_BYTES} of
 * names, `set -e` so the first failure ends it with touch's message. Deterministic: groups in
 * order of first appearance, paths in the given order. Built as one byte string (paths are byte
 * strings already), turned into bytes once. Pure.
 */
export function redateScript(entries: readonly IndexEntry[], maxArgBytes = MAX_ARG_BYTES): Buffer {
  const byTime = new Map<number, IndexEntry[]>();
  for (const e of entries) {
    if (!Number.isSafeInteger(e.mtime)) throw new TiuError('INTERNAL', `mtime of /${e.path} is not whole seconds: ${e.mtime}`);
    let g = byTime.get(e.mtime);
    if (!g) byTime.set(e.mtime, (g = []));
    g.push(e);
  }
  const out: string[] = ['set -e\n'];
  for (const [t, group] of byTime) {
    const head = `touch -h -d @${t} --`;
    let bytes = 0;
    let open = false;
    for (const e of group) {
      // './': a name beginning with '-' is not an option even without '--' (belt and braces).
      const arg = ' ' + quoteLatin1('./' + e.path);
      if (open && bytes + arg.length > maxArgBytes) {
        out.push('\n');
        open = false;
      }
      if (!open) {
        out.push(head);
        open = true;
        bytes = 0;
      }
      out.push(arg);
      bytes += arg.length;
    }
    if (open) out.push('\n');
  }
  return Buffer.from(out.join(''), 'latin1');
}

export interface RedateRun {
  /** Waits for the child; throws APPLY_FAILED with touch's message if it failed. */
  done(): Promise<void>;
  /** Stops the child (if still running) and waits for it; never throws. */
  stop(): Promise<void>;
}

/**
 * Starts the child that re-dates `entries` below `root` (their parents checked by the caller).
 * The caller must call `done` or `stop` before it lets the snapshot go.
 */
export function startRedate(sys: System, root: string, entries: readonly IndexEntry[]): RedateRun {
  const ac = new AbortController();
  const run = sys.run('sh', ['-s'], { cwd: root, input: redateScript(entries), signal: ac.signal, allowFailure: true });
  // (a rejection is seen by done/stop; until then it must not count as unhandled)
  run.catch(() => {});
  return {
    async done() {
      let r;
      try {
        r = await run;
      } catch (e) {
        throw new TiuError('APPLY_FAILED', `setting the times of ${entries.length} re-dated files failed: ${(e as Error).message}`, { cause: e });
      }
      if (r.exitCode !== 0) {
        const why = r.stderr.trim().split('\n')[0] || `exit code ${r.exitCode}`;
        throw new TiuError('APPLY_FAILED', `setting the times of ${entries.length} re-dated files failed: ${why}`);
      }
    },
    async stop() {
      ac.abort();
      await run.catch(() => {});
    },
  };
}
