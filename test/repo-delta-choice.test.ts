/**
 * Pure: which target `tiu update` fetches for a plan with deltas (src/tiu/repo/device.ts
 * targetChoice), and which old images `tiu publish` makes deltas from (src/tiu/repo/deltas.ts).
 */
import { describe, it, expect } from 'vitest';
import { planUpdate } from '../src/tiu/repo/planner.ts';
import { targetChoice } from '../src/tiu/repo/device.ts';
import { deltaBases } from '../src/tiu/repo/deltas.ts';
import type { RepoImage } from '../src/tiu/repo/model.ts';
import type { Manifest } from '../src/tiu/archive/manifest.ts';
import { MiB, at, idx, repoImage } from './helpers/repo-images.ts';

const img = (version: string, build: number, o: Partial<RepoImage> = {}) => repoImage(version, build, 50 * MiB, o);
const delta = (version: string, build: number, from: number, length = MiB) => img(version, build, { kind: 'delta', base: idx(from), path: `dev/${version}/from-${from}.tiud`, length });
const plan = (images: RepoImage[], installedBuild: number) =>
  planUpdate({ images, channel: 'stable', installed: { version: `${installedBuild}.0`, index: idx(installedBuild) }, bucket: () => 0 });

describe('targetChoice', () => {
  it('a delta from the installed image: the delta first, the full image of the same build as fallback', () => {
    const c = targetChoice(plan([img('1.0', 1), img('2.0', 2), delta('2.0', 2, 1)], 1))!;
    expect(c.first.kind).toBe('delta');
    expect(c.fallback).toMatchObject({ kind: 'full', version: '2.0' });
  });

  it('no delta for the installed image, or a larger delta: the full image, no fallback', () => {
    expect(targetChoice(plan([img('2.0', 2), delta('2.0', 2, 9)], 1))).toEqual({ first: expect.objectContaining({ kind: 'full', version: '2.0' }) });
    expect(targetChoice(plan([img('2.0', 2), delta('2.0', 2, 1, 60 * MiB)], 1))!.first.kind).toBe('full');
  });

  it('a chain of deltas is not applied yet: its full image is taken', () => {
    const images = [img('2.0', 2, { length: 500 * MiB }), img('3.0', 3, { length: 500 * MiB }), delta('2.0', 2, 1), delta('3.0', 3, 2)];
    const p = plan(images, 1);
    expect(p.chosen!.images).toHaveLength(2);
    expect(targetChoice(p)).toEqual({ first: expect.objectContaining({ kind: 'full', version: '3.0' }) });
  });
});

describe('deltaBases', () => {
  const m = { compatible: 'dev', version: '4.0', index: { sha256: idx(4) } } as Manifest;
  it('the last N full images of the device on the channel, newest first; never deltas, other devices or channels', () => {
    const images = [img('1.0', 1), img('2.0', 2), img('3.0', 3), delta('3.0', 3, 2), img('3.5', 5, { compatible: 'other' }), img('3.9', 6, { channels: { beta: { phased: 100, since: at } } })];
    expect(deltaBases(images, m, 'stable', 2).map((i) => i.version)).toEqual(['3.0', '2.0']);
    expect(deltaBases(images, m, 'stable', 0)).toEqual([]);
    expect(deltaBases(images, m, 'beta', 5).map((i) => i.version)).toEqual(['3.9']);
  });
});
