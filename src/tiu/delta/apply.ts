/**
 * The device side of a delta: check the base, rebuild the new index, and serve file content to
 * the apply executor (the {@link ContentSource} seam) from patches, compressed content, or the
 * base snapshot's own files (found by digest in the old signed index).
 *
 * Integrity without dm-verity: the new index's sha256 is in the new manifest, which carries the
 * vendor's signature; every file the executor writes is hashed and must equal the index's
 * digest, every old file a patch reads is hashed and must equal the old index's digest. So the
 * snapshot gets exactly the signed image's bytes although the image is never mounted.
 *
 * Memory: content streams through in 1 MiB chunks; a patch holds its old file (at most
 * PATCH_MAX_BYTES, 16 MiB) as zstd dictionary plus the decoder's window; patches and large zstd
 * frames are decoded one at a time.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { System } from '../system.ts';
import { dirname, join } from 'node:path';
import { createZstdDecompress, constants as zc } from 'node:zlib';
import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';
import { TiuError } from '../errors.ts';
import { loadIndex } from '../fileindex/io.ts';
import { displayPath, INDEX_PATH, type IndexEntry } from '../fileindex/types.ts';
import { under, type ContentSource } from '../apply/execute.ts';
import type { ApplyPlan } from '../apply/plan.ts';
import type { RecordedImage } from '../device/state.ts';
import { hashPath } from '../fileindex/hash.ts';
import { oldSources, sourceLocation, PATCH_MAX_BYTES } from './plan.ts';
import type { DeltaContent } from './format.ts';
import type { OpenedDelta } from './open.ts';

export interface DeltaSource extends ContentSource {
  /** The new image's index, rebuilt and checked against the signed manifest. */
  target: IndexEntry[];
  /** A directory holding the rebuilt index at INDEX_PATH (as a mounted image would). */
  indexRoot: string;
  oldIndex: IndexEntry[];
  /** Hashes every old file the plan's writes need; throws DELTA_BASE_MODIFIED naming the first that differs. */
  precheck(plan: ApplyPlan): Promise<{ checked: number }>;
}

/** Streams `stream` through zstd (optionally with a dictionary); errors become DELTA_CORRUPT. */
async function* zstdStream(input: Readable, what: string, dictionary?: Buffer): AsyncGenerator<Uint8Array> {
  const d = createZstdDecompress({ ...(dictionary ? { dictionary } : {}), params: { [zc.ZSTD_d_windowLogMax]: 27 } } as never);
  input.on('error', (e) => d.destroy(e));
  input.pipe(d);
  try {
    for await (const c of d) yield c as Uint8Array;
  } catch (e) {
    if (e instanceof TiuError) throw e;
    throw new TiuError('DELTA_CORRUPT', `cannot decode ${what} from the delta: ${(e as Error).message}`, { hint: 'use the full image' });
  } finally {
    input.destroy();
    d.destroy();
  }
}

/** Bytes [start, start+length) of a file, in 1 MiB chunks (the handle stays open: it is shared). */
async function* range(fh: FileHandle, start: number, length: number): AsyncGenerator<Buffer> {
  for (let pos = 0; pos < length; ) {
    const n = Math.min(1024 * 1024, length - pos);
    const b = Buffer.allocUnsafe(n);
    const { bytesRead } = await fh.read(b, 0, n, start + pos);
    if (bytesRead === 0) throw new TiuError('DELTA_FORMAT', 'delta ended early', { hint: 'download the delta again' });
    yield b.subarray(0, bytesRead);
    pos += bytesRead;
  }
}

/** A one-at-a-time gate for patch decoding (bounded memory). */
function gate() {
  let tail = Promise.resolve();
  return async <T>(fn: () => AsyncGenerator<T>): Promise<AsyncGenerator<T>> => {
    let release!: () => void;
    const prev = tail;
    tail = new Promise<void>((r) => (release = r));
    await prev;
    const inner = fn();
    return (async function* () {
      try {
        yield* inner;
      } finally {
        release();
      }
    })();
  };
}

