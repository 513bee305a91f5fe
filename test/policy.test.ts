/**
 * The pure snapshot decisions (src/tiu/device/policy.ts): which snapshot `tiu rollback` picks,
 * and which snapshots `tiu cleanup` deletes. Lists in, decisions out: no root, no tools.
 */
import { describe, it, expect } from 'vitest';
import { planCleanup, rollbackTarget, sameImage, type SnapshotFacts } from '../src/tiu/device/policy.ts';
import { UD } from '../src/tiu/device/paths.ts';
import { errorCodeOf } from './helpers/env.ts';

/** A finished tiu snapshot with cleanup "number"; `o` overrides. */
function snap(num: number, o: Partial<SnapshotFacts> & { health?: 'good' | 'bad'; inProgress?: boolean; pinned?: boolean } = {}): SnapshotFacts {
  const userdata: Record<string, string> = { [UD.version]: `${num}.0`, ...o.userdata };
  if (o.health) userdata[UD.health] = o.health;
  if (o.inProgress) userdata[UD.inProgress] = 'yes';
  if (o.pinned) userdata[UD.pinned] = 'yes';
  return { num, date: '2026-12-01T00:00:00Z', description: `tiu: ${num}`, cleanup: o.cleanup ?? 'number', userdata, isDefault: o.isDefault ?? false, isMounted: o.isMounted ?? false };
}

describe('rollbackTarget', () => {
  it('with an update pending (default not booted), goes back to the booted snapshot', () => {
    const list = [snap(1, { health: 'good' }), snap(2, { isMounted: true, health: 'good' }), snap(3, { isDefault: true })];
    expect(rollbackTarget(list, undefined, false)).toBe(2);
  });

  it('from the booted default, picks the newest older good snapshot over a newer unknown one', () => {
    const list = [snap(1, { health: 'good' }), snap(2), snap(3, { isDefault: true, isMounted: true })];
    expect(rollbackTarget(list, undefined, false)).toBe(1);
  });

  it('without a good one, the newest older snapshot that is not bad or unfinished', () => {
    const list = [snap(1), snap(2, { health: 'bad' }), snap(3, { inProgress: true }), snap(4, { isDefault: true, isMounted: true })];
    expect(rollbackTarget(list, undefined, false)).toBe(1);
  });

  it('never picks a newer snapshot than the default, and says so when nothing is left', () => {
    const list = [snap(1, { isDefault: true, isMounted: true }), snap(2, { health: 'good' })];
    expect(errorCodeOf(() => rollbackTarget(list, undefined, false))).toBe('SNAPSHOT_NOT_FOUND');
  });

  it('a booted snapshot marked bad is not where a pending update is undone to', () => {
    const list = [snap(1, { health: 'good' }), snap(2, { isMounted: true, health: 'bad' }), snap(3, { isDefault: true })];
    expect(rollbackTarget(list, undefined, false)).toBe(1);
  });

  it('an explicit number: refused when missing, unfinished or bad, unless forced', () => {
    const list = [snap(1, { health: 'bad' }), snap(2, { inProgress: true }), snap(3, { isDefault: true, isMounted: true })];
    expect(errorCodeOf(() => rollbackTarget(list, 9, false))).toBe('SNAPSHOT_NOT_FOUND');
    expect(errorCodeOf(() => rollbackTarget(list, 1, false))).toBe('SNAPSHOT_REFUSED');
    expect(errorCodeOf(() => rollbackTarget(list, 2, false))).toBe('SNAPSHOT_REFUSED');
    expect(rollbackTarget(list, 1, true)).toBe(1);
    expect(rollbackTarget(list, 2, true)).toBe(2);
    expect(errorCodeOf(() => rollbackTarget(list, 9, true))).toBe('SNAPSHOT_NOT_FOUND');
  });
});

describe('planCleanup', () => {
  const nums = (l: { num: number }[]) => l.map((d) => d.num);

  it('keeps the newest `keep` of the number-cleanup snapshots and deletes the older ones', () => {
    const list = [snap(1), snap(2), snap(3), snap(4), snap(5, { isDefault: true, isMounted: true })];
    const d = planCleanup(list, 2);
    expect(nums(d.delete)).toEqual([1, 2]);
    expect(d.keep).toEqual([
      { num: 3, reason: 'among the newest 2' },
      { num: 4, reason: 'among the newest 2' },
      { num: 5, reason: 'default' },
    ]);
  });

  it('never deletes the default, the booted, a pinned, the last good one, or one without the number algorithm', () => {
    const list = [
      snap(1, { cleanup: '' }),
      snap(2, { pinned: true }),
      snap(3, { health: 'good' }),
      snap(4),
      snap(5, { isMounted: true }),
      snap(6, { isDefault: true }),
    ];
    const d = planCleanup(list, 0);
    expect(nums(d.delete)).toEqual([4]);
    expect(Object.fromEntries(d.keep.map((k) => [k.num, k.reason]))).toEqual({ 1: 'no cleanup algorithm', 2: 'pinned', 3: 'last good', 5: 'booted', 6: 'default' });
  });

  it('only the newest good snapshot is protected as the last good one', () => {
    const list = [snap(1, { health: 'good' }), snap(2, { health: 'good' }), snap(3, { isDefault: true, isMounted: true })];
    expect(nums(planCleanup(list, 0).delete)).toEqual([1]);
  });

  it('unfinished leftovers always go, whatever keep says, but never the default or the booted one', () => {
    const list = [snap(1, { inProgress: true }), snap(2, { inProgress: true, isMounted: true }), snap(3, { isDefault: true, inProgress: true }), snap(4, { inProgress: true, pinned: true })];
    const d = planCleanup(list, 10);
    expect(d.delete).toEqual([
      { num: 1, reason: 'left over by an interrupted run' },
      { num: 4, reason: 'left over by an interrupted run' },
    ]);
    expect(nums(d.keep)).toEqual([2, 3]);
  });

  it('an unfinished good snapshot is not the last good one', () => {
    const list = [snap(1, { health: 'good' }), snap(2, { health: 'good', inProgress: true }), snap(3, { isDefault: true })];
    const d = planCleanup(list, 0);
    expect(nums(d.delete)).toEqual([2]);
    expect(d.keep.find((k) => k.num === 1)?.reason).toBe('last good');
  });
});

describe('sameImage', () => {
  const m = (sha: string, excluded: string[]) => ({ index: { path: 'usr/lib/tiu/image/index', sha256: sha.repeat(64), size: 1, entries: 1 }, excluded });
  it('is the same image only with the same index digest and the same excluded paths, in order', () => {
    expect(sameImage(m('a', ['/var', '/home']), m('a', ['/var', '/home']))).toBe(true);
    expect(sameImage(m('a', ['/var']), m('b', ['/var']))).toBe(false);
    expect(sameImage(m('a', ['/var', '/home']), m('a', ['/var']))).toBe(false);
    expect(sameImage(m('a', ['/var']), m('a', ['/var', '/opt']))).toBe(false);
    expect(sameImage(m('a', ['/var', '/home']), m('a', ['/home', '/var']))).toBe(false);
    expect(sameImage(m('a', []), m('a', []))).toBe(true);
  });
});
