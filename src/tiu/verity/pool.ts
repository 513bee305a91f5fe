/**
 * Worker threads hashing chunks of blocks in parallel (SHA-256 in one Node thread reaches only
 * ~60-70% of `openssl speed`, because of per-call overhead; two threads reach it).
 *
 * The workers read the file themselves through the caller's file descriptor (pread, so no shared
 * offset), so chunk data never crosses threads and memory stays at one chunk per worker.
 * {@link HashPool.close} must be awaited before the descriptor is closed: it terminates the
 * threads, which cannot then read from a reused descriptor number.
 */
import { TiuError, fromErrno } from '../../core/errors.ts';
import { truncatedError } from './io.ts';

interface HashWorkerInit {
  fd: number;
  salt: Uint8Array;
  blockSize: number;
  chunkSize: number;
}

type HashReply =
  | { ok: true; digests: Uint8Array }
  | { ok: false; eof: number; end: number }
  | { ok: false; error: { message: string; code?: string } };

/**
 * The worker body, plain JavaScript evaluated in the thread: a worker loading a .ts module also
 * loads Node's type stripper, which doubles its memory (~32 instead of ~16 MiB). It hashes
 * exactly as hash.ts does; the tests compare both paths with veritysetup.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const { hash } = require('node:crypto');
const { fd, salt, blockSize, chunkSize } = workerData;
const buf = Buffer.allocUnsafe(chunkSize);
const scratch = Buffer.alloc(salt.length + blockSize);
scratch.set(salt, 0);
function run(position, length) {
  for (let done = 0; done < length; ) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) return { ok: false, eof: position + done, end: position + length };
    done += n;
  }
  const count = length / blockSize;
  const digests = Buffer.allocUnsafeSlow(count * 32);
  for (let i = 0; i < count; i++) {
    scratch.set(buf.subarray(i * blockSize, (i + 1) * blockSize), salt.length);
    digests.write(hash('sha256', scratch, 'binary'), i * 32, 32, 'latin1');
  }
  return { ok: true, digests: new Uint8Array(digests.buffer, 0, count * 32) };
}
parentPort.on('message', ({ position, length }) => {
  let reply;
  try {
    reply = run(position, length);
  } catch (e) {
    reply = { ok: false, error: { message: e.message, code: e.code } };
  }
  parentPort.postMessage(reply, reply.ok ? [reply.digests.buffer] : []);
});
`;

export interface HashPool {
  readonly size: number;
  /** Salted digests of the `length / blockSize` blocks at `position` of the file. */
  digest(position: number, length: number): Promise<Buffer>;
  /** Terminates the workers; pending digests are rejected. Idempotent. */
  close(): Promise<void>;
}

interface Pending {
  resolve: (digests: Buffer) => void;
  reject: (err: unknown) => void;
}

function replyError(reply: Exclude<HashReply, { ok: true }>): Error {
  if ('eof' in reply) return truncatedError(reply.eof, reply.end);
  const err = Object.assign(new Error(reply.error.message), { code: reply.error.code });
  return fromErrno(err, 'verity: reading the file') ?? err;
}

/** Starts `size` workers hashing blocks of the file open as `init.fd`. */
export function createHashPool(init: HashWorkerInit, size: number): HashPool {
  const workers = Array.from({ length: size }, () => {
    // (worker_threads loaded here: every update imports this module, few start a worker)
    const { Worker } = process.getBuiltinModule('node:worker_threads');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: init });
    // Each worker answers its tasks in order, so a FIFO of waiters per worker is enough.
    const queue: Pending[] = [];
    const failAll = (err: unknown): void => {
      for (const p of queue.splice(0)) p.reject(err);
    };
    worker.on('message', (reply: HashReply) => {
      const p = queue.shift();
      if (!p) return;
      if (reply.ok) p.resolve(Buffer.from(reply.digests.buffer, reply.digests.byteOffset, reply.digests.byteLength));
      else p.reject(replyError(reply));
    });
    worker.on('error', (err) => failAll(new TiuError('INTERNAL', `verity: hash worker failed: ${err.message}`, { cause: err })));
    worker.on('exit', () => failAll(new TiuError('INTERNAL', 'verity: hash worker exited')));
    return { worker, queue };
  });
  let next = 0;
  let closed = false;
  return {
    size,
    digest(position, length) {
      if (closed) return Promise.reject(new TiuError('INTERNAL', 'verity: hash pool used after close'));
      const w = workers[next++ % workers.length]!;
      return new Promise<Buffer>((resolve, reject) => {
        w.queue.push({ resolve, reject });
        w.worker.postMessage({ position, length });
      });
    },
    async close() {
      closed = true;
      await Promise.all(workers.map((w) => w.worker.terminate()));
    },
  };
}
