/**
 * Debian's nginx on a free 127.0.0.1 port with a temporary configuration (keep-alive, Range,
 * ETag, sendfile), an access log with the body bytes of every response. Used by the download
 * benchmark and by the download tests (test/helpers/http-servers.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';

/** A free TCP port on 127.0.0.1 (released just before use). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function listening(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const sock = connect(port, '127.0.0.1', () => {
      sock.destroy();
      resolve(true);
    });
    sock.on('error', () => resolve(false));
  });
}

async function stop(child: ResultPromise): Promise<void> {
  child.kill('SIGTERM');
  await child.catch(() => {});
}

export interface Nginx extends AsyncDisposable {
  base: string;
  /** Access log lines: `status bytes_sent_in_body request`. */
  log(): Promise<{ status: number; bytes: number; request: string }[]>;
}

/** Debian's nginx serving `www` with keep-alive, Range and ETag, on a free port. */
export async function startNginx(work: string, www: string): Promise<Nginx> {
  const port = await freePort();
  const prefix = join(work, 'nginx');
  await mkdir(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  const access = join(prefix, 'access.log');
  await writeFile(conf, `daemon off;
master_process on;
worker_processes 1;
user root;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log;
events { worker_connections 64; }
http {
  log_format tiu '$status $body_bytes_sent "$request"';
  access_log ${access} tiu;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  keepalive_timeout 30;
  sendfile on;
  server {
    listen 127.0.0.1:${port};
    root ${www};
    location / { }
  }
}
`);
  await writeFile(access, '');
  const child = execa('nginx', ['-p', prefix, '-c', conf, '-e', join(prefix, 'error.log')], { reject: false, stdio: ['ignore', 'ignore', 'pipe'] });
  for (let i = 0; !(await listening(port)); i++) {
    if (i > 100 || (child.exitCode !== null && child.exitCode !== undefined)) {
      await stop(child);
      throw new Error(`nginx did not start on 127.0.0.1:${port}: ${(await readFile(join(prefix, 'error.log'), 'utf8').catch(() => '')).trim().split('\n').pop() ?? ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base: `http://127.0.0.1:${port}`,
    async log() {
      const text = await readFile(access, 'utf8');
      return text.split('\n').filter(Boolean).map((l) => {
        const m = /^(\d+) (\d+) "(.*)"$/.exec(l)!;
        return { status: Number(m[1]), bytes: Number(m[2]), request: m[3]! };
      });
    },
    [Symbol.asyncDispose]: () => stop(child),
  };
}

