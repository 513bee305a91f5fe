/**
 * The downgrade rule of extract/update: an image older than the base snapshot's is refused
 * unless the caller allows it. Pure.
 */
import { TiuError } from '../../core/errors.ts';
import { compareVersions, versionProblem } from '../archive/version-order.ts';

/**
 * Throws DOWNGRADE when `image` orders below `base` (dpkg order; equal is not a downgrade), or
 * when the image's version cannot be ordered at all while the base's can. Without a known or
 * orderable base version there is nothing to compare with: allowed.
 */
export function checkDowngrade(image: string, base: string | undefined, baseNum: number, allow: boolean): void {
  if (allow || base === undefined || versionProblem(base) !== undefined) return;
  const problem = versionProblem(image);
  if (problem === undefined && compareVersions(image, base) >= 0) return;
  const why = problem ? `version '${image}' cannot be ordered (${problem}), so it may be older than` : `version ${image} is older than`;
  throw new TiuError('DOWNGRADE', `refusing a downgrade: the image's ${why} snapshot ${baseNum}'s ${base}`, {
    hint: 'pass --allow-downgrade to install it anyway; nothing was changed',
    details: { imageVersion: image, baseVersion: base, base: baseNum },
  });
}