export async function prepareDeltaSource(sys: System, delta: OpenedDelta, o: { baseNum: number; baseDir: string; recorded: RecordedImage | undefined; workDir: string }): Promise<DeltaSource> {
  const env = delta.envelope;
  if (!o.recorded) {
    throw new TiuError('DELTA_BASE', `snapshot ${o.baseNum} has no record of the image it holds, so no delta applies to it`, { hint: 'use the full image' });
  }
  const have = o.recorded.manifest;
  if (have.index.sha256 !== env.base.indexSha256) {
    throw new TiuError('DELTA_BASE', `the delta updates ${env.base.version} (index ${env.base.indexSha256.slice(0, 12)}…), but snapshot ${o.baseNum} holds ${have.version} (index ${have.index.sha256.slice(0, 12)}…)`, {
      hint: `use a delta from ${have.version}, or the full image`,
    });
  }
  let oldIndex: IndexEntry[];
  try {
    oldIndex = await loadIndex(o.recorded.indexPath, { sha256: env.base.indexSha256 });
  } catch (e) {
    throw new TiuError('DELTA_BASE_MODIFIED', `the recorded index of snapshot ${o.baseNum} is damaged: ${(e as Error).message}`, { hint: 'use the full image', cause: e });
  }

  // The new index: rebuilt, hashed while written, then parsed against the signed digest.
  const indexFile = join(o.workDir, INDEX_PATH);
  await mkdir(dirname(indexFile), { recursive: true });
  const ib = delta.header.index;
  const dict = ib.method === 'zstd-patch' ? await readFile(o.recorded.indexPath) : undefined;
  const chunks: Buffer[] = [];
  const raw = Readable.from(range(delta.fh, delta.blobBase + ib.offset, ib.size));
  for await (const c of zstdStream(raw, 'the new index', dict)) chunks.push(Buffer.from(c));
  const indexBytes = Buffer.concat(chunks);
  if (createHash('sha256').update(indexBytes).digest('hex') !== env.target.indexSha256) {
    throw new TiuError('DELTA_CORRUPT', 'the new index rebuilt from the delta does not match the signed manifest', { hint: 'use the full image' });
  }
  await writeFile(indexFile, indexBytes, { mode: 0o644 });
  const target = await loadIndex(indexFile, { sha256: env.target.indexSha256 });

  const contents = new Map<string, DeltaContent>(delta.header.contents.map((c) => [c.sha256, c]));
  const sources = oldSources(oldIndex);
  const oneAtATime = gate();
  let tempCounter = 0;

  const oldFile = (digest: string): IndexEntry => {
    const s = sources.get(digest);
    if (!s) throw new TiuError('DELTA_FORMAT', `the delta needs old content ${digest.slice(0, 12)}… that the base image does not have`, { hint: 'the delta was not made for this base; use the full image' });
    return s;
  };
  const modified = (s: IndexEntry) =>
    new TiuError('DELTA_BASE_MODIFIED', `/${displayPath(s.path)} in snapshot ${o.baseNum} differs from the image ${have.version} it was installed from, and the delta builds on it`, {
      hint: 'update with the full image (tiu update --source <full .tiu>); nothing was changed',
    });

  /** Reads an old file whole (a patch dictionary), checked against the old index. */
  const readOld = async (s: IndexEntry): Promise<Buffer> => {
    if ((s.size ?? 0) > PATCH_MAX_BYTES) throw new TiuError('DELTA_FORMAT', `the delta patches /${displayPath(s.path)}, larger than ${PATCH_MAX_BYTES} bytes`, { hint: 'use the full image' });
    let b: Buffer;
    try {
      const fh = await open(under(o.baseDir, sourceLocation(s.path)), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        b = await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch {
      throw modified(s);
    }
    if (b.length !== s.size || createHash('sha256').update(b).digest('hex') !== s.sha256) throw modified(s);
    return b;
  };

  const blobStream = (c: DeltaContent) => Readable.from(range(delta.fh, delta.blobBase + c.offset, c.length));

  return {
    target,
    indexRoot: o.workDir,
    oldIndex,
    async open(e) {
      const c = contents.get(e.sha256!);
      const what = `/${displayPath(e.path)}`;
      // Small frames decode side by side; a large one (window up to 8 MiB) waits its turn with the patches.
      if (c?.method === 'zstd') return c.size <= 1024 * 1024 ? zstdStream(blobStream(c), what) : oneAtATime(() => zstdStream(blobStream(c), what));
      if (c?.method === 'bsdiff') {
        const base = oldFile(c.base!);
        return oneAtATime(async function* () {
          const n = tempCounter++;
          const patch = join(o.workDir, `patch-${n}`);
          const out = join(o.workDir, `new-${n}`);
          try {
            await pipeline(Readable.from(range(delta.fh, delta.blobBase + c.offset, c.length)), createWriteStream(patch, { mode: 0o600 }));
            // bspatch takes string paths: a copy of an old file whose name is not UTF-8.
            const oldBytes = under(o.baseDir, sourceLocation(base.path));
            let oldPath = oldBytes.toString('utf8');
            if (!Buffer.from(oldPath, 'utf8').equals(oldBytes)) {
              oldPath = join(o.workDir, `old-${n}`);
              await copyFile(oldBytes, oldPath);
            }
            const r = await sys.run('bspatch', [oldPath, out, patch], { allowFailure: true });
            if (r.exitCode !== 0) throw new TiuError('DELTA_CORRUPT', `cannot patch ${what} (bspatch: ${r.stderr.trim().split('\n').pop() ?? r.exitCode})`, { hint: 'use the full image' });
            const fh = await open(out, 'r');
            try {
              yield* range(fh, 0, (await fh.stat()).size);
            } finally {
              await fh.close();
            }
          } finally {
            await rm(patch, { force: true });
            await rm(out, { force: true });
            await rm(join(o.workDir, `old-${n}`), { force: true });
          }
        });
      }
      if (c?.method === 'zstd-patch') {
        const base = oldFile(c.base!);
        return oneAtATime(async function* () {
          const dict = await readOld(base);
          yield* zstdStream(blobStream(c), what, dict);
        });
      }
      // Reused content: the base snapshot's file with that digest (checked by the executor's hash).
      const s = oldFile(e.sha256!);
      const fh = await open(under(o.baseDir, sourceLocation(s.path)), constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => {
        throw modified(s);
      });
      return fh.createReadStream({ highWaterMark: 1024 * 1024 });
    },
    async precheck(plan) {
      const need = new Map<string, IndexEntry>();
      for (const ch of plan.changes) {
        if (ch.op !== 'write') continue;
        const c = contents.get(ch.entry.sha256!);
        if (c?.method === 'zstd') continue;
        const s = oldFile(c ? c.base! : ch.entry.sha256!);
        need.set(s.path, s);
      }
      for (const s of need.values()) {
        let d: string;
        try {
          d = await hashPath(under(o.baseDir, sourceLocation(s.path)));
        } catch {
          throw modified(s);
        }
        if (d !== s.sha256) throw modified(s);
      }
      return { checked: need.size };
    },
  };
}
