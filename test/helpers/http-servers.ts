/**
 * Real HTTP servers on 127.0.0.1 for the download tests: Python's http.server (closes the
 * connection after each body), Debian's nginx (keep-alive, Range, ETag; temp config, own
 * port, access log with bytes sent), and a Node server with misbehaviours on demand.
 */
import { createServer, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';

export interface RunningServer extends AsyncDisposable {
  base: string;
}

/** A random file of `bytes` in `dir`; returns its path and sha256. */
export async function bigFile(dir: string, name: string, bytes: number): Promise<{ path: string; data: Buffer; sha256: string }> {
  const data = randomBytes(bytes);
  const path = join(dir, name);
  await writeFile(path, data);
  return { path, data, sha256: createHash('sha256').update(data).digest('hex') };
}

/** A free TCP port on 127.0.0.1 (released just before use). */
export async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitForPort(port: number, child: ResultPromise, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null && child.exitCode !== undefined) throw new Error(`${what} exited early: ${String((await child.catch((e) => e)).stderr ?? '')}`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.destroy();
        resolve(true);
      });
      sock.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

async function stop(child: ResultPromise): Promise<void> {
  child.kill('SIGTERM');
  await child.catch(() => {});
}

/** `python3 -m http.server` serving `dir`. */
export async function startPython(dir: string): Promise<RunningServer> {
  const port = await freePort();
  const child = execa('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', dir], { reject: false, stdio: ['ignore', 'ignore', 'ignore'] });
  await waitForPort(port, child, 'python3 -m http.server');
  return { base: `http://127.0.0.1:${port}`, [Symbol.asyncDispose]: () => stop(child) };
}

export { startNginx, type Nginx } from '../../bench/lib/nginx.ts';

/** Behaviour switches of the misbehaving Node server (tests set them between downloads). */
export interface Misbehaviour {
  /** Next N full-file requests are cut after this fraction of the body (connection destroyed). */
  dropNext: number;
  dropAt: number;
  /** Next N requests are answered 503 with this Retry-After. */
  busyNext: number;
  retryAfter: string;
  /** Answer every request 200 with the whole file, ignoring Range. */
  ignoreRange: boolean;
  /** Body bytes sent, per path. */
  sent: Map<string, number>;
  requests: { url: string; range?: string; status: number }[];
}

/**
 * A Node server: `/file` serves `data` (Range honoured unless ignoreRange), with the
 * misbehaviours above; `/stall` sends one byte every 2 s; `/endless` streams random data
 * without a length, forever.
 */
export async function startMisbehaving(data: Buffer): Promise<RunningServer & { m: Misbehaviour }> {
  const m: Misbehaviour = { dropNext: 0, dropAt: 0.4, busyNext: 0, retryAfter: '0', ignoreRange: false, sent: new Map(), requests: [] };
  const timers = new Set<NodeJS.Timeout>();
  const add = (path: string, n: number) => m.sent.set(path, (m.sent.get(path) ?? 0) + n);
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '';
    const log = (status: number) => m.requests.push({ url, range: req.headers.range, status });
    if (url === '/stall') {
      log(200);
      res.writeHead(200, { 'content-length': 1000 });
      const t = setInterval(() => {
        res.write('x');
        add(url, 1);
      }, 2000);
      timers.add(t);
      res.on('close', () => clearInterval(t));
      return;
    }
    if (url === '/endless') {
      log(200);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = randomBytes(64 * 1024);
      const pump = () => {
        while (res.write(chunk)) add(url, chunk.length);
      };
      res.on('drain', pump);
      res.on('close', () => res.off('drain', pump));
      pump();
      return;
    }
    if (url !== '/file') {
      log(404);
      res.writeHead(404).end('not found');
      return;
    }
    if (m.busyNext > 0) {
      m.busyNext--;
      log(503);
      res.writeHead(503, { 'retry-after': m.retryAfter, 'content-length': 4 }).end('busy');
      return;
    }
    const r = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = r && !m.ignoreRange ? Number(r[1]) : 0;
    const slice = data.subarray(start);
    const status = start > 0 || (r && !m.ignoreRange) ? 206 : 200;
    log(status);
    res.writeHead(status, { 'content-length': slice.length, 'accept-ranges': m.ignoreRange ? 'none' : 'bytes', ...(status === 206 ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}) });
    if (m.dropNext > 0 && start === 0) {
      m.dropNext--;
      const n = Math.floor(slice.length * m.dropAt);
      res.write(slice.subarray(0, n), () => {
        add(url, n);
        res.destroy();
      });
      return;
    }
    res.end(slice, () => add(url, slice.length));
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    m,
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async [Symbol.asyncDispose]() {
      for (const t of timers) clearInterval(t);
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
