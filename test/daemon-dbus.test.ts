/**
 * `tiu daemon` on a private dbus-daemon (system-bus policy with dbus/org.tiu.Updater1.conf
 * included) started by the test on a unix socket: check, download with pause/resume/cancel
 * from a throttled HTTP server on 127.0.0.1 (no bytes move while paused; cancel leaves no
 * partial file), an unprivileged caller (`nobody`, via runuser + dbus-send) refused Apply with
 * no change to the device, and Apply as root on a loop btrfs device.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import dbus from 'dbus-next';
import { testSystem } from './helpers/env.ts';
import { startPrivateBus } from './helpers/dbus.ts';
import { makeArchives, installedDevice, cli, TIU, type ArchiveSet } from './helpers/device.ts';
import { parse } from 'ini';
import { applyIni, DEFAULT_CONFIG } from '../src/tiu/config.ts';
import { Updater } from '../src/tiu/daemon/updater.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;
let busDaemon: ResultPromise | undefined;
let busAddress: string;
let http: Server;
let port: number;
let archiveBytes: Buffer;
/** Bytes the HTTP server sent, in total. */
let served = 0;
/** While set, the throttled server sends nothing more until it resolves (a test holds a download). */
let hold: Promise<void> | undefined;


beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-dbus-'));
  await chmod(work, 0o755); // nobody must reach the bus socket
  A = await makeArchives(sys, join(work, 'a'));
  archiveBytes = await readFile(A.v2);
  ({ daemon: busDaemon, address: busAddress } = await startPrivateBus(work));

  // Throttled: about 100 chunks at 50 ms each, so a download takes ~5 s. Honours Range.
  const chunk = Math.max(256, Math.ceil(archiveBytes.length / 100));
  http = createServer(async (req, res) => {
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) start = Number(m[1]);
    const body = archiveBytes.subarray(start);
    res.writeHead(m ? 206 : 200, { 'content-length': String(body.length), ...(m ? { 'content-range': `bytes ${start}-${archiveBytes.length - 1}/${archiveBytes.length}` } : {}) });
    if (req.method === 'HEAD') return res.end();
    if (req.url?.startsWith('/fast/')) return res.end(body);
    let closed = false;
    res.on('close', () => (closed = true));
    for (let i = 0; i < body.length && !closed; i += chunk) {
      if (hold) await hold;
      res.write(body.subarray(i, i + chunk));
      served += Math.min(chunk, body.length - i);
      await sleep(50);
    }
    res.end();
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  port = (http.address() as { port: number }).port;
}, 300_000);

afterAll(async () => {
  http?.close();
  busDaemon?.kill('SIGTERM');
  await busDaemon?.catch(() => {});
  if (work) await rm(work, { recursive: true, force: true });
});

