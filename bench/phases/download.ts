/**
 * Download throughput: the v2 archive from Debian's nginx on 127.0.0.1, tiu's downloader
 * (bench/download-tiu.ts, a whole Node process like `tiu update` would be) against
 * `curl -o FILE` in the same run, in alternation. Peak RSS includes Node and the curl child.
 */
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { addRun, failRow, newRow, rotate, type BenchContext } from '../lib/context.ts';
import { runTimed, type Step } from '../lib/measure.ts';
import { startNginx } from '../lib/nginx.ts';

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
  const tools: { id: string; label: string; steps: Step[] }[] = [
    { id: 'tiu-download', label: 'tiu download (bench/download-tiu.ts)', steps: [{ argv: [process.execPath, join(ctx.repo, 'bench/download-tiu.ts'), url, cache] }] },
    { id: 'curl', label: 'curl -o', steps: [{ argv: ['curl', '--silent', '--show-error', '--fail', '-o', out, url] }] },
  ];
  const rows = tools.map((t) => newRow(t.id, t.label));
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
        addRun(row, (await runTimed(ctx.sys, t.steps, ctx.timeFile)).sample);
      } catch (e) {
        failRow(row, e);
      }
    }
  }
}
