/**
 * `npm run bench`: tiu measured side by side with the baseline tools. See bench/README.md.
 *
 *   BENCH_RUNS=3            runs per tool (alternating)
 *   BENCH_DIR=/var/tmp/tiu-bench   scratch directory (outside the repo; removed at the end)
 *   BENCH_ONLY=build,verity,verify,device,download,delta,repo-check   run only these phases
 *   BENCH_OUT=bench/results results directory (latest.md, latest.json)
 *   BENCH_DOWNLOAD_ARCHIVE=FILE   a ready v2 archive for the download phase (no tiu create)
 *   BENCH_KEEP=1            keep the scratch directory
 *   BENCH_SKIP_SETUP=1      do not run scripts/setup.sh
 *   BENCH_STEP_TIMEOUT=900  seconds after which a measured command is killed (then "not measured")
 *
 * Side effects: installs Debian packages through scripts/setup.sh, builds the Debian fixture
 * trees once (cached in /var/cache/tiu-fixtures), creates loop devices and mounts below
 * BENCH_DIR (all removed at the end, also after a failure or Ctrl-C).
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../src/core/log.ts';
import { createSystem, type System } from '../src/core/system.ts';
import { errorText, type BenchContext } from './lib/context.ts';
import { cleanupStale } from './lib/device.ts';
import { renderMarkdown } from './lib/markdown.ts';
import { GNU_TIME, load1 } from './lib/measure.ts';
import { evaluateTargets } from './lib/targets.ts';
import { emptyReport, type BenchReport } from './lib/types.ts';
import { benchBuild } from './phases/build.ts';
import { buildCorpus, createArchive } from './phases/corpus.ts';
import { benchDevice } from './phases/device.ts';
import { benchDownload } from './phases/download.ts';
import { benchDelta } from './phases/delta.ts';
import { benchRepoCheck } from './phases/repo-check.ts';
import { benchVerify } from './phases/verify.ts';
import { benchVerity } from './phases/verity.ts';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const runs = Number(process.env.BENCH_RUNS ?? 3);
const work = resolve(process.env.BENCH_DIR ?? '/var/tmp/tiu-bench');
const outDir = resolve(process.env.BENCH_OUT ?? join(repo, 'bench/results'));
/** A ready v2 archive for the download phase (skips the corpus when no other phase needs it). */
const downloadArchive = process.env.BENCH_DOWNLOAD_ARCHIVE ? resolve(process.env.BENCH_DOWNLOAD_ARCHIVE) : undefined;
const only = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : undefined;
const phase = (name: string) => !only || only.has(name);
const started = Date.now();

function say(msg: string): void {
  const t = ((Date.now() - started) / 1000).toFixed(0).padStart(5);
  process.stderr.write(`[bench ${t}s] ${msg}\n`);
}

async function versionOf(sys: System, file: string, args: string[]): Promise<string> {
  const r = await sys.run(file, args, { allowFailure: true }).catch(() => undefined);
  const text = `${r?.stdout ?? ''}\n${r?.stderr ?? ''}`.split('\n').map((l) => l.trim()).find((l) => /\d/.test(l)) ?? '';
  return /v?(\d+(?:\.\d+)+|\b\d+\b)/.exec(text.replace(file, ''))?.[1] ?? 'unknown';
}

