/**
 * Benchmark of a repository check (issue #12): a repository with 100 versions × 20 device types
 * (2,000 targets), served over HTTP on 127.0.0.1 by a counting server; a fresh Node process per
 * check runs what `tiu check` runs after opening the device (tuf-js refresh + plan). Reports
 * wall time (process start to exit), peak RSS, and metadata bytes per check, for a first check
 * (empty cache) and for a check when nothing changed.
 *
 *   node bench/repo-check.ts
 */
import { mkdtemp, rm, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { execFileSync } from 'node:child_process';
import { TargetFile } from '@tufjs/models';
import { init } from '../src/tiu/repo/ops.ts';
import { commitTargets } from '../src/tiu/repo/repository.ts';
import { loadRoleKey } from '../src/tiu/repo/keys.ts';

if (process.argv[2] === 'client') {
  const t0 = performance.now();
  const { refreshRepository } = await import('../src/tiu/repo/client.ts');
  const { imagesFor } = await import('../src/tiu/repo/model.ts');
  const { planUpdate } = await import('../src/tiu/repo/planner.ts');
  const { phaseBucket } = await import('../src/tiu/repo/phasing.ts');
  const { createLogger } = await import('../src/tiu/log.ts');
  const [url, rootFile, cache] = process.argv.slice(3) as [string, string, string];
  const r = await refreshRepository({ url, trustedRootFile: rootFile, cacheDir: cache, log: createLogger('warn'), compatible: 'device-00' });
  const plan = planUpdate({ images: imagesFor(r.images, 'device-00', 'stable'), channel: 'stable', installed: { version: '1.50', index: '0'.repeat(64) }, bucket: (v) => phaseBucket('bench-machine', v) });
  process.stdout.write(JSON.stringify({ inProcessMs: Math.round(performance.now() - t0), maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), targets: r.images.length, outcome: plan.outcome, chosen: plan.chosen?.last.version }) + '\n');
  process.exit(0);
}

const work = await mkdtemp(join(tmpdir(), 'tiu-bench-repo-'));
try {
  const repo = join(work, 'repo');
  const keys = join(work, 'keys');
  let r = await init(repo, keys);
  const targets: Record<string, TargetFile> = {};
  const at = '2026-12-01T00:00:00Z';
  const DEVICES = Number(process.env.BENCH_DEVICES ?? 20);
  for (let d = 0; d < DEVICES; d++) {
    for (let v = 1; v <= 100; v++) {
      const compatible = `device-${String(d).padStart(2, '0')}`;
      const path = `${compatible}/1.${v}/os-1.${v}.tiu`;
      targets[path] = new TargetFile({ path, length: 400_000_000 + v, hashes: { sha256: (d * 1000 + v).toString(16).padStart(64, '0') }, unrecognizedFields: { custom: { tiu: {
        compatible, version: `1.${v}`, build: v, kind: 'full', index: v.toString(16).padStart(64, '0'), update: `1.${v}`, part: 'image',
        channels: v % 10 === 0 ? { stable: { phased: v === 100 ? 10 : 100, since: at }, beta: { phased: 100, since: at } } : { beta: { phased: 100, since: at } }, created: at,
      } } } });
    }
  }
  r = await commitTargets(r, targets, { targets: await loadRoleKey(keys, 'targets'), snapshot: await loadRoleKey(keys, 'snapshot'), timestamp: await loadRoleKey(keys, 'timestamp') }, new Date());
  const targetsSize = (await readFile(join(repo, 'metadata', `${r.targets.signed.version}.targets.json`))).length;
  let bytes = 0;
  const requests: string[] = [];
  const server = createServer(async (req, res) => {
    const p = normalize(join(repo, decodeURIComponent((req.url ?? '/').replace(/^\/repo/, ''))));
    requests.push(req.url ?? '');
    try {
      const body = await readFile(p);
      bytes += body.length;
      res.writeHead(200, { 'content-length': body.length }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/repo`;
  const cache = join(work, 'cache');
  const rows: string[] = [];
  for (const label of ['first check (empty cache)', 'unchanged', 'unchanged']) {
    bytes = 0;
    requests.length = 0;
    const t0 = performance.now();
    const out = await new Promise<string>((ok, fail) => {
      import('node:child_process').then(({ execFile }) => execFile(process.execPath, [import.meta.filename, 'client', url, join(repo, 'metadata/1.root.json'), cache], (e, so) => (e ? fail(e) : ok(so))));
    });
    const wall = Math.round(performance.now() - t0);
    const j = JSON.parse(out);
    rows.push(`| ${label} | ${wall} ms | ${j.inProcessMs} ms | ${j.maxRssMiB} MiB | ${bytes} B (${requests.length} requests: ${requests.map((u) => u.split('/').pop()).join(', ')}) | ${j.outcome} ${j.chosen ?? ''} |`);
  }
  server.close();
  const report = [`${DEVICES * 100} targets (100 versions × ${DEVICES} devices), targets.json ${targetsSize} bytes; node ${process.version}; ${execFileSync('nproc').toString().trim()} cores`, '', '| check | wall (process) | in process | peak RSS | metadata downloaded | result |', '|---|---|---|---|---|---|', ...rows].join('\n');
  process.stdout.write(report + '\n');
  await writeFile(join(import.meta.dirname, 'results/repo-check.md'), report + '\n').catch(() => {});
} finally {
  if (!process.env.KEEP) await rm(work, { recursive: true, force: true }); else console.log(work);
}
