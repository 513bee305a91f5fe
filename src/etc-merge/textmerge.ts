/**
 * Three-way line merge of text files (node-diff3). Pure.
 *
 * A file is text when it is at most {@link TEXT_MAX_BYTES} long, contains no NUL byte and is
 * valid UTF-8. Anything else is binary and never line-merged.
 */
import { diff3Merge } from 'node-diff3';
import { TEXT_MAX_BYTES } from './types.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function isText(b: Buffer): boolean {
  if (b.length > TEXT_MAX_BYTES || b.includes(0)) return false;
  try {
    utf8.decode(b);
    return true;
  } catch {
    return false;
  }
}

export type TextMerge = { clean: true; merged: Buffer } | { clean: false };

/**
 * Merges `local` and `next`, both derived from `base` (empty when both added the file).
 * Clean only when no region was changed differently by both sides; changes on adjacent lines
 * count as overlapping (as in GNU diff3), and identical changes on both sides are not conflicts.
 * Line endings are kept as they are (lines are split on `\n` only).
 */
export function mergeText(base: Buffer, local: Buffer, next: Buffer): TextMerge {
  const split = (b: Buffer) => b.toString('utf8').split('\n');
  const regions = diff3Merge(split(local), split(base), split(next), { excludeFalseConflicts: true });
  const out: string[] = [];
  for (const r of regions) {
    if (r.conflict) return { clean: false };
    out.push(...(r.ok ?? []));
  }
  return { clean: true, merged: Buffer.from(out.join('\n'), 'utf8') };
}
