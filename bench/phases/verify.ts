/**
 * `tiu verify` peak memory (and throughput) on a tiny, the v1 (~50 MB) and a large (~1 GiB of
 * incompressible data) archive, in alternation. Flat memory means the verifier streams.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { join } from 'node:path';
import { addRun, failRow, newRow, rotate, tiuArgv, type BenchContext } from '../lib/context.ts';
import { imageDataSize } from '../lib/image.ts';
import { runTimed } from '../lib/measure.ts';
import { median } from '../lib/stats.ts';
import type { VerifyRow } from '../lib/types.ts';
import { createArchive } from './corpus.ts';

async function writeRandom(path: string, bytes: number): Promise<void> {
  const ws = createWriteStream(path);
  const chunk = 4 * 1024 * 1024;
  for (let done = 0; done < bytes; done += chunk) {
    if (!ws.write(randomBytes(Math.min(chunk, bytes - done)))) await once(ws, 'drain');
  }
  ws.end();
  await once(ws, 'finish');
}

/** A minimal root tree tiu accepts. */
async function tinyTree(dir: string): Promise<void> {
  await mkdir(join(dir, 'etc'), { recursive: true });
  await mkdir(join(dir, 'usr/bin'), { recursive: true });
  await writeFile(join(dir, 'etc/os-release'), 'ID=tiu-bench\nVERSION_ID=1\n');
  await writeFile(join(dir, 'usr/bin/hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
}

export async function benchVerify(ctx: BenchContext, v1Tiu: string): Promise<void> {
  const dir = join(ctx.work, 'verify');
  await mkdir(dir, { recursive: true });
  const largeMiB = Number(process.env.BENCH_LARGE_MIB ?? 1024);

  ctx.say('verify: making a tiny archive and a large one (untimed)');
  const tiny = join(dir, 'tiny.tiu');
  await tinyTree(join(dir, 'tiny-tree'));
  await createArchive(ctx, join(dir, 'tiny-tree'), tiny, '1');
  const large = join(dir, 'large.tiu');
  const largeTree = join(dir, 'large-tree');
  await tinyTree(largeTree);
  await mkdir(join(largeTree, 'usr/share/tiu-bench'), { recursive: true });
  await writeRandom(join(largeTree, 'usr/share/tiu-bench/random.bin'), largeMiB * 1024 * 1024);
  // Level 1 only to save build time: random data does not compress at any level.
  await createArchive(ctx, largeTree, large, '1', ['--level', '1']);
  await rm(largeTree, { recursive: true, force: true });

  // The floor under every tiu memory figure: Node.js itself, and the CLI loading.
  const node: number[] = [];
  const cli: number[] = [];
  for (let i = 0; i < ctx.runs; i++) {
    node.push((await runTimed(ctx.sys, [{ argv: [process.execPath, '-e', '0'] }], ctx.timeFile)).sample.maxRssKiB);
    cli.push((await runTimed(ctx.sys, [{ argv: tiuArgv(ctx, '--version') }], ctx.timeFile)).sample.maxRssKiB);
  }
  ctx.report.memoryFloor = { nodeKiB: median(node), tiuVersionKiB: median(cli) };

  const rows: VerifyRow[] = [];
  for (const [id, label, file, note] of [
    ['verify-tiny', 'tiny tree (2 files)', tiny, undefined],
    ['verify-v1', 'Debian v1', v1Tiu, undefined],
    ['verify-large', `tiny tree + ${largeMiB} MiB random file`, large, 'made with --level 1'],
  ] as const) {
    rows.push({ ...newRow(id, label, note ? { note } : {}), archiveBytes: (await stat(file)).size, dataBytes: await imageDataSize(file) });
  }
  ctx.report.verify.rows = rows;
  const files = new Map(rows.map((r) => [r.id, r.id === 'verify-tiny' ? tiny : r.id === 'verify-v1' ? v1Tiu : large]));
  for (let i = 0; i < ctx.runs; i++) {
    for (const row of rotate(rows, i)) {
      if (row.error) continue;
      ctx.say(`verify ${i + 1}/${ctx.runs}: ${row.label}`);
      try {
        const { sample } = await runTimed(ctx.sys, [{ argv: tiuArgv(ctx, '-q', 'verify', files.get(row.id)!, '--keyring', ctx.keys.keyring) }], ctx.timeFile);
        addRun(row, sample);
      } catch (e) {
        failRow(row, e);
      }
    }
  }
  await rm(large, { force: true });
  await rm(tiny, { force: true });
}
