/**
 * `tiu daemon`'s "[daemon] download_on_metered = false" (the default) against NetworkManager's
 * Metered property (NMMetered: 0 unknown, 1 yes, 2 no, 3 guess-yes, 4 guess-no), read from a
 * stand-in `org.freedesktop.NetworkManager` that this test exports on a private system bus
 * (dbus-daemon on a unix socket, as in test/daemon-dbus.test.ts). With automatic download on,
 * the daemon holds the download on 1 and 3 (nothing fetched, nothing in the cache) and downloads
 * on 0, 2 and 4; `download_on_metered = true` downloads on 1.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa, type ResultPromise } from 'execa';
import dbus from 'dbus-next';
import { TIU } from './helpers/device.ts';
import { startPrivateBus } from './helpers/dbus.ts';

const NM = 'org.freedesktop.NetworkManager';


/** The stand-in: NetworkManager's manager object with the one property tiu reads. */
class FakeNetworkManager extends dbus.interface.Interface {
  metered = 0;
  constructor() {
    super(NM);
  }
  get Metered() {
    return this.metered;
  }
}
FakeNetworkManager.configureMembers({ properties: { Metered: { signature: 'u', access: dbus.interface.ACCESS_READ as 'read' } } });

let work: string;
let busDaemon: ResultPromise | undefined;
let busAddress: string;
let nmBus: dbus.MessageBus;
const nm = new FakeNetworkManager();
let http: Server;
let base: string;
const body = randomBytes(1024 * 1024);
/** GET requests the server answered (HEAD, the daemon's check, not counted). */
let gets = 0;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-metered-'));
  ({ daemon: busDaemon, address: busAddress } = await startPrivateBus(work, `  <policy user="root">
    <allow own="${NM}"/>
    <allow send_destination="${NM}"/>
  </policy>
`)); // root may own and call the stand-in NetworkManager
  nmBus = dbus.sessionBus({ busAddress });
  nmBus.export('/org/freedesktop/NetworkManager', nm);
  expect(await nmBus.requestName(NM, dbus.NameFlag.DO_NOT_QUEUE)).toBe(dbus.RequestNameReply.PRIMARY_OWNER);
  http = createServer((req, res) => {
    if (req.method === 'GET') gets++;
    res.writeHead(200, { 'content-length': String(body.length) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
}, 60_000);

afterAll(async () => {
  http?.close();
  nmBus?.disconnect();
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

/** Starts `tiu daemon` with automatic download and returns what it did once it settled. */
async function daemonWith(metered: number, downloadOnMetered: boolean): Promise<{ state: string; error: string; stderr: string; cache: string[]; gets: number }> {
  nm.metered = metered;
  const name = `m${metered}-${downloadOnMetered}`;
  const root = join(work, name, 'root');
  const conf = join(work, name, 'conf');
  await mkdir(root, { recursive: true });
  await mkdir(join(conf, 'etc/tiu'), { recursive: true });
  await writeFile(join(conf, 'etc/tiu/tiu.conf'), `[daemon]\nautomatic_download = true\ndownload_on_metered = ${downloadOnMetered}\n`);
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress, TIU_CONFIG_ROOT: conf };
  const before = gets;
  const daemon = execa(process.execPath, [TIU, 'daemon', '--root', root, '--source', `${base}/${name}.tiu`], { env, reject: false });
  let stderr = '';
  daemon.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const bus = dbus.sessionBus({ busAddress });
  try {
    const obj = await waitFor('the service on the bus', async () => bus.getProxyObject('org.tiu.Updater1', '/org/tiu/Updater1').catch(() => undefined), 30_000);
    const props = obj.getInterface('org.freedesktop.DBus.Properties');
    const get = async (p: string) => String((await props.Get!('org.tiu.Updater1', p)).value);
    // Settled: held (the warning is logged after the check) or downloaded.
    await waitFor('the automatic download to be held or done', async () => /automatic download:/.test(stderr) || (await get('State')) === 'downloaded', 60_000);
    const cache = await readdir(join(root, 'var/cache/tiu')).catch(() => [] as string[]);
    return { state: await get('State'), error: await get('Error'), stderr, cache, gets: gets - before };
  } finally {
    bus.disconnect();
    daemon.kill('SIGTERM');
    await daemon;
  }
}

describe('tiu daemon and NetworkManager\'s Metered property', () => {
  it('holds the automatic download on a metered connection (1 yes, 3 guess-yes): nothing fetched, nothing cached', async () => {
    for (const metered of [1, 3]) {
      const r = await daemonWith(metered, false);
      expect(r.stderr, `Metered=${metered}`).toMatch(/automatic download: not downloading now: the connection is metered \(NetworkManager\) and \[daemon\] download_on_metered is false/);
      expect(r.state, `Metered=${metered}`).toBe('available');
      expect(r.gets, `Metered=${metered}`).toBe(0);
      expect(r.cache.filter((f) => !f.endsWith('.lock')), `Metered=${metered}`).toEqual([]);
    }
  }, 180_000);

  it('downloads when not metered (0 unknown, 2 no, 4 guess-no), and on a metered one with download_on_metered = true', async () => {
    for (const [metered, onMetered] of [[0, false], [2, false], [4, false], [1, true]] as const) {
      const r = await daemonWith(metered, onMetered);
      const what = `Metered=${metered} download_on_metered=${onMetered}`;
      expect(r.stderr, what).not.toMatch(/automatic download:/);
      expect(r.state, what).toBe('downloaded');
      expect(r.gets, what).toBe(1);
      expect(r.cache.filter((f) => !f.endsWith('.lock') && !f.endsWith('.meta')).length, what).toBe(1);
    }
  }, 240_000);
});
