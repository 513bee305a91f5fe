/** The repository's pure parts: phase buckets, the best-path planner, the target model. */
import { describe, it, expect } from 'vitest';
import { phaseBucket, admitted } from '../src/tiu/repo/phasing.ts';
import { planUpdate, candidatePaths, scorePaths } from '../src/tiu/repo/planner.ts';
import { parseImage, imagesFor, type RepoImage } from '../src/tiu/repo/model.ts';
import { MiB, at, idx, repoImage } from './helpers/repo-images.ts';

const img = (version: string, build: number, o: Partial<RepoImage> = {}) => repoImage(version, build, 500 * MiB, o);

describe('phasing', () => {
  const ids = Array.from({ length: 1000 }, (_, i) => `${(i * 2654435761 >>> 0).toString(16).padStart(8, '0')}${'0'.repeat(24)}`);
  it('a 10 % phase selects 9-11 % of 1,000 machine ids, stable per id', () => {
    const inTen = ids.filter((id) => admitted(phaseBucket(id, '2.0'), 10));
    expect(inTen.length).toBeGreaterThanOrEqual(90);
    expect(inTen.length).toBeLessThanOrEqual(110);
    // The same id gets the same answer every time.
    for (const id of ids.slice(0, 200)) expect(phaseBucket(id, '2.0')).toBe(phaseBucket(id, '2.0'));
    // Raising to 50 % keeps every device of the first 10 % in, and takes about half.
    const inFifty = new Set(ids.filter((id) => admitted(phaseBucket(id, '2.0'), 50)));
    for (const id of inTen) expect(inFifty.has(id)).toBe(true);
    expect(inFifty.size).toBeGreaterThan(450);
    expect(inFifty.size).toBeLessThan(550);
    // 0 % admits nobody, 100 % everybody.
    expect(ids.filter((id) => admitted(phaseBucket(id, '2.0'), 0))).toEqual([]);
    expect(ids.filter((id) => admitted(phaseBucket(id, '2.0'), 100)).length).toBe(1000);
  });
  it('each version picks a different slice of the fleet', () => {
    const a = ids.filter((id) => admitted(phaseBucket(id, '2.0'), 10));
    const b = new Set(ids.filter((id) => admitted(phaseBucket(id, '3.0'), 10)));
    expect(a.filter((id) => b.has(id)).length).toBeLessThan(a.length / 2);
  });
});

