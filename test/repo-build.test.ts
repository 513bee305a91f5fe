/**
 * The repository's build side and the metadata client without a device or a server: `tiu repo`
 * operations on a temp directory, read back by tuf-js over file://, and the mapping of tuf-js's
 * failures to tiu's error codes. Needs no root and no tools.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm, writeFile, readFile, stat, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { init, publish, promote, refresh, rotateKey, status } from '../src/tiu/repo/ops.ts';
import { refreshRepository, classify, repoCacheDir } from '../src/tiu/repo/client.ts';
import { Metadata, Root } from '@tufjs/models';
import { loadRoleKey, signer } from '../src/tiu/repo/keys.ts';
import { writeRoot } from '../src/tiu/repo/repository.ts';
import { rename } from 'node:fs/promises';
import { Updater } from 'tuf-js';
import { createLogger } from '../src/core/log.ts';
import type { Manifest } from '../src/tiu/archive/manifest.ts';

const log = createLogger('warn');
let dir: string;
let repo: string;
let keys: string;

function manifest(version: string, compatible = 'dev'): Manifest {
  return { compatible, version, index: { sha256: version.replace(/\D/g, '').padStart(64, '0'), path: 'x', size: 1, entries: 1 } } as unknown as Manifest;
}

async function archive(name: string, content: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, content);
  return p;
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tiu-repo-build-'));
  repo = join(dir, 'repo');
  keys = join(dir, 'keys');
  await init(repo, keys);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const client = (url = `file://${repo}`) => refreshRepository({ url, trustedRootFile: join(repo, 'metadata/1.root.json'), cacheDir: repoCacheDir(join(dir, 'state'), url), log, compatible: 'dev' });

describe('tiu repo (build side)', () => {
  it('init keeps keys out of the served tree, 0600, and refuses to run twice', async () => {
    expect((await readdir(repo)).sort()).toEqual(['metadata', 'targets']);
    for (const r of ['root', 'targets', 'snapshot', 'timestamp']) expect((await stat(join(keys, `${r}.key.pem`))).mode & 0o777).toBe(0o600);
    await expect(init(repo, join(dir, 'other-keys'))).rejects.toMatchObject({ code: 'REPO_INVALID' });
    await expect(init(join(dir, 'repo2'), keys)).rejects.toMatchObject({ code: 'REPO_INVALID' });
  });

  it('publish gives monotonic builds, hash-prefixed files, and refuses duplicate, older and unorderable versions', async () => {
    const a = await publish({ dir: repo, keysDir: keys, archive: await archive('os-1.0.tiu', 'one'), manifest: manifest('1.0'), channel: 'stable', phased: 100 });
    const b = await publish({ dir: repo, keysDir: keys, archive: await archive('os-1.10.tiu', 'ten'), manifest: manifest('1.10'), channel: 'candidate', phased: 10 });
    expect([a.build, b.build]).toEqual([1, 2]);
    expect(await readFile(join(repo, 'targets/dev/1.10', `${b.sha256}.os-1.10.tiu`), 'utf8')).toBe('ten');
    const again = { dir: repo, keysDir: keys, archive: await archive('x.tiu', 'x'), channel: 'stable', phased: 100 };
    await expect(publish({ ...again, manifest: manifest('1.10') })).rejects.toThrow(/already published/);
    await expect(publish({ ...again, manifest: manifest('1.9') })).rejects.toThrow(/not newer than the published 1\.10/);
    await expect(publish({ ...again, manifest: manifest('latest') })).rejects.toThrow(/cannot be ordered/);
    await expect(publish({ ...again, manifest: manifest('2.0'), phased: 101 })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(publish({ ...again, manifest: manifest('2.0'), channel: 'Stable!' })).rejects.toMatchObject({ code: 'USAGE' });
    // Another device type has its own build sequence.
    expect((await publish({ ...again, manifest: manifest('0.1', 'other') })).build).toBe(1);

    await promote({ dir: repo, keysDir: keys, version: '1.10', from: 'candidate', to: 'stable', phased: 20 });
    const s = await status(repo);
    expect(s.images.find((i) => i.version === '1.10')!.channels).toMatchObject({ candidate: { phased: 10 }, stable: { phased: 20 } });
    await expect(promote({ dir: repo, keysDir: keys, version: '9.9', from: 'stable', to: 'beta' })).rejects.toMatchObject({ code: 'REPO_INVALID' });
  });

  it('publish needs the targets key: the online keys alone cannot add images', async () => {
    await rm(join(keys, 'targets.key.pem'));
    await expect(publish({ dir: repo, keysDir: keys, archive: await archive('a.tiu', 'a'), manifest: manifest('1.0'), channel: 'stable', phased: 100 })).rejects.toThrow(/targets key .* is not there/);
    // refresh needs only snapshot + timestamp keys.
    await rm(join(keys, 'root.key.pem'));
    const r = await refresh({ dir: repo, keysDir: keys });
    expect(r.timestamp.signed.version).toBe(2);
  });
});

describe('metadata client (tuf-js over file://)', () => {
  it('reads what publish wrote, follows root rotations, and sees promotions', async () => {
    await publish({ dir: repo, keysDir: keys, archive: await archive('os-1.0.tiu', 'one'), manifest: manifest('1.0'), channel: 'stable', phased: 100 });
    await publish({ dir: repo, keysDir: keys, archive: await archive('other.tiu', 'other'), manifest: manifest('7.0', 'other'), channel: 'stable', phased: 100 });
    const r1 = await client();
    // Only this device type's delegated role is read.
    expect(r1.images.map((i) => [i.version, i.build, Object.keys(i.channels)])).toEqual([['1.0', 1, ['stable']]]);
    expect((await readdir(join(repo, 'metadata'))).filter((f) => /^\d+\.(dev|other)\.json$/.test(f)).sort()).toEqual(['1.dev.json', '1.other.json']);
    for (const role of ['root', 'snapshot', 'targets', 'root'] as const) await rotateKey({ dir: repo, keysDir: keys, role });
    const r2 = await client();
    expect(r2.rootVersion).toBe(5);
    expect(r2.images.length).toBe(1);
  });

  it('refuses a timestamp signed by a key the root does not name', async () => {
    const k2 = join(dir, 'k2');
    await init(join(dir, 'evil'), k2);
    await client();
    // Sign a fresh timestamp with the other repository's timestamp key.
    await rm(join(keys, 'timestamp.key.pem'));
    await writeFile(join(keys, 'timestamp.key.pem'), await readFile(join(k2, 'timestamp.key.pem')));
    await refresh({ dir: repo, keysDir: keys });
    await expect(client()).rejects.toMatchObject({ code: 'REPO_SIGNATURE' });
  });

  it('a missing repository is REPO_UNAVAILABLE, a missing trusted root REPO_INVALID', async () => {
    await expect(refreshRepository({ url: `file://${dir}/nowhere`, trustedRootFile: join(repo, 'metadata/1.root.json'), cacheDir: join(dir, 'c1'), log, compatible: 'dev' })).rejects.toMatchObject({ code: 'REPO_UNAVAILABLE' });
    await expect(refreshRepository({ url: `file://${repo}`, trustedRootFile: join(dir, 'none.json'), cacheDir: join(dir, 'c2'), log, compatible: 'dev' })).rejects.toMatchObject({ code: 'REPO_INVALID' });
  });

  it('maps tuf-js failures to distinct codes', () => {
    const cases: [Error, string][] = [
      [new Error('Max length reached'), 'REPO_TOO_LARGE'],
      [new Error('Final timestamp.json is expired'), 'REPO_EXPIRED'],
      [new Error('root was signed by 0/1 keys'), 'REPO_SIGNATURE'],
      [new Error('New timestamp version 3 is less than current version 5'), 'REPO_ROLLBACK'],
      [new Error('Unable to load targets error Error: Expected hash abc but got def'), 'REPO_MISMATCH'],
      [new Error("Unable to load snapshot metadata error Error: Snapshot version doesn't match timestamp"), 'REPO_MISMATCH'],
      [Object.assign(new Error('Failed to download'), { statusCode: 500 }), 'REPO_UNAVAILABLE'],
    ];
    for (const [e, code] of cases) expect(classify(e, 'u').code, e.message).toBe(code);
  });
});

describe('root keys with a threshold (k of n)', () => {
  let trepo: string;
  let tkeys: string;
  const tclient = () => refreshRepository({ url: `file://${trepo}`, trustedRootFile: join(trepo, 'metadata/1.root.json'), cacheDir: join(dir, 'tcache'), log, compatible: 'dev' });
  const cachedRoot = () => readFile(join(dir, 'tcache/root.json'), 'utf8');

  beforeEach(async () => {
    trepo = join(dir, 'trepo');
    tkeys = join(dir, 'tkeys');
    await init(trepo, tkeys, new Date(), { rootKeys: 3, threshold: 2 });
  });

  it('init makes n root keys, a root naming all of them with the threshold, signed by all', async () => {
    const root = JSON.parse(await readFile(join(trepo, 'metadata/1.root.json'), 'utf8'));
    expect(root.signed.roles.root.threshold).toBe(2);
    expect(root.signed.roles.root.keyids).toHaveLength(3);
    expect(root.signatures.map((x: { keyid: string }) => x.keyid).sort()).toEqual([...root.signed.roles.root.keyids].sort());
    for (const f of ['root.key.pem', 'root-2.key.pem', 'root-3.key.pem']) expect((await stat(join(tkeys, f))).mode & 0o777).toBe(0o600);
    expect((await tclient()).rootVersion).toBe(1);
    await expect(init(join(dir, 'bad'), join(dir, 'bad.keys'), new Date(), { rootKeys: 2, threshold: 3 })).rejects.toMatchObject({ code: 'USAGE' });
    await expect(init(join(dir, 'bad'), join(dir, 'bad.keys'), new Date(), { rootKeys: 0 })).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('rotating root.key.pem in a 2-of-3 root: the new root is signed by the old keys and the new one, clients follow', async () => {
    await tclient();
    await rm(join(tkeys, 'root-3.key.pem'));
    const r = await rotateKey({ dir: trepo, keysDir: tkeys, role: 'root' });
    const root2 = JSON.parse(await readFile(join(trepo, 'metadata/2.root.json'), 'utf8'));
    expect(root2.signed.roles.root).toMatchObject({ threshold: 2 });
    expect(root2.signed.roles.root.keyids).toContain(r.keyID);
    expect(root2.signatures).toHaveLength(3);
    expect((await tclient()).rootVersion).toBe(2);
  });

  it('a rotation signed by 2 of 3 root keys is followed; with 1 of 3 the build side refuses and writes nothing', async () => {
    await tclient();
    // Holder 1 is away: keys 2 and 3 sign.
    await rename(join(tkeys, 'root.key.pem'), join(dir, 'away.pem'));
    await rotateKey({ dir: trepo, keysDir: tkeys, role: 'timestamp' });
    const r = await tclient();
    expect(r.rootVersion).toBe(2);
    // Only key 3: fewer than the threshold.
    await rename(join(tkeys, 'root-2.key.pem'), join(dir, 'away-2.pem'));
    const before = (await readdir(join(trepo, 'metadata'))).sort();
    await expect(rotateKey({ dir: trepo, keysDir: tkeys, role: 'snapshot' })).rejects.toThrow(/needs 2 of its 3 root keys, .* holds 1/);
    expect((await readdir(join(trepo, 'metadata'))).sort()).toEqual(before);
    expect((await readdir(tkeys)).sort()).toEqual(['root-3.key.pem', 'snapshot.key.pem', 'targets.key.pem', 'timestamp.key.pem', 'timestamp.key.pem.v1']);
  });

  it('the device rejects a new root signed by fewer than the threshold (REPO_SIGNATURE) and keeps its trusted root', async () => {
    await tclient();
    const trusted = await cachedRoot();
    // A root version 2 that hands the timestamp role to an attacker's key, signed by one root key.
    const one = await loadRoleKey(tkeys, 'root', 1);
    const evil = await loadRoleKey(keys, 'timestamp');
    const json = JSON.parse(await readFile(join(trepo, 'metadata/1.root.json'), 'utf8')).signed;
    json.version = 2;
    json.keys[evil.key.keyID] = evil.key.toJSON();
    json.roles.timestamp.keyids = [evil.key.keyID];
    const forged = new Metadata(Root.fromJSON(json));
    forged.sign(signer(one));
    await writeRoot(trepo, forged);
    const err = await tclient().then(() => undefined, (e) => e);
    expect(err).toMatchObject({ code: 'REPO_SIGNATURE' });
    expect(err.message).toMatch(/not signed by the trusted keys \(root was signed by 1\/2 keys\)/);
    expect(await cachedRoot()).toBe(trusted);
    // Signed by a second root key, the same root is accepted.
    forged.sign(signer(await loadRoleKey(tkeys, 'root', 2)), true);
    await writeRoot(trepo, forged);
    await expect(tclient()).rejects.toMatchObject({ code: 'REPO_SIGNATURE' }); // the timestamp is still signed by the old key
    expect(JSON.parse(await cachedRoot()).signed.version).toBe(2);
  });
});

describe("tuf-js's real failures map to tiu's codes (pins the message-text classification)", () => {
  const DAY = 86_400_000;
  const cacheFiles = async () => {
    const c = repoCacheDir(join(dir, 'state'), `file://${repo}`);
    const out: Record<string, string> = {};
    for (const f of (await readdir(c)).sort()) if (f.endsWith('.json')) out[f] = await readFile(join(c, f), 'utf8');
    return out;
  };
  const failsWith = async (code: string, msg: RegExp, o: { newTimestamp?: boolean } = {}) => {
    const before = await cacheFiles();
    const err = await client().then(() => undefined, (e) => e);
    expect(err, 'the refresh must fail').toBeDefined();
    expect(err.code, err.message).toBe(code);
    expect(err.message).toMatch(msg);
    // Nothing the device trusts changed (but a valid new timestamp, which TUF keeps).
    const after = await cacheFiles();
    if (o.newTimestamp) {
      expect(after['timestamp.json']).not.toBe(before['timestamp.json']);
      delete after['timestamp.json'];
      delete before['timestamp.json'];
    }
    expect(after).toEqual(before);
  };

  beforeEach(async () => {
    await publish({ dir: repo, keysDir: keys, archive: await archive('os-1.0.tiu', 'one'), manifest: manifest('1.0'), channel: 'stable', phased: 100 });
    await client();
  });

  it('cache writes go through the atomic hook (tuf-js still has persistMetadata) and leave no temp files', async () => {
    expect(typeof (Updater.prototype as unknown as { persistMetadata?: unknown }).persistMetadata).toBe('function');
    const c = repoCacheDir(join(dir, 'state'), `file://${repo}`);
    expect((await readdir(c)).sort()).toEqual(['dev.json', 'root.json', 'snapshot.json', 'targets.json', 'timestamp.json']);
  });

  it('expired timestamp (freeze): REPO_EXPIRED', async () => {
    await refresh({ dir: repo, keysDir: keys, now: new Date(Date.now() - 3 * DAY) });
    await failsWith('REPO_EXPIRED', /metadata has expired \(.*timestamp.*expired/i);
  });

  it('older timestamp replayed (rollback): REPO_ROLLBACK', async () => {
    const old = await readFile(join(repo, 'metadata/timestamp.json'));
    await refresh({ dir: repo, keysDir: keys });
    await client();
    await writeFile(join(repo, 'metadata/timestamp.json'), old);
    await failsWith('REPO_ROLLBACK', /older than what this device already trusts \(.*less than current version/);
  });

  it('snapshot swapped for another one of the same version (mix-and-match): REPO_MISMATCH', async () => {
    const r = await refresh({ dir: repo, keysDir: keys });
    const name = join(repo, `metadata/${r.snapshot.signed.version}.snapshot.json`);
    const j = JSON.parse(await readFile(name, 'utf8'));
    await writeFile(name, JSON.stringify(j));
    await failsWith('REPO_MISMATCH', /do not belong together \(.*Expected length \d+ but got \d+/, { newTimestamp: true });
  });

  it('endless timestamp: REPO_TOO_LARGE', async () => {
    await refresh({ dir: repo, keysDir: keys });
    const name = join(repo, 'metadata/timestamp.json');
    await writeFile(name, (await readFile(name, 'utf8')).replace(/\}\s*$/, `${' '.repeat(20_000)}}`));
    await failsWith('REPO_TOO_LARGE', /larger than allowed \(.*Max length reached/);
  });

  it('a byte of the timestamp changed: REPO_SIGNATURE', async () => {
    await refresh({ dir: repo, keysDir: keys });
    const name = join(repo, 'metadata/timestamp.json');
    await writeFile(name, (await readFile(name, 'utf8')).replace(/"version": (\d+)/, (_m, v) => `"version": ${Number(v) + 10}`));
    await failsWith('REPO_SIGNATURE', /not signed by the trusted keys \(timestamp was signed by 0\/1 keys\)/);
  });
});