async function toolVersions(sys: System): Promise<Record<string, string>> {
  return {
    mksquashfs: await versionOf(sys, 'mksquashfs', ['-version']),
    veritysetup: await versionOf(sys, 'veritysetup', ['--version']),
    rauc: await versionOf(sys, 'rauc', ['--version']),
    casync: await versionOf(sys, 'casync', ['--version']),
    ostree: (await sys.run('ostree', ['--version'], { allowFailure: true }).catch(() => undefined))?.stdout.match(/Version: '?([\d.]+)/)?.[1] ?? 'unknown',
    rsync: await versionOf(sys, 'rsync', ['--version']),
    btrfs: await versionOf(sys, 'btrfs', ['--version']),
    openssl: await versionOf(sys, 'openssl', ['version']),
  };
}

async function writeResults(report: BenchReport): Promise<void> {
  report.targets = evaluateTargets(report);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  await writeFile(join(outDir, 'latest.md'), renderMarkdown(report));
}

async function main(): Promise<number> {
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`BENCH_RUNS must be a positive whole number, got '${process.env.BENCH_RUNS}'`);
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (loop devices, mounts, btrfs)');
  if (work === repo || work.startsWith(repo + '/')) throw new Error(`BENCH_DIR ${work} must be outside the repository`);
  const raw = createSystem(createLogger(process.env.BENCH_DEBUG ? 'debug' : 'warn'));
  // After Ctrl-C / SIGTERM the phases must start nothing new while the cleanup unmounts.
  let stopping = false;
  const sys: System = { ...raw, run: (file, args, o) => (stopping ? Promise.reject(new Error('interrupted')) : raw.run(file, args, o)) };

  if (!process.env.BENCH_SKIP_SETUP) {
    say('setup: scripts/setup.sh with casync ostree rauc time');
    await sys.run('bash', [join(repo, 'scripts/setup.sh')], { cwd: repo, env: { TIU_SETUP_EXTRA: 'casync ostree rauc time' }, inherit: true });
  }
  if (!existsSync(GNU_TIME)) throw new Error(`${GNU_TIME} (GNU time) is missing: apt-get install time`);

  await cleanupStale(sys, work);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  if (process.env.BENCH_TIU !== 'source') {
    say('build: npm run build (tiu is measured as the bundle dist/tiu.mjs, what devices run)');
    await sys.run(process.execPath, [join(repo, 'scripts/build.ts')], { cwd: repo });
  }

  const cpus = os.cpus();
  const report = emptyReport({
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    host: os.hostname(),
    kernel: os.release(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    runs,
    workDir: work,
    tools: await toolVersions(sys),
    loadAtStart: await load1(),
  });
  const ctx: BenchContext = {
    sys,
    repo,
    work,
    runs,
    keys: { key: join(work, 'keys/signing.key.pem'), cert: join(work, 'keys/signing.cert.pem'), keyring: join(work, 'keys/keyring.pem') },
    timeFile: join(work, 'time.txt'),
    report,
    say,
  };

  const onSignal = (sig: NodeJS.Signals) => {
    stopping = true;
    say(`${sig}: cleaning up ${work}`);
    // A moment for the command in flight to end (it got the signal too on Ctrl-C).
    setTimeout(() => void cleanupStale(raw, work).finally(() => process.exit(130)), 2000);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    // Needs no corpus: first, so BENCH_ONLY=repo-check is quick.
    if (phase('repo-check')) {
      try {
        await benchRepoCheck(ctx);
      } catch (e) {
        report.repoCheck = { targets: 0, rows: [], downloads: {}, ...report.repoCheck, error: errorText(e) };
      }
      await writeResults(report);
    } else report.notMeasured.push({ what: 'tiu check against a large repository', reason: 'skipped (BENCH_ONLY)' });
    let corpus;
    try {
      if (['build', 'verify', 'device'].some(phase) || (phase('download') && !downloadArchive)) corpus = await buildCorpus(ctx);
    } catch (e) {
      report.corpus.error = errorText(e);
      for (const what of ['build side', 'tiu verify', 'device side']) report.notMeasured.push({ what, reason: `no corpus: ${report.corpus.error}` });
    }
    let v2Tiu: string | undefined;
    if (corpus && phase('build')) {
      try {
        v2Tiu = await benchBuild(ctx, corpus.v2);
      } catch (e) {
        report.build.error = errorText(e);
      }
      await writeResults(report);
    } else if (!phase('build')) report.notMeasured.push({ what: 'build side', reason: 'skipped (BENCH_ONLY)' });

    if (phase('verity')) {
      try {
        await benchVerity(ctx);
      } catch (e) {
        report.verity.error = errorText(e);
      }
      await writeResults(report);
    } else report.notMeasured.push({ what: 'verity hashing throughput', reason: 'skipped (BENCH_ONLY)' });

    if (corpus && phase('verify')) {
      try {
        await benchVerify(ctx, corpus.v1Tiu);
      } catch (e) {
        report.verify.error = errorText(e);
      }
      await writeResults(report);
    } else if (!phase('verify')) report.notMeasured.push({ what: 'tiu verify memory', reason: 'skipped (BENCH_ONLY)' });

    if (corpus && phase('device')) {
      try {
        if (!v2Tiu) {
          say('device: tiu create v2.tiu (untimed; the build phase did not leave one)');
          v2Tiu = join(work, 'v2.tiu');
          await createArchive(ctx, corpus.v2, v2Tiu, '2');
        }
        await benchDevice(ctx, corpus.v1Tiu, v2Tiu);
      } catch (e) {
        report.device.error = errorText(e);
      }
    } else if (!phase('device')) report.notMeasured.push({ what: 'device side', reason: 'skipped (BENCH_ONLY)' });

    if ((corpus || downloadArchive) && phase('download')) {
      try {
        if (!v2Tiu && downloadArchive) v2Tiu = downloadArchive;
        if (!v2Tiu && corpus) {
          say('download: tiu create v2.tiu (untimed; no earlier phase left one)');
          v2Tiu = join(work, 'v2.tiu');
          await createArchive(ctx, corpus.v2, v2Tiu, '2');
        }
        await benchDownload(ctx, v2Tiu!);
      } catch (e) {
        report.download.error = errorText(e);
      }
      await writeResults(report);
    } else if (!phase('download')) report.notMeasured.push({ what: 'download throughput', reason: 'skipped (BENCH_ONLY)' });

    if (phase('delta')) {
      try {
        const d = await benchDelta(sys, join(work, 'delta'), say);
        report.delta = d.markdown;
        report.deltaBytes = { tiu: d.deltaBytes, ostree: d.ostreeBytes };
        report.deltaApply = d.apply;
      } catch (e) {
        report.notMeasured.push({ what: 'delta', reason: errorText(e) });
      }
      await writeResults(report);
    } else report.notMeasured.push({ what: 'delta', reason: 'skipped (BENCH_ONLY)' });
  } finally {
    await cleanupStale(raw, work);
    if (!process.env.BENCH_KEEP) await rm(work, { recursive: true, force: true });
  }
  report.meta.loadAtEnd = await load1();
  report.meta.durationS = (Date.now() - started) / 1000;
  await writeResults(report);

  process.stdout.write(summary(report));
  say(`wrote ${join(outDir, 'latest.md')} and latest.json`);
  return 0;
}

/** Medians and ratios for the terminal. */
function summary(r: BenchReport): string {
  const md = renderMarkdown(r);
  // The tables are readable as they are; print the targets and the measurement tables.
  return md.split('\n').filter((l) => !l.startsWith('Every run')).join('\n') + '\n';
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench: ${errorText(e)}\n`);
    process.exit(1);
  },
);
