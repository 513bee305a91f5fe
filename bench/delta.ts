/**
 * Delta bench (issue #13), standalone: bytes to download for the Debian v1 -> v2 update —
 * tiu delta vs the full tiu archive vs `ostree static-delta generate --inline` (vs xdelta3 of the
 * squashfs images and casync's new chunks when those tools are installed) — and apply wall time
 * and peak RSS of the delta vs the full archive on a v1 device (loop btrfs).
 *
 *   PATH=$PWD/node_modules/.bin:$PATH node bench/delta.ts     # as root; ~15 min on a loaded 2-core box
 *
 * Writes bench/results/delta.md (BENCH_OUT to change the directory). Scratch in BENCH_DIR
 * (default /var/tmp/tiu-bench-delta), removed at the end unless BENCH_KEEP=1.
 */
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { createSystem } from '../src/tiu/system.ts';
import { createLogger } from '../src/tiu/log.ts';
import { generateDevKeys } from '../src/tiu/sign/keygen.ts';
import { DEFAULT_EXCLUDES } from '../src/tiu/config.ts';
import { installedDevice } from '../test/helpers/device.ts';
import { debianTree } from '../test/helpers/archive.ts';

const sys = createSystem(createLogger('warn'));
const dir = process.env.BENCH_DIR ?? '/var/tmp/tiu-bench-delta';
const outDir = process.env.BENCH_OUT ?? join(import.meta.dirname, 'results');
const TIU = join(import.meta.dirname, '../bin/tiu.js');

async function timed(argv: string[]): Promise<{ wallS: number; rssMiB: number; stdout: string }> {
  const r = await execa('/usr/bin/time', ['-f', 'BENCH %e %M', ...argv], { reject: false, all: false });
  if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr.slice(-2000)}`);
  const m = /BENCH ([\d.]+) (\d+)\s*$/.exec(r.stderr)!;
  return { wallS: Number(m[1]), rssMiB: Math.round(Number(m[2]) / 1024), stdout: r.stdout };
}
const size = async (p: string) => (await stat(p)).size;
const has = async (tool: string) => (await sys.which(tool)) !== undefined;

await rm(dir, { recursive: true, force: true });
await mkdir(dir, { recursive: true });
const keys = await generateDevKeys({ outDir: join(dir, 'keys') });
const rows: string[][] = [];
const notes: string[] = [];
try {
  const arch: Record<string, string> = {};
  for (const v of ['v1', 'v2'] as const) {
    arch[v] = join(dir, `${v}.tiu`);
    await execa(process.execPath, [TIU, 'create', debianTree(v), '-o', arch[v]!, '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'bench-x86_64', '--version', v === 'v1' ? '1.0' : '2.0', '--no-progress'], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
  }
  const delta = join(dir, 'v1-v2.tiud');
  const made = await timed([process.execPath, TIU, 'delta', arch.v1!, arch.v2!, '-o', delta, '--key', keys.signingKey, '--cert', keys.signingCert, '--keyring', keys.keyring, '--json']);
  const full = await size(arch.v2!);
  const deltaSize = await size(delta);

  // OSTree: commits of the two images (mounted squashfs), then one inline static delta file.
  const m1 = join(dir, 'm1');
  const m2 = join(dir, 'm2');
  await mkdir(m1);
  await mkdir(m2);
  await sys.run('mount', ['-t', 'squashfs', '-o', 'loop,ro', arch.v1!, m1]);
  await sys.run('mount', ['-t', 'squashfs', '-o', 'loop,ro', arch.v2!, m2]);
  let ostree: number | undefined;
  let ostreeGen: { wallS: number; rssMiB: number } | undefined;
  try {
    const repo = join(dir, 'repo');
    await sys.run('ostree', [`--repo=${repo}`, 'init', '--mode=archive']);
    await sys.run('ostree', [`--repo=${repo}`, 'commit', '--branch=os', `--tree=dir=${m1}`, '--no-xattrs', '-s', 'v1']);
    await sys.run('ostree', [`--repo=${repo}`, 'commit', '--branch=os', `--tree=dir=${m2}`, '--no-xattrs', '-s', 'v2']);
    ostreeGen = await timed(['ostree', `--repo=${repo}`, 'static-delta', 'generate', '--from=os^', '--to=os', '--inline', `--filename=${join(dir, 'ostree.delta')}`]);
    ostree = await size(join(dir, 'ostree.delta'));
  } finally {
    await sys.run('umount', [m1, m2]);
  }
  let xdelta: number | undefined;
  if (await has('xdelta3')) {
    await sys.run('xdelta3', ['-e', '-9', '-s', arch.v1!, arch.v2!, join(dir, 'x.vcdiff')]);
    xdelta = await size(join(dir, 'x.vcdiff'));
  } else notes.push('xdelta3 is not installed: its row is not measured.');

  const mb = (n: number | undefined) => (n === undefined ? 'not measured' : `${n.toLocaleString('en')} B (${(n / 1e6).toFixed(2)} MB)`);
  rows.push(['tiu delta', mb(deltaSize), `made in ${made.wallS} s, ${made.rssMiB} MiB peak RSS`]);
  rows.push(['full tiu archive', mb(full), `${(full / deltaSize).toFixed(0)}× the delta`]);
  rows.push(['ostree static-delta generate --inline', mb(ostree), ostree ? `delta/ostree = ${(deltaSize / ostree).toFixed(2)} (target ≤ 0.5); made in ${ostreeGen!.wallS} s, ${ostreeGen!.rssMiB} MiB` : '']);
  rows.push(['xdelta3 -9 of the archives (squashfs images)', mb(xdelta), '']);
  if (!(await has('casync'))) notes.push('casync is not installed: its row is not measured (the main bench measures it when installed).');

  // Apply: the same v1 device twice, once with the delta, once with the full archive.
  const apply: string[][] = [];
  for (const [what, file] of [['delta', delta], ['full archive', arch.v2!]] as const) {
    await using dev = await installedDevice(sys, arch.v1!, await readFile(keys.keyring, 'utf8'), { sizeMiB: 2000 });
    const t = await timed([process.execPath, TIU, 'extract', file, '--root', dev.root, '--keyring', keys.keyring, '--json']);
    apply.push([`tiu extract (${what})`, `${t.wallS} s`, `${t.rssMiB} MiB`]);
  }
  const md = [
    '# Delta bench: Debian v1 -> v2',
    '',
    `Generated by bench/delta.ts on ${new Date().toISOString()}.`,
    '',
    '| download | bytes | note |',
    '|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    '| apply onto v1 | wall | peak RSS |',
    '|---|---|---|',
    ...apply.map((r) => `| ${r.join(' | ')} |`),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'delta.md'), md);
  process.stdout.write(md);
} finally {
  if (!process.env.BENCH_KEEP) await rm(dir, { recursive: true, force: true });
}

