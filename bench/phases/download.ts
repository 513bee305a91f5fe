/**
 * Download throughput: the v2 archive from Debian's nginx on 127.0.0.1, tiu's downloader
 * (bench/download-tiu.ts, a whole Node process like `tiu update` would be; also bundled like
 * dist/tiu.mjs) against `curl -o FILE` in the same run, in alternation. Peak RSS includes Node
 * and the curl child. Then the same for a large file of random bytes (BENCH_DOWNLOAD_LARGE_MIB,
 * default 512; 0 skips it), where the per-byte rate dominates and fixed costs do not.
 */
import { randomFillSync } from 'node:crypto';
import { copyFile, mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { addRun, failRow, newRow, rotate, type BenchContext } from '../lib/context.ts';
import { runTimed, type Step } from '../lib/measure.ts';
import { startNginx } from '../lib/nginx.ts';
import { build } from 'rolldown';

export async function benchDownload(ctx: BenchContext, archive: string): Promise<void> {
  const dir = join(ctx.work, 'download');
  const www = join(dir, 'www');
  await mkdir(www, { recursive: true });
  await copyFile(archive, join(www, 'v2.tiu'));
  ctx.report.download.archiveBytes = (await stat(archive)).size;
  await using ngx = await startNginx(dir, www);
  const url = `${ngx.base}/v2.tiu`;
  const cache = join(dir, 'cache');
  const out = join(dir, 'curl-v2.tiu');
  // The same script bundled as dist/tiu.mjs is (one file, native bindings from node_modules):
  // the whole process as a device pays it, without type stripping of ~100 source files.
  const bundled = join(ctx.repo, 'dist/bench-download-tiu.mjs');
  await build({ input: join(ctx.repo, 'bench/download-tiu.ts'), platform: 'node', external: ['@napi-rs/xattr', 'fs-native-extensions'], logLevel: 'warn', output: { file: bundled, format: 'esm', codeSplitting: false } });
  // curl -o started from Node and timed around the spawn: the baseline of tiu's download() call
  // (bench/download-curl.ts; bundled too, so neither side pays type stripping).
  const curlNode = join(ctx.repo, 'dist/bench-download-curl.mjs');
  await build({ input: join(ctx.repo, 'bench/download-curl.ts'), platform: 'node', logLevel: 'warn', output: { file: curlNode, format: 'esm', codeSplitting: false } });
  const tools: { id: string; label: string; steps: Step[] }[] = [
    { id: 'tiu-download', label: 'tiu download (bench/download-tiu.ts)', steps: [{ argv: [process.execPath, join(ctx.repo, 'bench/download-tiu.ts'), url, cache] }] },
    { id: 'curl', label: 'curl -o', steps: [{ argv: ['curl', '--silent', '--show-error', '--fail', '-o', out, url] }] },
    { id: 'tiu-download-bundle', label: 'tiu download, bundled (whole process)', steps: [{ argv: [process.execPath, bundled, url, cache] }] },
    { id: 'curl-node', label: 'curl -o started from Node (bench/download-curl.ts, whole process)', steps: [{ argv: [process.execPath, curlNode, url, out] }] },
  ];
  const rows = tools.map((t) => newRow(t.id, t.label));
  // The download() call alone, timed inside the process: Node's start and module loading are
  // paid once per `tiu update`, not per byte (they dominate a 50 MB file on loopback). Every
  // download pays everything inside the call: lock, cache metadata, curl's start, the
  // transfer, the rename. The bundled call is the judged one (bench/lib/targets.ts): it is
  // what a device runs; from source, Node's type stripping leaves a larger process (slower to
  // fork curl from) still compiling in the background while curl runs. Its baseline is curl -o
  // timed the same way (curl-call), not the `curl -o` row, whose wall time includes the
  // harness starting GNU time and timeout.
  const transfer = newRow('tiu-download-transfer', 'tiu download() call alone, from source (without Node start)');
  const bundleTransfer = newRow('tiu-download-bundle-transfer', 'tiu download() call alone, bundled (without Node start)');
  const curlCall = newRow('curl-call', 'curl -o alone, timed around its spawn from Node (without Node start)');
  rows.splice(1, 0, transfer);
  rows.splice(rows.findIndex((r) => r.id === 'tiu-download-bundle') + 1, 0, bundleTransfer);
  rows.push(curlCall);
  const callRow: Record<string, typeof transfer> = { 'tiu-download': transfer, 'tiu-download-bundle': bundleTransfer, 'curl-node': curlCall };
  ctx.report.download.rows = rows;
  // One untimed round first: the file in the page cache for both.
  await runTimed(ctx.sys, tools[1]!.steps, ctx.timeFile).catch(() => {});
  for (let i = 0; i < ctx.runs; i++) {
    for (const t of rotate(tools, i)) {
      const row = rows.find((r) => r.id === t.id)!;
      if (row.error) continue;
      await rm(cache, { recursive: true, force: true });
      await rm(out, { force: true });
      ctx.say(`download: ${t.label}, run ${i + 1}/${ctx.runs}`);
      try {
        const r = await runTimed(ctx.sys, t.steps, ctx.timeFile);
        addRun(row, r.sample);
        const call = callRow[t.id];
        if (call) addRun(call, { ...r.sample, wallS: (JSON.parse(r.stdout[0] ?? '{}') as { transferS: number }).transferS });
      } catch (e) {
        failRow(row, e);
        if (callRow[t.id]) failRow(callRow[t.id]!, e);
      }
    }
  }
  await benchLarge(ctx, www, ngx.base, bundled, curlNode, cache, out);
}

/** Writes `bytes` random bytes to `file` (untimed input). */
async function randomFile(file: string, bytes: number): Promise<void> {
  const fh = await open(file, 'w');
  try {
    const buf = Buffer.alloc(8 * 1024 * 1024);
    for (let done = 0; done < bytes; done += buf.length) {
      randomFillSync(buf);
      await fh.write(buf, 0, Math.min(buf.length, bytes - done));
    }
  } finally {
    await fh.close();
  }
}

/** The large-file rows: tiu's download() call (bundled) against curl -o, in alternation. */
async function benchLarge(ctx: BenchContext, www: string, base: string, bundled: string, curlNode: string, cache: string, out: string): Promise<void> {
  const mib = Number(process.env.BENCH_DOWNLOAD_LARGE_MIB ?? 512);
  if (!(mib > 0)) return;
  const bytes = Math.round(mib * 1024 * 1024);
  ctx.say(`download: ${mib} MiB of random bytes (untimed)`);
  await randomFile(join(www, 'large.bin'), bytes);
  const url = `${base}/large.bin`;
  const call = newRow('large-tiu-call', `tiu download() call alone, bundled (${mib} MiB)`);
  const whole = newRow('large-tiu', `tiu download, bundled (whole process, ${mib} MiB)`);
  const curl = newRow('large-curl', `curl -o (${mib} MiB)`);
  const curlNodeRow = newRow('large-curl-node', `curl -o started from Node (whole process, ${mib} MiB)`);
  const curlCall = newRow('large-curl-call', `curl -o alone, timed around its spawn from Node (${mib} MiB)`);
  ctx.report.download.large = { bytes, rows: [call, curlCall, curl, whole, curlNodeRow] };
  const tools = [
    { row: whole, call, steps: [{ argv: [process.execPath, bundled, url, cache] }] },
    { row: curl, steps: [{ argv: ['curl', '--silent', '--show-error', '--fail', '-o', out, url] }] },
    { row: curlNodeRow, call: curlCall, steps: [{ argv: [process.execPath, curlNode, url, out] }] },
  ];
  await runTimed(ctx.sys, tools[1]!.steps, ctx.timeFile).catch(() => {});
  for (let i = 0; i < ctx.runs; i++) {
    for (const t of rotate(tools, i)) {
      if (t.row.error) continue;
      await rm(cache, { recursive: true, force: true });
      await rm(out, { force: true });
      ctx.say(`download: ${t.row.label}, run ${i + 1}/${ctx.runs}`);
      try {
        const r = await runTimed(ctx.sys, t.steps, ctx.timeFile);
        addRun(t.row, r.sample);
        if (t.call) addRun(t.call, { ...r.sample, wallS: (JSON.parse(r.stdout[0] ?? '{}') as { transferS: number }).transferS });
      } catch (e) {
        failRow(t.row, e);
        if (t.call) failRow(t.call, e);
      }
    }
  }
  await rm(cache, { recursive: true, force: true });
  await rm(out, { force: true });
  await rm(join(www, 'large.bin'), { force: true });
}
