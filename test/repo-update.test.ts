/**
 * Update repositories end to end: `tiu repo init` + `tiu publish` build a repository, Debian's
 * nginx (started here on 127.0.0.1 with a temp config) serves it, and devices (loop btrfs)
 * update from it with `tiu update`; then the TUF attacks, each with its own error code and no
 * change on the device.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile, readdir, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testSystem } from './helpers/env.ts';
import { startNginx, type Nginx } from './helpers/http-servers.ts';
import { installedDevice, makeTree, cli, type InstalledDevice } from './helpers/device.ts';
import { createArchive } from '../src/tiu/archive/create.ts';
import { generateDevKeys, type DevKeys } from '../src/tiu/sign/keygen.ts';
import { DEFAULT_EXCLUDES } from '../src/tiu/config.ts';
import { ERROR_CODES, type ErrorCode } from '../src/core/errors.ts';

const sys = testSystem();
let work: string;
let www: string;
let keys: string;
let archiveKeys: DevKeys;
const archives: Record<1 | 2 | 3, string> = { 1: '', 2: '', 3: '' };
let ngx: Nginx | undefined;
let base: string;
let conf: string;
const env = () => ({ TIU_CONFIG_ROOT: join(work, 'confroot') });


const tiu = (args: string[]) => cli([...args, '--config', conf], { env: env() });

function expectCode(r: { exitCode: number; stderr: string }, code: ErrorCode): void {
  const last = r.stderr.trim().split('\n').pop() ?? '';
  expect(last, r.stderr).toMatch(new RegExp(`^tiu: error: .* \\[${code}\\]$`));
  expect(r.exitCode, r.stderr).toBe(ERROR_CODES[code].exit);
  expect(r.stderr).not.toMatch(/^\s+at /m);
}

/** What a user sees of the device: its snapshots and the default. */
async function deviceState(dev: InstalledDevice): Promise<unknown> {
  const r = await cli(['status', '--root', dev.root, '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

async function publish(v: 1 | 2 | 3, channel: string, extra: string[] = [], repo = join(www, 'repo')) {
  const r = await tiu(['publish', archives[v], '--repo', repo, '--keys', keys, '--channel', channel, ...extra]);
  expect(r.exitCode, r.stderr).toBe(0);
  return r;
}

/** A copy of the served repository under another name (for an attack to change). */
async function copyRepo(name: string): Promise<string> {
  const dir = join(www, name);
  await cp(join(www, 'repo'), dir, { recursive: true });
  return dir;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-repo-'));
  www = join(work, 'www');
  keys = join(work, 'repo.keys');
  await mkdir(join(work, 'confroot'), { recursive: true });
  const init = await cli(['repo', 'init', join(www, 'repo'), '--keys', keys]);
  expect(init.exitCode, init.stderr).toBe(0);
  // The image ships the repository's first root as its trust anchor.
  const rootJson = await readFile(join(www, 'repo/metadata/1.root.json'));
  archiveKeys = await generateDevKeys({ outDir: join(work, 'archive-keys') });
  const keyPem = await readFile(archiveKeys.signingKey, 'utf8');
  const certPem = await readFile(archiveKeys.signingCert, 'utf8');
  for (const v of [1, 2, 3] as const) {
    const tree = join(work, `tree-${v}`);
    await makeTree(sys, tree, v === 1 ? 1 : 2);
    await mkdir(join(tree, 'usr/lib/tiu'), { recursive: true });
    await writeFile(join(tree, 'usr/lib/tiu/repository-root.json'), rootJson);
    await writeFile(join(tree, 'usr/lib/image-version'), `${v}.0\n`);
    archives[v] = join(work, `os-${v}.0.tiu`);
    await createArchive(sys, { source: tree, output: archives[v], keyPem, certPem, compatible: 'test-x86_64', version: `${v}.0`, compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES, sourceDateEpoch: 1_700_000_000 + v });
    await rm(tree, { recursive: true, force: true });
  }
  ngx = await startNginx(work, www);
  base = ngx.base;
  conf = join(work, 'tiu.conf');
  await writeFile(conf, `[trust]\nkeyring = ${archiveKeys.keyring}\n\n[update]\nrepository = ${base}/repo\n`);
}, 600_000);

afterAll(async () => {
  await ngx?.[Symbol.asyncDispose]();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('tiu update from a repository served by nginx', () => {
  let stableDevice: InstalledDevice;
  let attackDevice: InstalledDevice;
  let beforeV2: string;

  afterAll(async () => {
    await stableDevice?.[Symbol.asyncDispose]();
    await attackDevice?.[Symbol.asyncDispose]();
  });

  it('v1 → v2 on stable; v3 on beta reaches only the beta device', async () => {
    await publish(1, 'stable');
    // An older state of the repository, for the rollback attack below.
    beforeV2 = join(work, 'before-v2');
    await cp(join(www, 'repo'), beforeV2, { recursive: true });
    stableDevice = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
    const upToDate = await tiu(['check', '--root', stableDevice.root, '--json']);
    expect(upToDate.exitCode, upToDate.stderr).toBe(0);
    expect(JSON.parse(upToDate.stdout)).toMatchObject({ outcome: 'up-to-date', channel: 'stable', installed: { version: '1.0' } });

    await publish(2, 'stable');
    const dry = await tiu(['check', '--root', stableDevice.root, '--json']);
    const plan = JSON.parse(dry.stdout);
    expect(plan).toMatchObject({ outcome: 'update', chosen: { version: '2.0', score: 100, admitted: true } });
    expect(plan.paths.length).toBe(1);
    const up = await tiu(['update', '--root', stableDevice.root]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/snapshot 2: 2\.0/);
    expect(await readFile(join(stableDevice.root, '.snapshots/2/snapshot/usr/lib/image-version'), 'utf8')).toBe('2.0\n');
    // The target came over nginx (access log) and nothing else than metadata and that file.
    const log = (await ngx!.log()).map((e) => e.request).join('\n');
    expect(log).toMatch(/GET \/repo\/targets\/test-x86_64\/2\.0\/[0-9a-f]{64}\.os-2\.0\.tiu HTTP/);

    await publish(3, 'beta');
    // The stable device stays on 2.0: nothing new on stable.
    const onV2 = await deviceState(stableDevice);
    const stay = await tiu(['update', '--root', stableDevice.root, '--json']);
    expect(stay.exitCode, stay.stderr).toBe(0);
    expect(JSON.parse(stay.stdout)).toMatchObject({ outcome: 'up-to-date', updated: false, installed: { version: '2.0' } });
    expect(await deviceState(stableDevice)).toEqual(onV2);

    // A beta device (chosen explicitly, recorded) gets 3.0.
    await using beta = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
    const set = await tiu(['channel', 'set', 'beta', '--root', beta.root]);
    expect(set.exitCode, set.stderr).toBe(0);
    const shown = JSON.parse((await tiu(['channel', '--root', beta.root, '--json'])).stdout);
    expect(shown).toMatchObject({ channel: 'beta', from: 'device state' });
    expect(Date.now() - Date.parse(shown.since)).toBeLessThan(60_000);
    const b = await tiu(['update', '--root', beta.root]);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/snapshot 2: 3\.0/);

    // Promoted to stable at 0 %: the stable device sees it but is phased out; at 100 % it is in.
    expect((await tiu(['repo', 'promote', '3.0', '--repo', join(www, 'repo'), '--keys', keys, '--from', 'beta', '--to', 'stable', '--phased', '0'])).exitCode).toBe(0);
    const phased = JSON.parse((await tiu(['check', '--root', stableDevice.root, '--json'])).stdout);
    expect(phased).toMatchObject({ outcome: 'phased-out', chosen: null, paths: [{ version: '3.0', phased: 0, admitted: false }] });
    const status = JSON.parse((await tiu(['repo', 'status', '--repo', join(www, 'repo'), '--json'])).stdout);
    expect(status.images.map((i: { version: string; build: number }) => [i.version, i.build])).toEqual([['1.0', 1], ['2.0', 2], ['3.0', 3]]);
    expect(status.images[2].channels).toMatchObject({ beta: { phased: 100 }, stable: { phased: 0 } });
  }, 600_000);

  it('publish refuses a version already published', async () => {
    expectCode(await tiu(['publish', archives[2], '--repo', join(www, 'repo'), '--keys', keys, '--channel', 'stable']), 'REPO_INVALID');
    const dup = await tiu(['publish', archives[3], '--repo', join(www, 'repo'), '--keys', keys, '--channel', 'edge']);
    expectCode(dup, 'REPO_INVALID');
    expect(dup.stderr).toMatch(/already published/);
  });

  describe('attacks: own error code, nothing changed on the device', () => {
    let before: unknown;
    const attack = async (name: string, code: ErrorCode, args: string[] = []) => {
      const r = await tiu(['update', '--root', attackDevice.root, '--repository', `${base}/${name}`, ...args]);
      expectCode(r, code);
      expect(await deviceState(attackDevice)).toEqual(before);
      return r;
    };

    beforeAll(async () => {
      attackDevice = await installedDevice(sys, archives[1], await readFile(archiveKeys.keyring, 'utf8'));
      before = await deviceState(attackDevice);
    }, 300_000);

    it('replayed older metadata (rollback)', async () => {
      const dir = await copyRepo('rollback');
      const seen = await tiu(['check', '--root', attackDevice.root, '--repository', `${base}/rollback`]);
      expect(seen.exitCode, seen.stderr).toBe(0);
      // The mirror goes back to the metadata of before v2 (validly signed, not expired).
      await cp(join(beforeV2, 'metadata'), join(dir, 'metadata'), { recursive: true, force: true });
      const r = await attack('rollback', 'REPO_ROLLBACK');
      expect(r.stderr).toMatch(/older than what this device already trusts/);
    });

    it('expired timestamp (freeze)', async () => {
      const dir = await copyRepo('freeze');
      const k = join(work, 'freeze.keys');
      await cp(keys, k, { recursive: true });
      const r0 = await tiu(['repo', 'refresh', '--repo', dir, '--keys', k, '--timestamp-expires', '1s']);
      expect(r0.exitCode, r0.stderr).toBe(0);
      await new Promise((r) => setTimeout(r, 2100));
      const r = await attack('freeze', 'REPO_EXPIRED');
      expect(r.stderr).toMatch(/timestamp\.json is expired/);
    });

    it('snapshot and targets of different versions (mix-and-match)', async () => {
      const dir = await copyRepo('mix');
      const md = join(dir, 'metadata');
      // The device type's targets role: the snapshot names its newest version, the mirror serves the one before under that name.
      const versions = (await readdir(md)).map((f) => /^(\d+)\.test-x86_64\.json$/.exec(f)).filter((m) => m).map((m) => Number(m![1])).sort((a, b) => a - b);
      const newest = versions[versions.length - 1]!;
      expect(newest).toBeGreaterThan(1);
      await copyFile(join(md, `${newest - 1}.test-x86_64.json`), join(md, `${newest}.test-x86_64.json`));
      await attack('mix', 'REPO_MISMATCH');
    });

    it('endless metadata', async () => {
      const dir = await copyRepo('endless');
      await writeFile(join(dir, 'metadata/timestamp.json'), '{' + ' '.repeat(4 * 1024 * 1024) + '}');
      const r = await attack('endless', 'REPO_TOO_LARGE');
      expect(r.stderr).toMatch(/larger than allowed/);
    });

    it('target bytes that do not match the signed hashes; an older signed archive served as the newest', async () => {
      const dir = await copyRepo('tampered');
      const tdir = join(dir, 'targets/test-x86_64/2.0');
      const [name] = await readdir(tdir);
      const bytes = await readFile(join(tdir, name!));
      bytes[5000] = bytes[5000]! ^ 1;
      await writeFile(join(tdir, name!), bytes);
      const r = await attack('tampered', 'REPO_TARGET');
      expect(r.stderr).toMatch(/does not match the signed metadata/);
      // No bad bytes (nor their cache metadata) stay in the cache to be resumed from; the
      // downloader's empty per-URL lock file may.
      expect((await readdir(join(attackDevice.root, 'var/cache/tiu')).catch(() => [])).filter((f) => f.includes('os-2.0') && !f.endsWith('.lock'))).toEqual([]);

      // The older, validly signed v1 archive put where v2 belongs.
      const swap = await copyRepo('swapped');
      const sdir = join(swap, 'targets/test-x86_64/2.0');
      const [sname] = await readdir(sdir);
      await copyFile(archives[1], join(sdir, sname!));
      const v1 = (await readFile(archives[1])).length;
      const v2 = (await readFile(archives[2])).length;
      await attack('swapped', v1 > v2 ? 'REPO_TOO_LARGE' : 'REPO_TARGET');
    });

    it('a signed repository offering an older image (downgrade) is refused unless allowed', async () => {
      // The stable device runs 2.0; a "legacy" channel offers only 1.0.
      const dir = await copyRepo('legacy');
      const k = join(work, 'legacy.keys');
      await cp(keys, k, { recursive: true });
      expect((await tiu(['repo', 'promote', '1.0', '--repo', dir, '--keys', k, '--from', 'stable', '--to', 'legacy'])).exitCode).toBe(0);
      const was = await deviceState(stableDevice);
      const r = await tiu(['update', '--root', stableDevice.root, '--repository', `${base}/legacy`, '--channel', 'legacy']);
      expectCode(r, 'REPO_DOWNGRADE');
      expect(r.stderr).toMatch(/older than the installed 2\.0/);
      expect(await deviceState(stableDevice)).toEqual(was);
      const allowed = JSON.parse((await tiu(['check', '--root', stableDevice.root, '--repository', `${base}/legacy`, '--channel', 'legacy', '--allow-downgrade', '--json'])).stdout);
      expect(allowed).toMatchObject({ outcome: 'downgrade', chosen: { version: '1.0' } });
    });

    it('root key rotation: an old client follows the chain; a forged rotation is rejected', async () => {
      const dir = await copyRepo('rotated');
      const k = join(work, 'rotated.keys');
      await cp(keys, k, { recursive: true });
      for (const role of ['timestamp', 'root', 'targets']) {
        const r = await tiu(['repo', 'rotate-key', role, '--repo', dir, '--keys', k]);
        expect(r.exitCode, r.stderr).toBe(0);
      }
      // The device still trusts root 1 (shipped in its image) and walks 2 → 3 → 4.
      const c = await tiu(['check', '--root', attackDevice.root, '--repository', `${base}/rotated`, '--json']);
      expect(c.exitCode, c.stderr).toBe(0);
      expect(JSON.parse(c.stdout)).toMatchObject({ metadata: { root: 4 }, outcome: 'update', chosen: { version: '2.0' } });

      // A root 2 signed by someone else's root key.
      const forged = await copyRepo('forged');
      const evil = join(work, 'evil');
      expect((await tiu(['repo', 'init', evil, '--keys', `${evil}.keys`])).exitCode).toBe(0);
      expect((await tiu(['repo', 'rotate-key', 'root', '--repo', evil, '--keys', `${evil}.keys`])).exitCode).toBe(0);
      await copyFile(join(evil, 'metadata/2.root.json'), join(forged, 'metadata/2.root.json'));
      const r = await attack('forged', 'REPO_SIGNATURE');
      expect(r.stderr).toMatch(/not signed by the trusted keys/);
    });

    it('a file:// repository (USB stick) works too', async () => {
      const c = await tiu(['check', '--root', attackDevice.root, '--repository', `file://${join(www, 'repo')}`, '--json']);
      expect(c.exitCode, c.stderr).toBe(0);
      expect(JSON.parse(c.stdout)).toMatchObject({ outcome: 'update', chosen: { version: '2.0' } });
      const u = await tiu(['update', '--root', attackDevice.root, '--repository', `file://${join(www, 'repo')}`]);
      expect(u.exitCode, u.stderr).toBe(0);
      expect(u.stdout).toMatch(/snapshot 2: 2\.0/);
    });
  });
});
