/**
 * Delta phase (issue #13): bytes to download for the Debian v1 -> v2 update — tiu delta vs the
 * full tiu archive vs `ostree static-delta generate --inline` vs casync's new chunks (chunks of
 * v2's store missing from v1's) vs `xdelta3 -9` of the two archives (squashfs images) — and the
 * wall time and peak RSS of applying the delta vs the full archive on a v1 device (loop btrfs).
 * Returns a markdown section; `npm run bench` appends it to latest.md, `npm run bench:delta`
 * (bench/delta.ts) writes it alone to delta.md.
 */
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { System } from '../../src/core/system.ts';
import { generateDevKeys } from '../../src/tiu/sign/keygen.ts';
import { installedDevice } from '../../test/helpers/device.ts';
import { median } from '../lib/stats.ts';
import { debianTree } from '../../test/helpers/archive.ts';

/** The bundle (what devices run; bench/run.ts and bench/delta.ts build it first), or with BENCH_TIU=source the sources. */
const TIU = join(import.meta.dirname, process.env.BENCH_TIU === 'source' ? '../../bin/tiu.js' : '../../dist/tiu.mjs');
/** Rounds of the apply measurement (delta and full archive alternating; medians reported). */
const APPLY_ROUNDS = 3;

async function timed(argv: string[]): Promise<{ wallS: number; rssMiB: number; stdout: string }> {
  const r = await execa('/usr/bin/time', ['-f', 'BENCH %e %M', ...argv], { reject: false, all: false });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr.slice(-2000)}`);
  const m = /BENCH ([\d.]+) (\d+)\s*$/.exec(r.stderr)!;
  return { wallS: Number(m[1]), rssMiB: Math.round(Number(m[2]) / 1024), stdout: r.stdout };
}
const size = async (p: string) => (await stat(p)).size;

/** Every chunk file (`*.cacnk`) below a casync store: name -> size. */
async function chunks(store: string): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for (const d of await readdir(store, { recursive: true, withFileTypes: true })) {
    if (d.isFile() && d.name.endsWith('.cacnk')) m.set(d.name, (await stat(join(d.parentPath, d.name))).size);
  }
  return m;
}

export interface DeltaBench {
  markdown: string;
  deltaBytes: number;
  ostreeBytes?: number;
  /** Medians of the apply runs (delta, full archive). */
  apply: { delta: { wallS: number; rssMiB: number }; full: { wallS: number; rssMiB: number } };
}

/** Runs the delta measurements in `dir` (scratch, left for the caller to remove). */
export async function benchDelta(sys: System, dir: string, say: (s: string) => void = () => {}): Promise<DeltaBench> {
  await mkdir(dir, { recursive: true });
  const has = async (tool: string) => (await sys.which(tool)) !== undefined;
  const keys = await generateDevKeys({ outDir: join(dir, 'keys') });
  const rows: string[][] = [];
  const notes: string[] = [];
  const arch: Record<string, string> = {};
  for (const v of ['v1', 'v2'] as const) {
    say(`delta: tiu create ${v}.tiu (untimed)`);
    arch[v] = join(dir, `${v}.tiu`);
    await execa(process.execPath, [TIU, 'create', debianTree(v), '-o', arch[v]!, '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'bench-x86_64', '--version', v === 'v1' ? '1.0' : '2.0', '--no-progress'], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
  }
  say('delta: tiu delta v1 v2');
  const delta = join(dir, 'v1-v2.tiud');
  const made = await timed([process.execPath, TIU, 'delta', arch.v1!, arch.v2!, '-o', delta, '--key', keys.signingKey, '--cert', keys.signingCert, '--keyring', keys.keyring, '--json']);
  const full = await size(arch.v2!);
  const deltaSize = await size(delta);

  // OSTree and casync read the two images' trees (the mounted squashfs).
  const m1 = join(dir, 'm1');
  const m2 = join(dir, 'm2');
  await mkdir(m1);
  await mkdir(m2);
  await sys.run('mount', ['-t', 'squashfs', '-o', 'loop,ro', arch.v1!, m1]);
  await sys.run('mount', ['-t', 'squashfs', '-o', 'loop,ro', arch.v2!, m2]);
  let ostree: number | undefined;
  let ostreeGen: { wallS: number; rssMiB: number } | undefined;
  let casync: { bytes: number; chunks: number; of: number } | undefined;
  try {
    say('delta: ostree commit + static-delta generate');
    const repo = join(dir, 'repo');
    await sys.run('ostree', [`--repo=${repo}`, 'init', '--mode=archive']);
    await sys.run('ostree', [`--repo=${repo}`, 'commit', '--branch=os', `--tree=dir=${m1}`, '--no-xattrs', '-s', 'v1']);
    await sys.run('ostree', [`--repo=${repo}`, 'commit', '--branch=os', `--tree=dir=${m2}`, '--no-xattrs', '-s', 'v2']);
    ostreeGen = await timed(['ostree', `--repo=${repo}`, 'static-delta', 'generate', '--from=os^', '--to=os', '--inline', `--filename=${join(dir, 'ostree.delta')}`]);
    ostree = await size(join(dir, 'ostree.delta'));
    if (await has('casync')) {
      say('delta: casync make of both trees');
      for (const [v, m] of [['1', m1], ['2', m2]] as const) {
        await sys.run('casync', ['make', `--store=${join(dir, `store${v}`)}`, '--without=xattrs', join(dir, `v${v}.caidx`), m]);
      }
      const c1 = await chunks(join(dir, 'store1'));
      const c2 = await chunks(join(dir, 'store2'));
      const missing = [...c2].filter(([k]) => !c1.has(k));
      casync = { bytes: missing.reduce((s, [, n]) => s + n, 0) + (await size(join(dir, 'v2.caidx'))), chunks: missing.length, of: c2.size };
    } else notes.push('casync is not installed (scripts/setup.sh installs it): its row is not measured.');
  } finally {
    await sys.run('umount', [m1, m2]);
  }
  let xdelta: number | undefined;
  if (await has('xdelta3')) {
    say('delta: xdelta3 -9 of the archives');
    await sys.run('xdelta3', ['-e', '-9', '-f', '-s', arch.v1!, arch.v2!, join(dir, 'x.vcdiff')]);
    xdelta = await size(join(dir, 'x.vcdiff'));
  } else notes.push('xdelta3 is not installed (scripts/setup.sh installs it): its row is not measured.');

  const mb = (n: number | undefined) => (n === undefined ? 'not measured' : `${n.toLocaleString('en')} B (${(n / 1e6).toFixed(2)} MB)`);
  const vs = (n: number | undefined) => (n === undefined ? '' : `${(n / deltaSize).toFixed(1)}× the tiu delta`);
  rows.push(['tiu delta', mb(deltaSize), `made in ${made.wallS} s, ${made.rssMiB} MiB peak RSS`]);
  rows.push(['full tiu archive', mb(full), vs(full)]);
  rows.push(['ostree static-delta generate --inline', mb(ostree), ostree ? `tiu delta / ostree = **${(deltaSize / ostree).toFixed(2)}** (target ≤ 0.5); made in ${ostreeGen!.wallS} s, ${ostreeGen!.rssMiB} MiB` : '']);
  rows.push(['casync new chunks (+ v2 .caidx)', mb(casync?.bytes), casync ? `${casync.chunks} of ${casync.of} chunks; ${vs(casync.bytes)}` : '']);
  rows.push(['xdelta3 -9 of the archives (squashfs images)', mb(xdelta), vs(xdelta)]);

  // Apply: a fresh v1 device per run, the delta and the full archive alternating (the order
  // swapped each round); medians of APPLY_ROUNDS runs.
  const runs: Record<'delta' | 'full archive', { wallS: number; rssMiB: number }[]> = { delta: [], 'full archive': [] };
  for (let round = 0; round < APPLY_ROUNDS; round++) {
    const order = [['delta', delta], ['full archive', arch.v2!]] as const;
    for (const [what, file] of round % 2 ? [...order].reverse() : order) {
      say(`delta: tiu extract (${what}) onto a v1 device, round ${round + 1}/${APPLY_ROUNDS}`);
      await using dev = await installedDevice(sys, arch.v1!, await readFile(keys.keyring, 'utf8'), { sizeMiB: 2000 });
      runs[what].push(await timed([process.execPath, TIU, 'extract', file, '--root', dev.root, '--keyring', keys.keyring, '--json']));
    }
  }
  const med = (what: 'delta' | 'full archive') => ({ wallS: median(runs[what].map((r) => r.wallS)), rssMiB: median(runs[what].map((r) => r.rssMiB)) });
  const [d, f] = [med('delta'), med('full archive')];
  const apply: string[][] = [
    ['tiu extract (delta)', `${d.wallS} s (${(d.wallS / f.wallS).toFixed(2)}× the full archive; target ≤ 1×)`, `${d.rssMiB} MiB (target ≤ 100 MiB)`, runs.delta.map((r) => `${r.wallS} s / ${r.rssMiB} MiB`).join(', ')],
    ['tiu extract (full archive)', `${f.wallS} s`, `${f.rssMiB} MiB`, runs['full archive'].map((r) => `${r.wallS} s / ${r.rssMiB} MiB`).join(', ')],
  ];
  const markdown = [
    '## Delta: Debian v1 -> v2',
    '',
    '| download | bytes | note |',
    '|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `| apply onto v1 (${TIU.endsWith('.mjs') ? 'the bundle dist/tiu.mjs' : 'the sources, bin/tiu.js'}; medians of ${APPLY_ROUNDS}) | wall | peak RSS | runs |`,
    '|---|---|---|---|',
    ...apply.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  return { markdown, deltaBytes: deltaSize, ostreeBytes: ostree, apply: { delta: d, full: f } };
}
