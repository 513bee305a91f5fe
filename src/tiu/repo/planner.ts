/**
 * The best-path planner (Ubuntu system-image's design): every way from the installed image to a
 * newer one — one full image, or a chain of deltas starting at the installed image's index —
 * scored, and the first path that phasing admits wins. Pure: the device's facts come in, a plan
 * (data) comes out; `tiu check` prints it and `tiu update` carries it out.
 *
 * score = 100 × reboots + (MiB above the smallest candidate) + 9001 × (builds below the newest).
 * Lowest wins. tiu applies a whole path in one transaction, so every path costs one reboot today;
 * the term stays so that a future multi-reboot path is weighed as Ubuntu weighs it.
 */
import { compareVersions } from '../archive/version-order.ts';
import type { RepoImage } from './model.ts';
import { admitted } from './phasing.ts';

export interface Installed {
  version: string;
  /** sha256 of the installed image's index (manifest.index.sha256): the base a delta must name. */
  index: string;
}

export interface ScoredPath {
  images: RepoImage[];
  /** The image the device has after the path. */
  last: RepoImage;
  bytes: number;
  reboots: number;
  mibAboveSmallest: number;
  buildsBelowNewest: number;
  score: number;
  /** Phase bucket of this device for the last image's version, and the percentage on the channel. */
  bucket: number;
  phased: number;
  admitted: boolean;
}

export interface Plan {
  channel: string;
  installed: Installed | undefined;
  /** Newest image on the channel for this device (any phase), if any. */
  newest: RepoImage | undefined;
  /** Every candidate path, best score first. */
  paths: ScoredPath[];
  /** The path to take, if any. */
  chosen: ScoredPath | undefined;
  /** Why nothing / this was chosen: 'update', 'up-to-date', 'phased-out', 'downgrade', 'downgrade-refused', 'nothing-published'. */
  outcome: 'update' | 'up-to-date' | 'phased-out' | 'downgrade' | 'downgrade-refused' | 'nothing-published';
}

export interface PlanInput {
  /** Images for this device's compatible on its channel (see imagesFor). */
  images: readonly RepoImage[];
  channel: string;
  installed: Installed | undefined;
  /** Bucket of this device for a version (see phaseBucket). */
  bucket: (version: string) => number;
  allowDowngrade?: boolean;
}

const MiB = 1024 * 1024;
/** Bounds on the search, so a repository with many deltas cannot make the device spin. */
export const MAX_CHAIN = 16;
export const MAX_PATHS = 4096;

/** All candidate paths to images newer than `installed` (unscored). */
export function candidatePaths(images: readonly RepoImage[], installed: Installed | undefined): RepoImage[][] {
  const newer = (i: RepoImage, than: string | undefined) => than === undefined || compareVersions(i.version, than) > 0;
  const out: RepoImage[][] = images.filter((i) => i.kind === 'full' && newer(i, installed?.version)).map((i) => [i]);
  if (!installed) return out;
  const deltas = images.filter((i) => i.kind === 'delta');
  const walk = (from: string, fromVersion: string, chain: RepoImage[]) => {
    if (chain.length >= MAX_CHAIN) return;
    for (const d of deltas) {
      if (out.length >= MAX_PATHS) return;
      if (d.base !== from || !newer(d, fromVersion)) continue;
      const next = [...chain, d];
      out.push(next);
      walk(d.index, d.version, next);
    }
  };
  walk(installed.index, installed.version, []);
  return out;
}

/** Scores paths (Ubuntu's weights) and sorts them best first; ties go to the newer build, then fewer bytes. */
export function scorePaths(paths: readonly RepoImage[][], channel: string, bucket: (version: string) => number): ScoredPath[] {
  if (paths.length === 0) return [];
  const bytesOf = (p: readonly RepoImage[]) => p.reduce((s, i) => s + i.length, 0);
  const smallest = Math.min(...paths.map(bytesOf));
  const builds = [...new Set(paths.map((p) => p[p.length - 1]!.build))].sort((a, b) => b - a);
  const scored = paths.map((images): ScoredPath => {
    const last = images[images.length - 1]!;
    const bytes = bytesOf(images);
    const reboots = 1;
    const mibAboveSmallest = Math.floor((bytes - smallest) / MiB);
    const buildsBelowNewest = builds.indexOf(last.build);
    const b = bucket(last.version);
    const phased = last.channels[channel]?.phased ?? 0;
    return { images, last, bytes, reboots, mibAboveSmallest, buildsBelowNewest, score: 100 * reboots + mibAboveSmallest + 9001 * buildsBelowNewest, bucket: b, phased, admitted: admitted(b, phased) };
  });
  return scored.sort((a, b) => a.score - b.score || b.last.build - a.last.build || a.bytes - b.bytes || a.images.length - b.images.length);
}

/** Decides what this device should install from its channel. */
export function planUpdate(input: PlanInput): Plan {
  const { images, channel, installed } = input;
  const newest = images.reduce<RepoImage | undefined>((n, i) => (n === undefined || i.build > n.build ? i : n), undefined);
  const base = { channel, installed, newest };
  if (!newest) return { ...base, paths: [], chosen: undefined, outcome: 'nothing-published' };
  const paths = scorePaths(candidatePaths(images, installed), channel, input.bucket);
  const chosen = paths.find((p) => p.admitted);
  if (chosen) return { ...base, paths, chosen, outcome: 'update' };
  if (paths.length > 0) return { ...base, paths, chosen: undefined, outcome: 'phased-out' };
  // Nothing newer: up to date, or the channel's newest is older than what is installed.
  if (!installed || compareVersions(newest.version, installed.version) >= 0) return { ...base, paths, chosen: undefined, outcome: 'up-to-date' };
  if (newest.kind !== 'full') return { ...base, paths, chosen: undefined, outcome: 'downgrade-refused' };
  const [down] = scorePaths([[newest]], channel, input.bucket);
  if (!input.allowDowngrade) return { ...base, paths: [down!], chosen: undefined, outcome: 'downgrade-refused' };
  return { ...base, paths: [down!], chosen: down, outcome: 'downgrade' };
}
