/**
 * `tiu check` against a large repository (issue #12): 100 versions × 20 device types (2,000
 * targets), served over HTTP on 127.0.0.1 by a server that counts the bytes it sends. A loop
 * btrfs device with a small image of one of those device types runs the bundle exactly as a
 * device would (`tiu check --root … --repository URL --json`, a whole process under GNU time):
 * first with an empty metadata cache, then when nothing changed (the goal: ≤ 1 s, ≤ 100 MiB,
 * ≤ 64 KiB of metadata).
 *
 * Side effects: a loop device and mounts below ctx.work (removed at the end).
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join, normalize } from 'node:path';
import { TargetFile } from '@tufjs/models';
import { init } from '../../src/tiu/repo/ops.ts';
import { commitTargets } from '../../src/tiu/repo/repository.ts';
import { loadRoleKey } from '../../src/tiu/repo/keys.ts';
import { createArchive } from '../../src/tiu/archive/create.ts';
import { generateDevKeys } from '../../src/tiu/sign/keygen.ts';
import { install } from '../../src/tiu/device/install.ts';
import { mountSystem } from '../../src/snapshot/layout.ts';
import { DEFAULT_EXCLUDES } from '../../src/tiu/config.ts';
import { addRun, failRow, newRow, tiuArgv, type BenchContext } from '../lib/context.ts';
import { attachNewBtrfs, detach } from '../lib/device.ts';
import { runTimed } from '../lib/measure.ts';

export const VERSIONS = 100;
export const DEVICES = 20;

/** The repository: every device type has versions 1.1 … 1.100; every tenth is on stable, 1.100 phased 10 %. */
async function makeRepository(repo: string, keys: string): Promise<void> {
  const r = await init(repo, keys);
  const targets: Record<string, TargetFile> = {};
  const at = '2026-12-01T00:00:00Z';
  for (let d = 0; d < DEVICES; d++) {
    const compatible = `device-${String(d).padStart(2, '0')}`;
    for (let v = 1; v <= VERSIONS; v++) {
      const path = `${compatible}/1.${v}/os-1.${v}.tiu`;
      targets[path] = new TargetFile({ path, length: 400_000_000 + v, hashes: { sha256: (d * 1000 + v).toString(16).padStart(64, '0') }, unrecognizedFields: { custom: { tiu: {
        compatible, version: `1.${v}`, build: v, kind: 'full', index: v.toString(16).padStart(64, '0'), update: `1.${v}`, part: 'image',
        channels: v % 10 === 0 ? { stable: { phased: v === 100 ? 10 : 100, since: at }, beta: { phased: 100, since: at } } : { beta: { phased: 100, since: at } }, created: at,
      } } } });
    }
  }
  await commitTargets(r, targets, { targets: await loadRoleKey(keys, 'targets'), snapshot: await loadRoleKey(keys, 'snapshot'), timestamp: await loadRoleKey(keys, 'timestamp') }, new Date());
}

/** A static server over `dir` that counts what it sends (the metadata a check downloads). */
async function countingServer(dir: string): Promise<{ server: Server; url: string; take(): { bytes: number; files: string[] } }> {
  let bytes = 0;
  let files: string[] = [];
  const server = createServer((req, res) => {
    const p = normalize(join(dir, decodeURIComponent(req.url ?? '/')));
    files.push((req.url ?? '').split('/').pop() ?? '');
    if (!p.startsWith(dir + '/')) return void res.writeHead(403).end();
    readFile(p).then(
      (body) => {
        bytes += body.length;
        res.writeHead(200, { 'content-length': body.length }).end(body);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    take() {
      const t = { bytes, files };
      bytes = 0;
      files = [];
      return t;
    },
  };
}

export async function benchRepoCheck(ctx: BenchContext): Promise<void> {
  const dir = join(ctx.work, 'repo-check');
  const www = join(dir, 'www');
  const repo = join(www, 'repo');
  await mkdir(www, { recursive: true });
  ctx.say(`repo-check: a repository of ${VERSIONS} versions × ${DEVICES} device types`);
  await makeRepository(repo, join(dir, 'repo.keys'));
  const rc = (ctx.report.repoCheck = { targets: VERSIONS * DEVICES, rows: [newRow('tiu-check-first', 'tiu check, empty metadata cache'), newRow('tiu-check-unchanged', 'tiu check, nothing changed')], downloads: {} as Record<string, { bytes: number; files: string[] }> });

  // The device: a small image of device-00 (version 1.50) shipping the repository's root.
  const keys = await generateDevKeys({ outDir: join(dir, 'archive-keys') });
  const tree = join(dir, 'tree');
  for (const d of ['usr/lib/tiu', 'etc', 'var', 'usr/bin']) await mkdir(join(tree, d), { recursive: true });
  await writeFile(join(tree, 'usr/lib/tiu/repository-root.json'), await readFile(join(repo, 'metadata/1.root.json')));
  await writeFile(join(tree, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
  await writeFile(join(tree, 'usr/bin/hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
  const archive = join(dir, 'device-00.tiu');
  await createArchive(ctx.sys, {
    source: tree, output: archive, keyPem: await readFile(keys.signingKey, 'utf8'), certPem: await readFile(keys.signingCert, 'utf8'),
    compatible: 'device-00', version: '1.50', compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES, sourceDateEpoch: 1_700_000_000,
  });
  const top = join(dir, 'top');
  const root = join(dir, 'root');
  const loop = await attachNewBtrfs(ctx.sys, join(dir, 'device.img'), '600M', top);
  const srv = await countingServer(www);
  try {
    await install(ctx.sys, { archive, top, keyringPem: await readFile(keys.keyring, 'utf8'), bootloader: 'none' });
    await mkdir(root);
    await mountSystem(ctx.sys, loop, root);
    const conf = join(dir, 'tiu.conf');
    await writeFile(conf, '');
    const check = { argv: tiuArgv(ctx, 'check', '--root', root, '--repository', `${srv.url}/repo`, '--channel', 'stable', '--json', '--config', conf) };
    for (let i = 0; i < ctx.runs; i++) {
      await rm(join(root, 'var/lib/tiu/repository'), { recursive: true, force: true });
      for (const row of rc.rows) {
        ctx.say(`repo-check: ${row.label}, run ${i + 1}/${ctx.runs}`);
        try {
          srv.take();
          const r = await runTimed(ctx.sys, [check], ctx.timeFile);
          const out = JSON.parse(r.stdout[0] ?? '{}') as { outcome?: string };
          if (out.outcome !== 'update') throw new Error(`tiu check said ${JSON.stringify(out.outcome)}, expected an update`);
          addRun(row, r.sample);
          rc.downloads[row.id] = srv.take();
        } catch (e) {
          failRow(row, e);
        }
      }
    }
  } finally {
    srv.server.close();
    await ctx.sys.run('umount', ['-R', root], { allowFailure: true });
    await ctx.sys.run('umount', [top], { allowFailure: true });
    await detach(ctx.sys, loop);
  }
}
