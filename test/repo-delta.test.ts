/**
 * Deltas through a repository served by Debian's nginx: `tiu publish` makes the delta from the
 * previous version on the channel; a device holding that version downloads the delta (not the
 * full image: nginx's access log) and ends on v2 exactly; a delta that cannot be used (a locally
 * modified base file, a damaged delta file on the server) falls back to the full image, and a
 * device on another base never sees the delta.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testSystem } from './helpers/env.ts';
import { startNginx, type Nginx } from './helpers/http-servers.ts';
import { installedDevice, makeTree, cli, expectSnapshotEquals } from './helpers/device.ts';
import { createArchive } from '../src/tiu/archive/create.ts';
import { generateDevKeys, type DevKeys } from '../src/tiu/sign/keygen.ts';
import { DEFAULT_EXCLUDES } from '../src/tiu/config.ts';
import { loadIndex } from '../src/core/fileindex/io.ts';
import { INDEX_PATH } from '../src/core/fileindex/types.ts';

const sys = testSystem();
let work: string;
let www: string;
let keys: string;
let archiveKeys: DevKeys;
const archives: Record<1 | 2, string> = { 1: '', 2: '' };
let ngx: Nginx | undefined;
let conf: string;
const env = () => ({ TIU_CONFIG_ROOT: join(work, 'confroot') });
const tiu = (args: string[]) => cli([...args, '--config', conf], { env: env(), timeoutMs: 600_000 });
const log = () => ngx!.log();

/** Body bytes nginx sent for the GET requests (access-log entries) whose path matches `re`. */
function bytesSent(entries: { bytes: number; request: string }[], re: RegExp): number {
  let n = 0;
  for (const e of entries) {
    const m = /^GET (\S+) HTTP\/[\d.]+$/.exec(e.request);
    if (m && re.test(m[1]!)) n += e.bytes;
  }
  return n;
}

/** A 256 KiB file of pseudo-random bytes (seeded), with a few bytes changed in v2: a patch's base. */
function bigFile(v: 1 | 2): Buffer {
  const b = Buffer.alloc(256 * 1024);
  let x = 12345;
  for (let i = 0; i < b.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  if (v === 2) for (let i = 1000; i < b.length; i += 50_000) b[i] = b[i]! ^ 0x5a;
  return b;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-repo-delta-'));
  www = join(work, 'www');
  keys = join(work, 'repo.keys');
  await mkdir(join(work, 'confroot'), { recursive: true });
  const init = await cli(['repo', 'init', join(www, 'repo'), '--keys', keys]);
  expect(init.exitCode, init.stderr).toBe(0);
  const rootJson = await readFile(join(www, 'repo/metadata/1.root.json'));
  archiveKeys = await generateDevKeys({ outDir: join(work, 'archive-keys') });
  const keyPem = await readFile(archiveKeys.signingKey, 'utf8');
  const certPem = await readFile(archiveKeys.signingCert, 'utf8');
  for (const v of [1, 2] as const) {
    const tree = join(work, `tree-${v}`);
    await makeTree(sys, tree, v);
    await mkdir(join(tree, 'usr/lib/tiu'), { recursive: true });
    await writeFile(join(tree, 'usr/lib/tiu/repository-root.json'), rootJson);
    await writeFile(join(tree, 'usr/lib/image-version'), `${v}.0\n`);
    await writeFile(join(tree, 'usr/lib/big.bin'), bigFile(v));
    archives[v] = join(work, `os-${v}.0.tiu`);
    await createArchive(sys, { source: tree, output: archives[v], keyPem, certPem, compatible: 'test-x86_64', version: `${v}.0`, compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES, sourceDateEpoch: 1_700_000_000 + v });
    await rm(tree, { recursive: true, force: true });
  }
  ngx = await startNginx(work, www);
  conf = join(work, 'tiu.conf');
  await writeFile(conf, `[trust]\nkeyring = ${archiveKeys.keyring}\n\n[update]\nrepository = ${ngx.base}/repo\n`);
  const sign = ['--key', archiveKeys.signingKey, '--cert', archiveKeys.signingCert];
  const p1 = await tiu(['publish', archives[1], '--repo', join(www, 'repo'), '--keys', keys, '--channel', 'stable', ...sign, '--json']);
  expect(p1.exitCode, p1.stderr).toBe(0);
  expect(JSON.parse(p1.stdout).deltas).toEqual([]);
}, 600_000);