async function waitFor<T>(what: string, f: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('[daemon] policies', () => {
  it('parses the [daemon] section strictly', () => {
    const c = applyIni(DEFAULT_CONFIG, parse('[daemon]\nbandwidth_limit = 500000\ndownload_on_metered = true\nautomatic_download = true\n'), 'f');
    expect(c).toMatchObject({ daemonBandwidthLimit: 500000, daemonDownloadOnMetered: true, daemonAutomaticDownload: true });
    expect(DEFAULT_CONFIG).toMatchObject({ daemonBandwidthLimit: 0, daemonDownloadOnMetered: false, daemonAutomaticDownload: false });
    expect(() => applyIni(DEFAULT_CONFIG, parse('[daemon]\ndownload_on_metered = maybe\n'), 'f')).toThrow(/one of true, false/);
    expect(() => applyIni(DEFAULT_CONFIG, parse('[daemon]\nbandwidth_limit = fast\n'), 'f')).toThrow(/whole number/);
  });

  it('does not download when the policy says no (metered), and nothing is written', async () => {
    const cacheDir = join(work, 'metered-cache');
    const u = new Updater({
      sys, root: '/nonexistent', source: `http://127.0.0.1:${port}/v2.tiu`, cacheDir, keyringPem: async () => '',
      mayDownload: async () => ({ ok: false, why: 'the connection is metered' }),
    });
    const before = served;
    await expect(u.startDownload()).rejects.toThrow(/not downloading now: the connection is metered/);
    expect(u.status.state).toBe('idle');
    expect(served).toBe(before);
    expect(await readdir(cacheDir).catch(() => [])).toEqual([]);
  });

  it('limits the bandwidth ([daemon] bandwidth_limit)', async () => {
    const cacheDir = join(work, 'limit-cache');
    const limit = Math.ceil(archiveBytes.length / 2); // the whole archive takes about 2 s
    const u = new Updater({ sys, root: '/nonexistent', source: `http://127.0.0.1:${port}/fast/v2.tiu`, cacheDir, keyringPem: async () => '', rateLimit: limit });
    const t0 = Date.now();
    await u.startDownload();
    await waitFor('downloaded', async () => u.status.state === 'downloaded' || u.status.state === 'failed');
    expect(u.status.state, u.status.error).toBe('downloaded');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    await u.cancel();
    expect(await readdir(cacheDir)).toEqual([]);
  }, 60_000);
});

describe('tiu daemon on a private system bus', () => {
  it('check, download with pause/resume/cancel, Apply refused to nobody, applied for root', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const conf = join(work, 'conf');
    await mkdir(join(conf, 'etc/tiu'), { recursive: true });
    await writeFile(join(conf, 'etc/tiu/tiu.conf'), '[device]\nbootloader = none\n');
    await writeFile(join(conf, 'etc/tiu/keyring.pem'), A.keyringPem);
    const url = `http://127.0.0.1:${port}/v2.tiu`;
    const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress, TIU_CONFIG_ROOT: conf };
    const daemon = execa(process.execPath, [TIU, 'daemon', '--root', dev.root, '--source', url], { env, reject: false });
    const bus = dbus.sessionBus({ busAddress });
    try {
      const obj = await waitFor('the service on the bus', async () => bus.getProxyObject('org.tiu.Updater1', '/org/tiu/Updater1').catch(() => undefined), 30_000);
      const u = obj.getInterface('org.tiu.Updater1');
      const props = obj.getInterface('org.freedesktop.DBus.Properties');
      const get = async (name: string) => (await props.Get!('org.tiu.Updater1', name)).value;
      const changes: Record<string, unknown>[] = [];
      props.on('PropertiesChanged', (_iface: string, changed: Record<string, { value: unknown }>) => changes.push(Object.fromEntries(Object.entries(changed).map(([k, v]) => [k, v.value]))));
      const cache = join(dev.root, 'var/cache/tiu');
      const cacheFiles = async () => (await readdir(cache).catch(() => [] as string[])).sort();

      expect(await u.CheckForUpdate!()).toBe(true);
      expect(await get('State')).toBe('available');
      expect(Number(await get('Total'))).toBe(archiveBytes.length);

      // Download, pause: nothing moves while paused.
      await u.Download!();
      await waitFor('some bytes', async () => Number(await get('Downloaded')) > archiveBytes.length / 10);
      await u.Pause!();
      expect(await get('State')).toBe('paused');
      const d1 = Number(await get('Downloaded'));
      const part = join(cache, (await cacheFiles()).find((f) => f.endsWith('.part'))!);
      const p1 = (await stat(part)).size;
      const s1 = served;
      await sleep(1500);
      expect(Number(await get('Downloaded'))).toBe(d1);
      expect((await stat(part)).size).toBe(p1);
      expect(served - s1).toBeLessThanOrEqual(Math.ceil(archiveBytes.length / 100) * 2); // at most what was in flight
      expect(d1).toBeLessThan(archiveBytes.length);
      expect(changes.some((c) => c.State === 'paused')).toBe(true);
      expect(changes.some((c) => typeof c.Downloaded === 'bigint' && Number(c.Downloaded) > 0)).toBe(true);

      // Resume continues from the partial file (Range) and completes byte-exact.
      await u.Resume!();
      await waitFor('downloaded', async () => (await get('State')) === 'downloaded');
      const files = await cacheFiles();
      expect(files.filter((f) => f.endsWith('.part'))).toEqual([]);
      expect((await readFile(join(cache, files[0]!))).equals(archiveBytes)).toBe(true);
      expect(served - s1).toBeLessThan(archiveBytes.length); // resumed, not restarted

      // Cancel (mid-download): state idle, no partial state left.
      await u.Cancel!();
      expect(await cacheFiles()).toEqual([]);
      await u.Download!();
      await waitFor('some bytes', async () => Number(await get('Downloaded')) > 0);
      await u.Cancel!();
      expect(await get('State')).toBe('idle');
      expect(Number(await get('Downloaded'))).toBe(0);
      expect(await cacheFiles()).toEqual([]);
      const s2 = served;
      await sleep(500);
      expect(served - s2).toBeLessThanOrEqual(Math.ceil(archiveBytes.length / 100) * 2);

      // Download again; an unprivileged caller may read the state but not Apply.
      await u.Download!();
      // tiu update while the daemon downloads for this root: it shows the daemon's progress and
      // waits for it, then carries on (here with a source that does not exist, so it fails then).
      // The server holds the download until tiu says it follows the daemon (however slowly tiu
      // starts on a loaded machine), then lets it finish.
      let release!: () => void;
      hold = new Promise<void>((r) => (release = r));
      expect(await get('State')).toBe('downloading');
      const child = execa(process.execPath, [TIU, 'update', '--source', join(work, 'no-such.tiu'), '--root', dev.root], { reject: false, env: { ...env, DBUS_SYSTEM_BUS_ADDRESS: busAddress } });
      let said = '';
      child.stderr!.on('data', (d: Buffer) => (said += d.toString()));
      try {
        await waitFor('tiu update to follow the daemon', async () => /showing its progress/.test(said) || child.exitCode !== null, 120_000);
      } finally {
        hold = undefined;
        release();
      }
      const done = await child;
      const follow = { exitCode: done.exitCode, stderr: String(done.stderr) };
      expect(follow.stderr).toMatch(/the tiu daemon is downloading http:\/\/127\.0\.0\.1:\d+\/v2\.tiu: showing its progress/);
      expect(follow.stderr).toMatch(/the tiu daemon is done: downloaded/);
      expect(await get('State')).toBe('downloaded');
      expect(follow.exitCode, follow.stderr).toBe(3);
      await waitFor('downloaded', async () => (await get('State')) === 'downloaded');
      const asNobody = (member: string) =>
        execa('runuser', ['-u', 'nobody', '--', 'dbus-send', `--bus=${busAddress}`, '--print-reply', '--dest=org.tiu.Updater1', '/org/tiu/Updater1', `org.tiu.Updater1.${member}`], { reject: false });
      const status = await asNobody('Status');
      expect(status.exitCode, status.stderr).toBe(0);
      expect(status.stdout).toContain('"downloaded"');
      const denied = await asNobody('Apply');
      expect(denied.exitCode).not.toBe(0);
      expect(denied.stderr).toMatch(/org\.freedesktop\.DBus\.Error\.AccessDenied/);
      expect(await get('State')).toBe('downloaded');
      let st = JSON.parse((await cli(['status', '--root', dev.root, '--json'])).stdout).snapshots;
      expect(st.map((s: { number: number }) => s.number)).toEqual([1]);

      // Root may.
      expect(await u.Apply!()).toBe(2);
      expect(await get('State')).toBe('applied');
      expect(await get('Snapshot')).toBe(2);
      st = JSON.parse((await cli(['status', '--root', dev.root, '--json'])).stdout).snapshots;
      expect(st.find((s: { default: boolean }) => s.default).number).toBe(2);
      expect(await cacheFiles()).toEqual([]);
      // A second Apply has nothing to apply: a D-Bus error naming tiu's code.
      await expect(u.Apply!()).rejects.toThrow(/nothing to apply/);
    } finally {
      bus.disconnect();
      daemon.kill('SIGTERM');
      const r = await daemon;
      if (r.exitCode !== 0 && r.signal !== 'SIGTERM') console.error(r.stderr);
    }
  }, 300_000);
});
