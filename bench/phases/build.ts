/**
 * Build side: `tiu create` against mksquashfs + `veritysetup format --no-superblock` (same
 * compression, level, block size and excludes as tiu's defaults) and against mksquashfs +
 * `rauc bundle` (verity format, same signing keys). All from the v2 tree, in alternation.
 * Leaves the last tiu archive as <work>/v2.tiu for the device side.
 */
import { mkdir, rename, rm, stat, writeFile, link } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_CONFIG } from '../../src/tiu/config.ts';
import { squashfsExcludePatterns } from '../../src/tiu/archive/imageindex.ts';
import { addRun, errorText, failRow, newRow, rotate, tiuArgv, type BenchContext } from '../lib/context.ts';
import { runTimed, sumSamples, type Step } from '../lib/measure.ts';
import type { Sample } from '../lib/stats.ts';
import { breakdown, type StampedLine } from '../lib/breakdown.ts';

/** The mksquashfs excludes tiu itself derives from an exclude list (contents only). Pure. */
export function squashfsExcludes(exclude: readonly string[]): string[] {
  return exclude.flatMap((p) => squashfsExcludePatterns(p));
}

/**
 * The baseline mksquashfs argv: tiu's default compression settings and the same general flags
 * tiu passes (src/squashfs/options.ts), without tiu's pseudo file (its index). Pure.
 */
export function mksquashfsArgv(tree: string, out: string, cfg = DEFAULT_CONFIG): string[] {
  return [
    'mksquashfs', tree, out, '-noappend', '-no-recovery', '-exit-on-error', '-reproducible', '-comp', cfg.compression,
    ...(cfg.compressionLevel !== undefined ? ['-Xcompression-level', String(cfg.compressionLevel)] : []),
    '-b', String(cfg.blockSize), '-xattrs', '-quiet', '-no-progress', '-wildcards', '-e', ...squashfsExcludes(cfg.exclude),
  ];
}

/** A minimal RAUC manifest for a verity bundle with one image. Pure. */
export function raucManifest(compatible: string, version: string): string {
  return `[update]\ncompatible=${compatible}\nversion=${version}\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.img\n`;
}

async function size(...files: string[]): Promise<number> {
  let n = 0;
  for (const f of files) n += (await stat(f)).size;
  return n;
}

