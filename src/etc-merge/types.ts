/**
 * Data types of the /etc three-way merge: the scanned entries, the plan (what to do per path)
 * and the report (what was done, JSON-serializable).
 *
 * Paths are byte strings relative to the etc directory (see `src/core/fileindex/types.ts`):
 * raw name bytes decoded as latin1, no leading slash, `.` for the etc directory itself.
 */
import type { IndexEntry } from '../core/fileindex/types.ts';

/**
 * One path of an etc tree. The shared index entry type: `mtime` is filled by the scanner but
 * never compared (two builds of the same file differ in mtime only); `hardlink` and `sparse`
 * are not used.
 */
export type EtcEntry = IndexEntry;

/** A scanned etc tree: byte-string path -> entry. */
export type EtcTree = ReadonlyMap<string, EtcEntry>;

/** The three inputs of the merge: base (old vendor /etc), local (running /etc), new (new vendor /etc). */
export type EtcSide = 'base' | 'local' | 'new';

/**
 * File contents for text merges, by side and path; undefined if not available.
 * May be sync or async. Called only for regular files both sides changed (and for the
 * account files), never for more than {@link TEXT_MAX_BYTES} per file.
 */
export type ContentSource = (side: EtcSide, path: string) => Buffer | undefined | Promise<Buffer | undefined>;

/** Largest file the text merge considers (larger files are treated as binary). */
export const TEXT_MAX_BYTES = 1024 * 1024;

/** Suffix of the vendor version written beside a path on a conflict. */
export const TIUNEW_SUFFIX = '.tiunew';

/** Metadata attributes merged independently of content. */
export type MetaField = 'mode' | 'owner' | 'xattrs';

/** Which side a decision took: the device's, or both sides' changes combined. */
export type Source = 'local' | 'both';

/**
 * One decision of the plan. The result directory starts as a copy of *new*, so every action is
 * a change relative to new's version of `path`.
 *
 * - `take-new`: the vendor's version stays (nothing to do). With `subtree`, for everything below too.
 * - `keep-local`: install local's version (`entry`, with merged metadata) over it; for a directory,
 *   its whole subtree (`descendants`, local's entries) replaces new's subtree.
 * - `delete`: remove the path (and everything below it).
 * - `merged`: write `content` (a clean three-way merge) with `entry`'s metadata.
 * - `meta`: keep new's content, set `entry`'s mode/owner/xattrs (`fields` differ from new's; `before` is new's entry).
 * - `conflict`: keep local's version (`keep: 'local'`, installed like keep-local) or keep the path
 *   deleted (`keep: 'deleted'`), and write new's version beside it as `tiunew` (absent when the vendor
 *   deleted the path: there is nothing to write).
 *
 * `notes` are conflicts resolved in local's favour at a finer level (a mode both sides changed,
 * an account field): they go into the report's conflicts without a `.tiunew`.
 */
export type EtcAction =
  | { op: 'take-new'; path: string; reason: string; subtree: boolean; notes?: string[] }
  | { op: 'keep-local'; path: string; reason: string; entry: EtcEntry; descendants: EtcEntry[]; source: Source; notes?: string[] }
  | { op: 'delete'; path: string; reason: string; notes?: string[] }
  | { op: 'merged'; path: string; reason: string; entry: EtcEntry; content: Buffer; notes?: string[] }
  | { op: 'meta'; path: string; reason: string; entry: EtcEntry; before: EtcEntry; fields: MetaField[]; source: Source; notes?: string[] }
  | {
      op: 'conflict';
      path: string;
      reason: string;
      keep: 'local' | 'deleted';
      /** keep=local: local's entry and (for a directory) its descendants, installed like keep-local. */
      entry?: EtcEntry;
      descendants: EtcEntry[];
      /** new's version, written at `tiunew.path` (its descendants renamed below it). */
      tiunew?: { path: string; entry: EtcEntry; descendants: EtcEntry[] };
      notes?: string[];
    };

export interface EtcPlan {
  /** Actions in tree order (a directory before its children); no two touch the same path. */
  actions: EtcAction[];
  /** Paths identical on all three sides (nothing to do, not reported one by one). */
  unchanged: number;
}

export interface EtcConflictRecord {
  path: string;
  reason: string;
  /** Where the vendor's version was written, if it was. */
  tiunew?: string;
}

/** What a merge did (or would do), as display strings: JSON-serializable. */
export interface EtcMergeReport {
  /** Paths where the vendor's new version was taken (the device had not changed them). */
  takenFromVendor: string[];
  /** Paths where the device's version was kept. */
  keptLocal: string[];
  /** Paths whose result combines both sides (text merge, account merge, metadata merge). */
  merged: string[];
  deleted: string[];
  conflicts: EtcConflictRecord[];
}

/** One local change of /etc relative to the vendor's (for `tiu etc diff`). */
export interface EtcChange {
  path: string;
  change: 'added' | 'modified' | 'deleted';
  /** For `modified`: what differs. */
  what?: ('type' | 'content' | 'target' | MetaField)[];
}