afterAll(async () => {
  await ngx?.[Symbol.asyncDispose]();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('deltas from a repository', () => {
  let deltaPath: string;

  it('publish v2 makes the delta from v1; a v1 device downloads only the delta and ends on v2 exactly', async () => {
    await using dev = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
    const p2 = await tiu(['publish', archives[2], '--repo', join(www, 'repo'), '--keys', keys, '--channel', 'stable', '--key', archiveKeys.signingKey, '--cert', archiveKeys.signingCert, '--json']);
    expect(p2.exitCode, p2.stderr).toBe(0);
    const pub = JSON.parse(p2.stdout);
    expect(pub.deltas).toHaveLength(1);
    expect(pub.deltas[0]).toMatchObject({ kind: 'delta', version: '2.0', build: pub.build });
    deltaPath = pub.deltas[0].path;
    expect(pub.deltas[0].length).toBeLessThan(pub.length / 3);

    const check = await tiu(['check', '--root', dev.root, '--json']);
    expect(check.exitCode, check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ outcome: 'update', chosen: { version: '2.0', images: [{ kind: 'delta' }] } });

    const before = (await log()).length;
    const up = await tiu(['update', '--root', dev.root]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/delta, /);
    const sent = (await log()).slice(before);
    const deltaBytes = bytesSent(sent, /\.tiud$/);
    expect(deltaBytes).toBe(pub.deltas[0].length);
    expect(bytesSent(sent, /\.tiu$/)).toBe(0);
    console.log(`repository delta: downloaded ${deltaBytes} B instead of the full ${pub.length} B`);
    const snap2 = join(dev.root, '.snapshots/2/snapshot');
    expect(await readFile(join(snap2, 'usr/lib/image-version'), 'utf8')).toBe('2.0\n');
    expect((await readFile(join(snap2, 'usr/lib/big.bin'))).equals(bigFile(2))).toBe(true);
    await expectSnapshotEquals(sys, snap2, await loadIndex(join(snap2, INDEX_PATH)));
  });

  it('a locally modified base file: the client falls back to the full image and still ends on v2', async () => {
    await using dev = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
    const snap1 = join(dev.root, '.snapshots/1/snapshot');
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'false']);
    const changed = bigFile(1);
    changed[7] = changed[7]! ^ 0xff;
    await writeFile(join(snap1, 'usr/lib/big.bin'), changed);
    await sys.run('btrfs', ['property', 'set', '-ts', snap1, 'ro', 'true']);
    const before = (await log()).length;
    const up = await tiu(['update', '--root', dev.root]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stderr).toMatch(/usr\/lib\/big\.bin in snapshot 1 differs.*\[DELTA_BASE_MODIFIED\].*full image instead/);
    const sent = (await log()).slice(before);
    expect(bytesSent(sent, /\.tiud$/)).toBeGreaterThan(0);
    expect(bytesSent(sent, /os-2\.0\.tiu$/)).toBeGreaterThan(0);
    const snaps = (await readdir(join(dev.root, '.snapshots'))).filter((s) => /^\d+$/.test(s));
    const snap = join(dev.root, `.snapshots/${Math.max(...snaps.map(Number))}/snapshot`);
    expect((await readFile(join(snap, 'usr/lib/big.bin'))).equals(bigFile(2))).toBe(true);
    await expectSnapshotEquals(sys, snap, await loadIndex(join(snap, INDEX_PATH)));
  });

  it('a damaged delta on the server (a flipped byte): rejected by its signed hash, the full image is used', async () => {
    await using dev = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
    const dir = join(www, 'repo/targets', deltaPath.split('/').slice(0, -1).join('/'));
    const [stored] = (await readdir(dir)).filter((f) => f.endsWith('.tiud'));
    const file = join(dir, stored!);
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[Math.floor(bad.length / 2)] = bad[Math.floor(bad.length / 2)]! ^ 1;
    await writeFile(file, bad);
    try {
      const up = await tiu(['update', '--root', dev.root]);
      expect(up.exitCode, up.stderr).toBe(0);
      expect(up.stderr).toMatch(/\[REPO_TARGET\].*full image instead/);
      const snap = join(dev.root, '.snapshots/2/snapshot');
      expect(await readFile(join(snap, 'usr/lib/image-version'), 'utf8')).toBe('2.0\n');
    } finally {
      await writeFile(file, good);
    }
  });
});
