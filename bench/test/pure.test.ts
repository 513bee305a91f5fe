/**
 * Unit tests of the benchmark's pure parts (parsers, statistics, verdicts, rendering).
 * Run: PATH=node_modules/.bin:$PATH node --test 'bench/test/*.test.ts' (Node 24 takes file patterns, not a directory)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSystem } from '../../src/core/system.ts';
import { createLogger } from '../../src/core/log.ts';
import { DEFAULT_CONFIG } from '../../src/tiu/config.ts';
import { parseElapsed, parseTimeReport } from '../lib/timev.ts';
import { median, medians, ratio, fmtBytes, fmtRatio, type Sample } from '../lib/stats.ts';
import { diffContent, type FileFacts, type TreeScan } from '../lib/treediff.ts';
import { parseBtrfsDuExclusive } from '../lib/device.ts';
import { dataSizeFromSuperblock } from '../lib/image.ts';
import { parseVeritySpeed } from '../phases/verity.ts';
import { newChunks } from '../phases/baselines.ts';
import { mksquashfsArgv, raucManifest, squashfsExcludes } from '../phases/build.ts';
import { evaluateTargets, LIMITS } from '../lib/targets.ts';
import { renderMarkdown } from '../lib/markdown.ts';
import { emptyReport, type BenchReport, type Row } from '../lib/types.ts';
import { rotate } from '../lib/context.ts';
import { runTimed, sumSamples, GNU_TIME } from '../lib/measure.ts';
import { breakdown } from '../lib/breakdown.ts';

test('parseElapsed handles m:ss.cc and h:mm:ss', () => {
  assert.equal(parseElapsed('0:09.62'), 9.62);
  assert.equal(parseElapsed('1:02:03'), 3723);
  assert.throws(() => parseElapsed('abc'));
});

test('parseTimeReport reads a real GNU time -v report', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bench-test-'));
  try {
    const out = join(dir, 't');
    // dd writes 4 MiB to a file and fsyncs: the report must show at least that much output.
    await createSystem(createLogger('warn')).run(GNU_TIME, ['-v', '-o', out, 'dd', 'if=/dev/zero', `of=${join(dir, 'f')}`, 'bs=1M', 'count=4', 'conv=fsync', 'status=none']);
    const r = parseTimeReport(await readFile(out, 'utf8'));
    assert.equal(r.exitStatus, 0);
    assert.ok(r.maxRssKiB > 100 && r.maxRssKiB < 1024 * 1024, `maxRss ${r.maxRssKiB}`);
    assert.ok(r.fsOutputs * 512 >= 4 * 1024 * 1024, `outputs ${r.fsOutputs}`);
    assert.ok(r.wallS >= 0 && r.userS >= 0 && r.sysS >= 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runTimed sums steps, and turns failures and hangs into errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bench-test-'));
  const sys = createSystem(createLogger('warn'));
  const report = join(dir, 't');
  try {
    const dd = (n: number) => ({ argv: ['dd', 'if=/dev/zero', `of=${join(dir, `f${n}`)}`, 'bs=1M', `count=${n}`, 'conv=fsync', 'status=none'] });
    const { sample } = await runTimed(sys, [dd(2), dd(3)], report);
    assert.ok(sample.procWriteBytes >= 5 * 2 ** 20 && sample.procWriteBytes < 50 * 2 ** 20, `write_bytes ${sample.procWriteBytes}`);
    assert.ok(sample.maxRssKiB > 0 && sample.wallS > 0);
    await assert.rejects(runTimed(sys, [{ argv: ['sh', '-c', 'echo boom >&2; exit 3'] }], report), /exit 3\): boom/);
    const t0 = performance.now();
    await assert.rejects(runTimed(sys, [{ argv: ['sleep', '30'] }], report, 1), /timed out after 1 s/);
    assert.ok(performance.now() - t0 < 10_000);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('parseTimeReport rejects a report without the fields', () => {
  assert.throws(() => parseTimeReport('real 0.1\nuser 0.0\n'), /Elapsed/);
});

test('median and medians', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
  const s = (wallS: number, growthBytes?: number): Sample => ({ wallS, cpuS: 1, maxRssKiB: 10, procWriteBytes: 0, load1: 0, ...(growthBytes !== undefined ? { growthBytes } : {}) });
  const m = medians([s(1, 100), s(5), s(3, 300)]);
  assert.equal(m.wallS, 3);
  assert.equal(m.growthBytes, 200);
  assert.equal(ratio(1, 0), undefined);
  assert.equal(ratio(2, 4), 0.5);
  assert.equal(fmtBytes(1536), '1.5 KiB');
});

test('sumSamples adds times and writes, keeps the largest process', () => {
  const a: Sample = { wallS: 1, cpuS: 2, maxRssKiB: 50, procWriteBytes: 10, load1: 1, growthBytes: 5 };
  const b: Sample = { wallS: 3, cpuS: 1, maxRssKiB: 20, procWriteBytes: 5, load1: 2 };
  const s = sumSamples([a, b]);
  assert.deepEqual([s.wallS, s.cpuS, s.maxRssKiB, s.procWriteBytes, s.load1, s.growthBytes], [4, 3, 50, 15, 1, undefined]);
});

test('diffContent counts changed, new, mtime-only and removed files', () => {
  const f = (sha256: string, size: number, mtimeMs = 1) => ({ kind: 'file' as const, size, mtimeMs, sha256 });
  const link: FileFacts = { kind: 'symlink', size: 3, mtimeMs: 1 };
  const old: TreeScan = new Map<string, FileFacts>([['a', f('1', 10)], ['b', f('2', 20)], ['c', f('3', 30)], ['gone', f('4', 1)], ['l', link]]);
  const neu: TreeScan = new Map<string, FileFacts>([['a', f('1', 10)], ['b', f('9', 25)], ['c', f('3', 30, 2)], ['new', f('5', 7)], ['l', f('6', 4)]]);
  const d = diffContent(old, neu);
  assert.equal(d.changedFiles, 3); // b, new, l (was a symlink)
  assert.equal(d.changedBytes, 25 + 7 + 4);
  assert.equal(d.newFiles, 2);
  assert.equal(d.mtimeOnlyFiles, 1);
  assert.equal(d.mtimeOnlyBytes, 30);
  assert.equal(d.removedPaths, 1);
  assert.equal(diffContent(neu, neu).changedBytes, 0);
});

test('parseBtrfsDuExclusive', () => {
  assert.equal(parseBtrfsDuExclusive('     Total   Exclusive  Set shared  Filename\n 165924864    25124864   139776000  R/.snapshots/2/snapshot\n'), 25124864);
  assert.throws(() => parseBtrfsDuExclusive('garbage'));
});

test('dataSizeFromSuperblock rounds bytes_used up to 4096 and checks the magic', () => {
  const sb = Buffer.alloc(96);
  sb.writeUInt32LE(0x73717368, 0);
  sb.writeBigUInt64LE(49661167n, 40);
  assert.equal(dataSizeFromSuperblock(sb), 49664000);
  sb.writeBigUInt64LE(8192n, 40);
  assert.equal(dataSizeFromSuperblock(sb), 8192);
  assert.throws(() => dataSizeFromSuperblock(Buffer.alloc(96)), /magic/);
});

test('parseVeritySpeed reads the lines bench/verity-speed.ts prints', () => {
  const text = [
    'openssl speed sha256, 4096-byte blocks, one core: 1674 MB/s',
    `${'BlockHasher.digestAll (what tiu uses), one core'.padEnd(58)}   982 MB/s   59% of openssl`,
    `${'verifyHashTree 512 MiB file, default workers'.padEnd(58)}   662 MB/s   40% of openssl`,
  ].join('\n');
  const r = parseVeritySpeed(text);
  assert.equal(r.opensslMBps, 1674);
  assert.deepEqual(r.rows[0], { name: 'BlockHasher.digestAll (what tiu uses), one core', MBps: 982, pctOfOpenssl: 59 });
  assert.equal(r.rows.length, 2);
  assert.throws(() => parseVeritySpeed('nothing'));
});

test('newChunks', () => {
  const r = newChunks(new Map([['a', 1], ['b', 2]]), new Map([['b', 2], ['c', 5], ['d', 7]]));
  assert.deepEqual(r, { chunks: 2, bytes: 12, total: 14 });
});

test('baseline mksquashfs uses tiu defaults and excludes contents only', () => {
  assert.deepEqual(squashfsExcludes(['/var', '/boot/efi/']), ['var/*', 'var/.*', 'boot/efi/*', 'boot/efi/.*']);
  const a = mksquashfsArgv('/t', '/o', { ...DEFAULT_CONFIG, compression: 'zstd', compressionLevel: 19, blockSize: 65536, exclude: ['/var'] });
  assert.deepEqual(a, ['mksquashfs', '/t', '/o', '-noappend', '-no-recovery', '-exit-on-error', '-reproducible', '-comp', 'zstd', '-Xcompression-level', '19', '-b', '65536', '-xattrs', '-quiet', '-no-progress', '-wildcards', '-e', 'var/*', 'var/.*']);
  assert.match(raucManifest('c', '2'), /\[bundle\]\nformat=verity\n/);
});

test('rotate', () => {
  assert.deepEqual(rotate([1, 2, 3], 0), [1, 2, 3]);
  assert.deepEqual(rotate([1, 2, 3], 4), [2, 3, 1]);
});

test('breakdown splits phases and pairs commands', () => {
  const b = breakdown([
    { t: 0.5, line: 'tiu: debug: run: btrfs subvolume list /r' },
    { t: 0.7, line: 'tiu: debug: exit 0: btrfs subvolume list /r' },
    { t: 1, line: 'verifying: 0%' },
    { t: 3, line: 'scanning: 0%' },
    { t: 3.1, line: 'tiu: debug: run: xargs -0 getfattr' },
    { t: 3.2, line: 'tiu: debug: run: xargs -0 getfattr' },
    { t: 4.2, line: 'tiu: debug: exit 0: xargs -0 getfattr' },
    { t: 4.5, line: 'tiu: debug: exit 0: xargs -0 getfattr' },
  ], 5);
  assert.deepEqual(b.phases.map((p) => [p.name, Number(p.s.toFixed(2))]), [['(before the first progress line)', 1], ['verifying', 2], ['scanning', 2]]);
  assert.equal(b.commands, 3);
  assert.equal(Number(b.slowest[0]!.s.toFixed(2)), 1.3);
  assert.deepEqual([b.gaps[0]!.after, b.gaps[0]!.before, Number(b.gaps[0]!.s.toFixed(2))], ['verifying: 0%', 'scanning: 0%', 2]);
  assert.deepEqual([b.gaps[1]!.before, Number(b.gaps[1]!.s.toFixed(2))], ['tiu: debug: exit 0: xargs -0 getfattr', 1]); // a command running
});

function report(): BenchReport {
  const r = emptyReport({ date: 'd', host: 'h', kernel: 'k', cpus: 2, cpuModel: 'c', memGiB: 1, node: 'v24', runs: 3, workDir: '/w', tools: {}, loadAtStart: 1 });
  const row = (id: string, wallS: number, extra: Partial<Sample> = {}): Row => {
    const s: Sample = { wallS, cpuS: 1, maxRssKiB: 50 * 1024, procWriteBytes: 0, load1: 0, ...extra };
    return { id, label: id, runs: [s], median: { ...s } };
  };
  r.build.rows = [row('tiu-create', 10.4), row('mksquashfs+veritysetup', 10)];
  r.verity = { opensslMBps: 1000, rows: [{ name: 'BlockHasher.digestAll (what tiu uses), one core', MBps: 790, pctOfOpenssl: 79 }] };
  r.verify.rows = [
    { ...row('verify-tiny', 1, { maxRssKiB: 100 * 1024 }), archiveBytes: 7000, dataBytes: 4096 },
    { ...row('verify-large', 5, { maxRssKiB: 140 * 1024 }), archiveBytes: 2 ** 30, dataBytes: 2 ** 30 },
  ];
  r.device.cases = [
    { id: 'v1-v2', label: 'v1 → v2', changed: { changedFiles: 1, changedBytes: 1000, newFiles: 0, mtimeOnlyFiles: 0, mtimeOnlyBytes: 0, removedPaths: 0, files: 1, bytes: 1000 },
      rows: [row('tiu', 0.8, { growthBytes: 1200 }), { ...row('rsync-inplace', 1, { growthBytes: 1000 }), error: undefined }] },
    { id: 'v1-v1', label: 'v1 → v1', rows: [row('tiu', 1, { growthBytes: LIMITS.identicalGrowthBytes + 1 }), { id: 'rsync-inplace', label: 'x', runs: [], median: {}, error: 'rsync exploded' }] },
  ];
  return r;
}

test('evaluateTargets: met, not met and not measured, each for the right reason', () => {
  const t = evaluateTargets(report());
  const by = (prefix: string) => t.filter((x) => x.name.startsWith(prefix)).map((x) => x.status);
  assert.deepEqual(by('tiu create'), ['met']); // 1.04x
  assert.deepEqual(by('verity hashing'), ['not met']); // 79% < 80%
  assert.deepEqual(by('tiu verify peak memory flat'), ['not met']); // +40 MiB > 16 MiB
  assert.deepEqual(by('tiu extract wall'), ['met', 'not measured']); // 0.8x; rsync failed in v1-v1
  assert.match(t.find((x) => x.name === 'tiu extract wall time, v1 → v1')!.measured, /rsync exploded/);
  assert.deepEqual(by('disk growth of an update'), ['met']); // 1.2x <= 1.25x
  assert.deepEqual(by('disk growth of an identical'), ['not met']);
  assert.deepEqual(by('disk growth vs rsync --inplace'), ['not met', 'not measured']); // 1.2x > 1.05x; rsync failed in v1-v1
  assert.deepEqual(by('tiu extract peak memory'), ['met', 'met']);
  assert.deepEqual(by('tiu verify peak memory'), ['not met', 'not met']); // flat, and 140 MiB > 100 MiB
  assert.deepEqual(by('delta'), ['not measured', 'not measured', 'not measured']);
  const r = report();
  r.deltaBytes = { tiu: 350e3, ostree: 1e6 };
  r.deltaApply = { delta: { wallS: 2.2, rssMiB: 120 }, full: { wallS: 1.6, rssMiB: 99 } };
  const withDelta = evaluateTargets(r).filter((x) => x.name.startsWith('delta'));
  assert.deepEqual(withDelta.map((x) => x.status), ['met', 'not met', 'not met']); // 0.35x; 1.38x > 1x; 120 MiB > 100
  assert.match(withDelta[1]!.measured, /^2\.20 s vs 1\.60 s = 1\.38×$/);
  assert.match(withDelta[2]!.measured, /^120 MiB \(full archive: 99 MiB\)$/);
  r.deltaApply = { delta: { wallS: 1.5, rssMiB: 95 }, full: { wallS: 1.6, rssMiB: 99 } };
  assert.deepEqual(evaluateTargets(r).filter((x) => x.name.startsWith('delta apply')).map((x) => x.status), ['met', 'met']);
  const empty = evaluateTargets(emptyReport(report().meta));
  assert.ok(empty.every((x) => x.status === 'not measured'), JSON.stringify(empty));
});

test('renderMarkdown shows targets, failures with reasons and the delta row', () => {
  const r = report();
  r.targets = evaluateTargets(r);
  const md = renderMarkdown(r);
  assert.match(md, /\| tiu create wall time \| .* \| \*\*met\*\* \|/);
  assert.match(md, /not measured: rsync exploded/);
  assert.match(md, /\| delta update download \(v1→v2\) \| .* \| not measured: the delta phase did not run \| not measured \|/);
});

test('evaluateTargets: the download throughput is judged on the bundled download() call against curl -o timed the same way', () => {
  const r = report();
  const row = (id: string, wallS: number): Row => {
    const s: Sample = { wallS, cpuS: 0, maxRssKiB: 60 * 1024, procWriteBytes: 0, load1: 0 };
    return { id, label: id, runs: [s], median: { ...s } };
  };
  r.download = { archiveBytes: 50e6, rows: [row('tiu-download', 0.6), row('tiu-download-transfer', 0.2), row('curl', 0.13), row('tiu-download-bundle', 0.4), row('tiu-download-bundle-transfer', 0.12), row('curl-call', 0.1)] };
  const dl = () => evaluateTargets(r).find((x) => x.name.startsWith('download throughput'))!;
  assert.equal(dl().status, 'met'); // 0.10 / 0.12 = 0.83x
  assert.match(dl().measured, /^0\.12 s vs 0\.10 s = 0\.83× .*call from source 0\.20 s, 0\.65×/);
  assert.match(dl().goal, /bundled, both timed around the spawn of curl from Node/);
  r.download.rows = r.download.rows.filter((x) => x.id !== 'curl-call');
  assert.match(dl().measured, /^0\.12 s vs 0\.13 s = 1\.08×/); // no Node-started curl: the curl -o row
  r.download.rows = r.download.rows.filter((x) => x.id !== 'tiu-download-bundle-transfer');
  assert.equal(dl().status, 'not met'); // from source: 0.65x
  r.download.large = { bytes: 2 ** 29, rows: [row('large-tiu-call', 1), row('large-curl', 1.1)] };
  assert.match(renderMarkdown(r), /A large file \(512\.0 MiB of random bytes\)[\s\S]*\| large-tiu-call \| .* \| 512 MiB\/s \|/);
});

test('a ratio next to its goal is printed so that it reads on the side it is on', () => {
  assert.equal(fmtRatio(8.5376 / 8.0939, 1.05), '1.055×'); // over the goal: not "1.05×"
  assert.equal(fmtRatio(1.0496, 1.05), '1.0496×'); // under it, though it rounds to it
  assert.equal(fmtRatio(1.05, 1.05), '1.05×');
  assert.equal(fmtRatio(1.42, 0.8), '1.42×');
  assert.equal(fmtRatio(0.8049, 0.8), '0.805×');
  assert.equal(fmtRatio(1.0556), '1.06×'); // no goal: two decimals
  assert.equal(fmtRatio(undefined, 1), '–');
});
