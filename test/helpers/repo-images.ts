/** Pure fixtures for the repository planner tests: target models (RepoImage) without a repository. */
import type { RepoImage } from '../../src/tiu/repo/model.ts';

export const MiB = 1024 * 1024;
/** The index digest of build n (64 hex digits). */
export const idx = (n: number) => n.toString(16).padStart(64, '0');
/** The creation and channel time of every fixture image. */
export const at = '2026-12-01T00:00:00Z';

/** A full image of device 'dev' on stable at 100 %, `length` bytes (fields overridable). */
export function repoImage(version: string, build: number, length: number, o: Partial<RepoImage> = {}): RepoImage {
  return {
    compatible: 'dev', version, build, kind: 'full', index: idx(build), update: version, part: 'image',
    channels: { stable: { phased: 100, since: at } }, created: at,
    path: `dev/${version}/os.tiu`, length, sha256: 'a'.repeat(64), ...o,
  };
}
