/**
 * Hashing throughput of the verity code against `openssl speed -bytes 4096 sha256` (one core).
 *
 *   node bench/verity-speed.ts [MiB of file to verify, default 512]
 *
 * Prints MB/s (10^6 bytes, as openssl does) of: the three ways to hash salt||block in Node, our
 * block hasher on one core, and verifyHashTree end to end (this thread only, and with workers),
 * each with its ratio to openssl. In-memory hashing is timed in user CPU time, as openssl speed
 * does by default; the end-to-end runs in wall-clock time. Best of three (machines are shared).
 */
import { createHash, hash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSystem } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { computeHashTree, verifyHashTree } from '../src/tiu/verity.ts';
import { createBlockHasher } from '../src/tiu/verity/hash.ts';

const B = 4096;
const salt = randomBytes(32);
const data = randomBytes(4 * 1024 * 1024);
const rows: [string, number][] = [];

/** Seconds of the chosen clock: user CPU time of this process, or wall-clock time. */
const clocks = {
  cpu: () => process.cpuUsage().user / 1e6,
  wall: () => performance.now() / 1000,
};

/** Best MB/s of `fn` (which processes `bytes` per call) over three runs of ~1 s. */
async function best(bytes: number, fn: () => unknown, clock: keyof typeof clocks = 'cpu'): Promise<number> {
  const now = clocks[clock];
  let top = 0;
  for (let run = 0; run < 3; run++) {
    let done = 0;
    const t0 = now();
    while (now() - t0 < 1) {
      await fn();
      done += bytes;
    }
    top = Math.max(top, done / (now() - t0) / 1e6);
  }
  return top;
}

const scratch = Buffer.alloc(32 + B);
salt.copy(scratch);
const salted = createHash('sha256').update(salt);
const each = (f: (block: Buffer) => Buffer) => () => {
  for (let i = 0; i < data.length / B; i++) f(data.subarray(i * B, (i + 1) * B));
};
rows.push(['crypto.hash one-shot on reused salt||block', await best(data.length, each((b) => (b.copy(scratch, 32), hash('sha256', scratch, 'buffer'))))]);
const digests = Buffer.alloc(32);
rows.push(['crypto.hash one-shot, binary string result written out', await best(data.length, each((b) => (b.copy(scratch, 32), digests.write(hash('sha256', scratch, 'binary'), 0, 32, 'latin1'), digests)))]);
rows.push(['createHash().update(salt).update(block)', await best(data.length, each((b) => createHash('sha256').update(salt).update(b).digest()))]);
rows.push(['copy() of a pre-salted hash state', await best(data.length, each((b) => salted.copy().update(b).digest()))]);
const hasher = createBlockHasher(salt, B);
const out = Buffer.alloc((data.length / B) * 32);
rows.push(['BlockHasher.digestAll (what tiu uses), one core', await best(data.length, () => hasher.digestAll(data, out))]);

// End to end on a file: tmpfs if there is one, so the disk does not set the pace.
const mib = Number(process.argv[2] ?? 512);
const dir = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'tiu-bench-'));
try {
  const fh = await open(join(dir, 'image'), 'w+');
  const size = mib * 1024 * 1024;
  for (let at = 0; at < size; at += data.length) await fh.write(data, 0, Math.min(data.length, size - at), at);
  const { rootHash, hashSize } = await computeHashTree(fh, { dataSize: size, hashOffset: size, salt });
  for (const workers of [0, undefined]) {
    const mbps = await best(size, () => verifyHashTree(fh, { dataSize: size, hashOffset: size, hashSize, salt, rootHash, workers }), 'wall');
    rows.push([`verifyHashTree ${mib} MiB file, ${workers === 0 ? 'this thread only' : 'default workers'}`, mbps]);
  }
  await fh.close();
} finally {
  await rm(dir, { recursive: true, force: true });
}

const sys = createSystem(createLogger('warn'));
const r = await sys.run('openssl', ['speed', '-bytes', '4096', '-seconds', '3', 'sha256']);
const k = /^sha256\s+([\d.]+)k/m.exec(r.stdout)?.[1];
if (!k) throw new Error(`cannot parse openssl speed output:\n${r.stdout}`);
const openssl = (Number(k) * 1000) / 1e6;

console.log(`openssl speed sha256, 4096-byte blocks, one core: ${openssl.toFixed(0)} MB/s`);
for (const [name, mbps] of rows) console.log(`${name.padEnd(58)} ${mbps.toFixed(0).padStart(5)} MB/s  ${((mbps / openssl) * 100).toFixed(0).padStart(3)}% of openssl`);