describe('best-path planner', () => {
  const all = () => 0;
  it('takes the newest full image when there are no deltas', () => {
    const p = planUpdate({ images: [img('1.0', 1), img('2.0', 2), img('3.0', 3)], channel: 'stable', installed: { version: '1.0', index: idx(1) }, bucket: all });
    expect(p.outcome).toBe('update');
    expect(p.chosen!.last.version).toBe('3.0');
    expect(p.paths.map((x) => x.last.version)).toEqual(['3.0', '2.0']);
    expect(p.paths.map((x) => x.score)).toEqual([100, 100 + 9001]);
  });
  it('prefers a delta chain to the newest over the full image (fewer MiB), and never ends below the newest for bytes', () => {
    const images = [
      img('1.0', 1), img('2.0', 2), img('3.0', 3),
      img('2.0', 4, { kind: 'delta', base: idx(1), index: idx(2), length: 30 * MiB, path: 'dev/2.0/d1.tiud' }),
      img('3.0', 5, { kind: 'delta', base: idx(2), index: idx(3), length: 40 * MiB, path: 'dev/3.0/d2.tiud' }),
    ];
    // build numbers of the deltas say which image they end in: give them the image's build.
    images[3]!.build = 2;
    images[4]!.build = 3;
    const p = planUpdate({ images, channel: 'stable', installed: { version: '1.0', index: idx(1) }, bucket: all });
    expect(p.chosen!.images.map((i) => i.path)).toEqual(['dev/2.0/d1.tiud', 'dev/3.0/d2.tiud']);
    // 70 MiB, 40 above the smallest path (the 30 MiB delta alone).
    expect(p.chosen!.score).toBe(100 + 40);
    const full3 = p.paths.find((x) => x.images.length === 1 && x.last.version === '3.0')!;
    expect(full3.mibAboveSmallest).toBe(470);
    expect(full3.score).toBe(100 + 470);
    // The 30 MiB delta to 2.0 is smallest, but ends a build below the newest: 9001 points.
    const d2 = p.paths.find((x) => x.images.length === 1 && x.last.kind === 'delta')!;
    expect(d2.score).toBe(100 + 9001);
  });
  it('ignores deltas whose base is not the installed image', () => {
    const paths = candidatePaths([img('2.0', 2, { kind: 'delta', base: idx(99), index: idx(2) })], { version: '1.0', index: idx(1) });
    expect(paths).toEqual([]);
  });
  it('phasing picks the first admitted path; a phased-out device stays', () => {
    const images = [img('1.0', 1), img('2.0', 2), img('3.0', 3, { channels: { stable: { phased: 10, since: at } } })];
    const bucket = (v: string) => (v === '3.0' ? 42 : 0);
    const p = planUpdate({ images, channel: 'stable', installed: { version: '1.0', index: idx(1) }, bucket });
    expect(p.chosen!.last.version).toBe('2.0');
    expect(p.paths[0]!.admitted).toBe(false);
    const q = planUpdate({ images, channel: 'stable', installed: { version: '2.0', index: idx(2) }, bucket });
    expect(q.outcome).toBe('phased-out');
    expect(q.chosen).toBeUndefined();
  });
  it('is up to date on the newest, refuses a downgrade unless allowed', () => {
    const images = [img('1.0', 1), img('2.0', 2)];
    expect(planUpdate({ images, channel: 'stable', installed: { version: '2.0', index: idx(2) }, bucket: all }).outcome).toBe('up-to-date');
    const down = planUpdate({ images, channel: 'stable', installed: { version: '3.0', index: idx(3) }, bucket: all });
    expect(down.outcome).toBe('downgrade-refused');
    expect(down.chosen).toBeUndefined();
    const allowed = planUpdate({ images, channel: 'stable', installed: { version: '3.0', index: idx(3) }, bucket: all, allowDowngrade: true });
    expect(allowed.outcome).toBe('downgrade');
    expect(allowed.chosen!.last.version).toBe('2.0');
  });
  it('orders versions the dpkg way, not as strings', () => {
    const p = planUpdate({ images: [img('1.9', 1), img('1.10', 2)], channel: 'stable', installed: { version: '1.9', index: idx(1) }, bucket: all });
    expect(p.chosen!.last.version).toBe('1.10');
  });
  it('bounds the delta search', () => {
    // A cycle-free but long chain: never more than MAX_CHAIN deep.
    const images = Array.from({ length: 40 }, (_, i) => img(`1.${i + 1}`, i + 2, { kind: 'delta', base: idx(i + 1), index: idx(i + 2), length: MiB }));
    const paths = candidatePaths(images, { version: '1.0', index: idx(1) });
    expect(Math.max(...paths.map((p) => p.length))).toBe(16);
    expect(scorePaths(paths, 'stable', all)[0]!.images.length).toBe(16);
  });
  it('filters images by device and channel', () => {
    const images = [img('1.0', 1), img('2.0', 2, { channels: { beta: { phased: 100, since: at } } }), img('2.0', 3, { compatible: 'other' })];
    expect(imagesFor(images, 'dev', 'stable').map((i) => i.version)).toEqual(['1.0']);
    expect(imagesFor(images, 'dev', 'beta').map((i) => i.version)).toEqual(['2.0']);
  });
});

describe('target model', () => {
  const good = { compatible: 'dev', version: '2.0', build: 2, kind: 'full', index: idx(2), update: '2.0', part: 'image', channels: { stable: { phased: 10, since: at } }, created: at };
  it('parses tiu custom fields strictly', () => {
    const i = parseImage('dev/2.0/os.tiu', 123, { sha256: 'b'.repeat(64) }, { tiu: good });
    expect(i.channels.stable!.phased).toBe(10);
    for (const [bad, field] of [
      [{ ...good, build: 0 }, 'build'], [{ ...good, kind: 'delta' }, ''], [{ ...good, channels: { Stable: { phased: 1, since: at } } }, 'channels'],
      [{ ...good, channels: { stable: { phased: 101, since: at } } }, 'channels.stable.phased'], [{ ...good, extra: 1 }, ''], [{ ...good, version: '../x' }, 'version'],
    ] as const) {
      expect(() => parseImage('p', 1, { sha256: 'b'.repeat(64) }, { tiu: bad }), JSON.stringify(bad)).toThrow(/custom\.tiu/);
      if (field) expect(() => parseImage('p', 1, { sha256: 'b'.repeat(64) }, { tiu: bad })).toThrow(new RegExp(field.replace('.', '\\.')));
    }
    expect(() => parseImage('p', 1, {}, { tiu: good })).toThrow(/no sha256/);
  });
});