export async function benchBuild(ctx: BenchContext, v2Tree: string): Promise<string | undefined> {
  const dir = join(ctx.work, 'build');
  await mkdir(dir, { recursive: true });
  const cfg = DEFAULT_CONFIG;
  ctx.report.build.settings = {
    compression: cfg.compression,
    level: cfg.compressionLevel === undefined ? 'mksquashfs default (zstd: 15)' : String(cfg.compressionLevel),
    blockSize: cfg.blockSize,
    excludes: squashfsExcludes(cfg.exclude),
  };
  const rows = {
    tiu: newRow('tiu-create', 'tiu create'),
    mksq: newRow('mksquashfs', 'mksquashfs'),
    verity: newRow('veritysetup', 'veritysetup format --no-superblock'),
    base: newRow('mksquashfs+veritysetup', 'mksquashfs + veritysetup format (baseline)'),
    rauc: newRow('rauc-bundle', 'rauc bundle (verity) of that squashfs'),
    raucTotal: newRow('mksquashfs+rauc', 'mksquashfs + rauc bundle'),
  };
  ctx.report.build.rows = Object.values(rows);
  const tiuOut = join(dir, 'v2.tiu');
  const sqfs = join(dir, 'v2.sqfs');
  const hash = join(dir, 'v2.verity');
  const raucIn = join(dir, 'rauc-in');
  const raucb = join(dir, 'v2.raucb');
  let lastTiu: string | undefined;

  const timed = async (steps: Step[]): Promise<Sample> => (await runTimed(ctx.sys, steps, ctx.timeFile)).sample;

  for (let i = 0; i < ctx.runs; i++) {
    let mksqSample: Sample | undefined;
    for (const which of rotate(['tiu', 'baseline'] as const, i)) {
      if (which === 'tiu') {
        if (rows.tiu.error) continue;
        ctx.say(`build ${i + 1}/${ctx.runs}: tiu create`);
        await rm(tiuOut, { force: true });
        try {
          addRun(rows.tiu, await timed([{ argv: tiuArgv(ctx, '-q', 'create', v2Tree, '-o', tiuOut, '--key', ctx.keys.key, '--cert', ctx.keys.cert, '--compatible', 'tiu-bench', '--version', '2', '--no-progress') }]));
          rows.tiu.artifactBytes = await size(tiuOut);
          lastTiu = tiuOut;
        } catch (e) {
          failRow(rows.tiu, e);
        }
        continue;
      }
      // Baselines: mksquashfs, then veritysetup and rauc on that same squashfs.
      if (rows.mksq.error) continue;
      ctx.say(`build ${i + 1}/${ctx.runs}: mksquashfs + veritysetup format, rauc bundle`);
      await rm(sqfs, { force: true });
      try {
        mksqSample = await timed([{ argv: mksquashfsArgv(v2Tree, sqfs) }]);
        addRun(rows.mksq, mksqSample);
        rows.mksq.artifactBytes = await size(sqfs);
      } catch (e) {
        failRow(rows.mksq, e);
        failRow(rows.base, e);
        failRow(rows.raucTotal, e);
        continue;
      }
      if (!rows.verity.error) {
        await rm(hash, { force: true });
        try {
          const v = await timed([{ argv: ['veritysetup', 'format', '--no-superblock', sqfs, hash] }]);
          addRun(rows.verity, v);
          addRun(rows.base, sumSamples([mksqSample, v]));
          rows.verity.artifactBytes = await size(hash);
          rows.base.artifactBytes = await size(sqfs, hash);
        } catch (e) {
          failRow(rows.verity, e);
          failRow(rows.base, e);
        }
      }
      if (!rows.rauc.error) {
        await rm(raucIn, { recursive: true, force: true });
        await rm(raucb, { force: true });
        await mkdir(raucIn);
        await writeFile(join(raucIn, 'manifest.raucm'), raucManifest('tiu-bench', '2'));
        await link(sqfs, join(raucIn, 'rootfs.img')); // a hardlink: no copy outside the timing either
        try {
          const r = await timed([{ argv: ['rauc', 'bundle', '--cert', ctx.keys.cert, '--key', ctx.keys.key, raucIn, raucb] }]);
          addRun(rows.rauc, r);
          addRun(rows.raucTotal, sumSamples([mksqSample, r]));
          rows.rauc.artifactBytes = await size(raucb);
          rows.raucTotal.artifactBytes = rows.rauc.artifactBytes;
        } catch (e) {
          failRow(rows.rauc, e);
          failRow(rows.raucTotal, e);
        }
      }
    }
  }
  ctx.say('build: one tiu --debug create for the time breakdown (untimed)');
  try {
    const lines: StampedLine[] = [];
    const t0 = performance.now();
    const out = join(dir, 'breakdown.tiu');
    const [node, ...args] = tiuArgv(ctx, '--debug', 'create', v2Tree, '-o', out, '--key', ctx.keys.key, '--cert', ctx.keys.cert, '--compatible', 'tiu-bench', '--version', '2');
    await ctx.sys.run(node!, args, { onLine: (line) => lines.push({ t: (performance.now() - t0) / 1000, line }) });
    ctx.report.build.breakdown = breakdown(lines, (performance.now() - t0) / 1000);
    await rm(out, { force: true });
  } catch (e) {
    ctx.report.notMeasured.push({ what: 'time breakdown of tiu create', reason: errorText(e) });
  }
  rows.rauc.note = 'signed with the same development key, which RAUC accepts (its extended key usage has emailProtection besides codeSigning); no --keyring, so no verification after signing';
  const keep = join(ctx.work, 'v2.tiu');
  if (lastTiu) await rename(lastTiu, keep);
  await rm(dir, { recursive: true, force: true });
  return lastTiu ? keep : undefined;
}
