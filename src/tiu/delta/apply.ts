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
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { System } from '../../core/system.ts';
import { dirname, join } from 'node:path';
// zlib is loaded where it is used (process.getBuiltinModule): every `tiu extract` imports this
// module, and a full archive never needs zlib (~2 ms of start-up).
const zlib = () => process.getBuiltinModule('node:zlib');
import { Readable } from 'node:stream';
import type { FileHandle } from 'node:fs/promises';
import { TiuError } from '../../core/errors.ts';
import { loadIndex } from '../../core/fileindex/io.ts';
import { displayPath, INDEX_PATH, type IndexEntry } from '../../core/fileindex/types.ts';
import { under, type ContentSource } from '../apply/execute.ts';
import { tuneForDeltaWork } from '../v8tuning.ts';
import type { ApplyPlan } from '../apply/plan.ts';
import type { RecordedImage } from '../device/state.ts';
import { hashPath } from '../../core/fileindex/hash.ts';
import { forEachLimit } from '../../core/concurrency.ts';
import { oldSources, sourceLocation, PATCH_MAX_BYTES } from './plan.ts';
import { contentTotals, type DeltaContent, type Header } from './format.ts';
import { bspatchStream, decodeCtrl, MAX_CTRL_BYTES, releaseBspatchBuffers } from './bsdiff.ts';
import { applyIndexDiff } from './index-diff.ts';
import { decodeElfMap, predictElf } from './elf.ts';
import { GZIP_RAW_MAX, MAX_GZIP_HEADER, regzip } from './gzip.ts';

/** Largest index (or index diff) a delta may decode to. */
const MAX_INDEX_BYTES = 1024 * 1024 * 1024;
import type { OpenedDelta } from './open.ts';

export interface DeltaSource extends ContentSource {
  /** The new image's index, rebuilt and checked against the signed manifest. */
  target: IndexEntry[];
  /** A directory holding the rebuilt index at INDEX_PATH (as a mounted image would). */
  indexRoot: string;
  oldIndex: IndexEntry[];
  /**
   * Checks every old file the plan's writes need against the old index before anything is written;
   * throws DELTA_BASE_MODIFIED naming the first that differs. On a trusted base (read-only, btrfs
   * generation as tiu recorded it when sealing: see isBaseTrusted) nothing in it can differ from its
   * recorded index, so nothing is hashed, as a trusted full extract reads no unchanged file.
   */
  precheck(plan: ApplyPlan, o: { baseTrusted: boolean }): Promise<DeltaBaseCheck>;
  /** Closes the files it keeps open (the unpacked bsdiff streams). */
  close(): Promise<void>;
  /** Lets go of its reused buffers (up to PATCH_MAX_BYTES + 1 MiB, and bspatch's spare chunks) once the apply step is over. */
  releaseBuffers(): void;
}

/** What the precheck did: old files the update builds on, and how many of them it hashed. */
export interface DeltaBaseCheck {
  files: number;
  hashed: number;
}

/** A content of the delta with its digest, size and base resolved through the two indexes. */
interface Resolved {
  sha256: string;
  size: number;
  method: DeltaContent['method'];
  /** Digest of the old content a patch applies to. */
  base?: string;
  /** zstd, zstd-patch, gzip-patch, bsdiff-elf (its address map): where its bytes lie in the delta file's blob area. */
  offset: number;
  length: number;
  /** bsdiff: its slices of the three unpacked streams. */
  bsdiff?: { ctrl: { offset: number; length: number }; diff: { offset: number; length: number }; extra: { offset: number; length: number } };
  /** gzip-patch: the uncompressed size and the original gzip header. */
  gzip?: { rawSize: number; header: Buffer; level: number };
}

/** Decoded length of a base64 string. */
function b64len(s: string): number {
  return Math.floor((s.length * 3) / 4) - (s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0);
}

/**
 * Names every content by digest: `entry` must be a regular file of the new index whose content the
 * old image lacks, `base` a regular file of the old index; offsets follow from the lengths.
 */
export function resolveContents(h: Header, target: readonly IndexEntry[], oldIndex: readonly IndexEntry[], sources: Map<string, IndexEntry>): Map<string, Resolved> {
  const bad = (m: string) => new TiuError('DELTA_FORMAT', `delta content ${m}`, { hint: 'the delta was not made for this base; use the full image' });
  const m = new Map<string, Resolved>();
  let offset = h.contents.offset;
  const at = { ctrl: 0, diff: 0, extra: 0 };
  for (const c of h.contents.items) {
    const e = target[c.entry];
    if (!e || e.type !== 'file' || e.hardlink !== undefined || e.sha256 === undefined) throw bad(`${c.entry} is not a file of the new index`);
    if (m.has(e.sha256) || sources.has(e.sha256)) throw bad(`${c.entry} repeats a content the device already has`);
    let base: string | undefined;
    if (c.base !== undefined) {
      const b = oldIndex[c.base];
      if (!b || b.type !== 'file' || b.hardlink !== undefined || b.sha256 === undefined) throw bad(`${c.entry} patches ${c.base}, not a file of the old index`);
      base = b.sha256;
    }
    const r: Resolved = { sha256: e.sha256, size: e.size ?? 0, method: c.method, base, offset, length: c.length ?? 0 };
    if (c.method === 'gzip-patch') {
      if (c.rawSize! > GZIP_RAW_MAX || (b64len(c.gzipHeader!) > MAX_GZIP_HEADER)) throw bad(`${c.entry} is a gzip patch out of bounds`);
      r.gzip = { rawSize: c.rawSize!, header: Buffer.from(c.gzipHeader!, 'base64'), level: c.gzipLevel! };
    }
    if (c.method === 'bsdiff' || c.method === 'bsdiff-elf') {
      r.bsdiff = { ctrl: { offset: at.ctrl, length: c.ctrl! }, diff: { offset: at.diff, length: c.diff! }, extra: { offset: at.extra, length: c.extra! } };
      at.ctrl += c.ctrl!;
      at.diff += c.diff!;
      at.extra += c.extra!;
    }
    offset += r.length;
    m.set(e.sha256, r);
  }
  return m;
}

/** The largest unpacked bsdiff stream accepted (the sum over all patched files, which are at most 8 MiB each). */
const MAX_STREAM = 4 * 1024 * 1024 * 1024;

/**
 * Unpacks the three xz-compressed bsdiff streams into files of `workDir` (one xz process for the
 * three, one after another: about 9 MiB for the 8 MiB dictionary; the control and extra streams
 * are small, and a child process costs the main thread more than they take) and opens them. Each
 * must unpack to the sum of its slices exactly.
 */
async function unpackBsdiffStreams(sys: System, delta: OpenedDelta, workDir: string): Promise<Record<'ctrl' | 'diff' | 'extra', FileHandle>> {
  const totals = contentTotals(delta.header.contents.items);
  const out: Partial<Record<'ctrl' | 'diff' | 'extra', FileHandle>> = {};
  const kinds = ['ctrl', 'diff', 'extra'] as const;
  try {
    const packed = (k: string) => join(workDir, `bsdiff-${k}.xz`);
    await Promise.all(kinds.map((k) => {
      const b = delta.header.bsdiff![k];
      return pipeline(Readable.from(range(delta.fh, delta.blobBase + b.offset, b.size)), createWriteStream(packed(k), { mode: 0o600 }));
    }));
    const r = await sys.run('xz', ['-d', '-q', '-T1', '--memlimit-decompress=64MiB', ...kinds.map(packed)], { allowFailure: true });
    if (r.exitCode !== 0) {
      // xz names the file it could not unpack: say which stream.
      const line = r.stderr.trim().split('\n').pop() ?? String(r.exitCode);
      const k = kinds.find((x) => line.includes(`bsdiff-${x}.xz`)) ?? kinds.join('/');
      throw new TiuError('DELTA_CORRUPT', `cannot unpack the delta's bsdiff ${k} stream (xz: ${line.replace(/^xz: /, '').replace(`${packed(k)}: `, '')})`, { hint: 'use the full image' });
    }
    for (const k of kinds) {
      const file = join(workDir, `bsdiff-${k}`);
      if (k === 'ctrl') {
        // Travels as varint columns (encodeCtrl); decoded in memory, bounded by the header's total.
        const triples = totals.ctrl / 24;
        if (!Number.isInteger(triples) || totals.ctrl > MAX_CTRL_BYTES) throw new TiuError('DELTA_FORMAT', `the delta's bsdiff control stream is ${totals.ctrl} bytes: not whole triples or too large`, { hint: 'use the full image' });
        if ((await stat(file)).size > triples * 30) throw new TiuError('DELTA_CORRUPT', "the delta's bsdiff control stream unpacks to more bytes than its triples take", { hint: 'use the full image' });
        await writeFile(file, decodeCtrl(await readFile(file), triples), { mode: 0o600 });
      }
      const fh = await open(file, 'r');
      out[k] = fh;
      const size = (await fh.stat()).size;
      if (size !== totals[k] || size > MAX_STREAM) throw new TiuError('DELTA_CORRUPT', `the delta's bsdiff ${k} stream unpacks to ${size} bytes, its header says ${totals[k]}`, { hint: 'use the full image' });
    }
    return out as Record<'ctrl' | 'diff' | 'extra', FileHandle>;
  } catch (e) {
    for (const fh of Object.values(out)) await fh.close().catch(() => {});
    throw e;
  }
}

/** Streams `stream` through zstd (optionally with a dictionary); errors become DELTA_CORRUPT. */
async function* zstdStream(input: Readable, what: string, dictionary?: Buffer, maxBytes = Number.MAX_SAFE_INTEGER): AsyncGenerator<Uint8Array> {
  const d = zlib().createZstdDecompress({ ...(dictionary ? { dictionary } : {}), params: { [zlib().constants.ZSTD_d_windowLogMax]: 27 } } as never);
  input.on('error', (e) => d.destroy(e));
  input.pipe(d);
  let n = 0;
  try {
    for await (const c of d) {
      n += (c as Uint8Array).length;
      if (n > maxBytes) throw new TiuError('DELTA_CORRUPT', `${what} in the delta decodes to more than ${maxBytes} bytes`, { hint: 'use the full image' });
      yield c as Uint8Array;
    }
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

/** Largest ELF address map (`bsdiff-elf`) a delta may decode to. */
const MAX_ELF_MAP = 16 * 1024 * 1024;

/** Patches of files up to this size (old and new) are decoded side by side. */
const SMALL_PATCH = 1024 * 1024;

/** Runs a generator function now (the counterpart of the gate below). */
async function run<T>(fn: () => AsyncGenerator<T>): Promise<AsyncGenerator<T>> {
  return fn();
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

/**
 * The new index: rebuilt from the delta (whole, or as a diff against `oldIndex`), checked against
 * the signed digest, written to `indexFile` and parsed from the checked bytes (not read back). A
 * function of its own, so that none of its buffers (the index's bytes, 1.3 MB for a Debian image)
 * stays reachable from the delta source's closures through the apply step.
 */
async function rebuildIndex(delta: OpenedDelta, oldIndex: readonly IndexEntry[], indexFile: string): Promise<IndexEntry[]> {
  const env = delta.envelope;
  await mkdir(dirname(indexFile), { recursive: true });
  const ib = delta.header.index;
  const chunks: Buffer[] = [];
  const raw = Readable.from(range(delta.fh, delta.blobBase + ib.offset, ib.size));
  for await (const c of zstdStream(raw, 'the new index', undefined, MAX_INDEX_BYTES)) chunks.push(Buffer.from(c));
  const indexBytes = ib.method === 'index-diff' ? applyIndexDiff(oldIndex, Buffer.concat(chunks)) : Buffer.concat(chunks);
  if (createHash('sha256').update(indexBytes).digest('hex') !== env.target.indexSha256) {
    throw new TiuError('DELTA_CORRUPT', 'the new index rebuilt from the delta does not match the signed manifest', { hint: 'use the full image; nothing was changed' });
  }
  await writeFile(indexFile, indexBytes, { mode: 0o644 });
  return loadIndex(Readable.from([indexBytes]), { sha256: env.target.indexSha256, canonical: false });
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
  // From here to the end of the run: V8 favours memory over speed (v8tuning.ts).
  tuneForDeltaWork();
  // The bsdiff streams unpack (xz, in children) while the indexes are read and the update is
  // planned; the first bsdiff content waits for them. They are closed on any failure.
  const streamsP = delta.header.bsdiff ? unpackBsdiffStreams(sys, delta, o.workDir) : undefined;
  streamsP?.catch(() => {});
  const closeStreams = async () => {
    const st = await streamsP?.catch(() => undefined);
    if (st) for (const fh of [st.ctrl, st.diff, st.extra]) await fh.close().catch(() => {});
  };
  try {
    return await deltaSource(sys, delta, { ...o, recorded: o.recorded }, streamsP, closeStreams);
  } catch (e) {
    await closeStreams();
    throw e;
  }
}

type Streams = Record<'ctrl' | 'diff' | 'extra', FileHandle>;

async function deltaSource(
  sys: System,
  delta: OpenedDelta,
  o: { baseNum: number; baseDir: string; recorded: RecordedImage; workDir: string },
  streamsP: Promise<Streams> | undefined,
  closeStreams: () => Promise<void>,
): Promise<DeltaSource> {
  const env = delta.envelope;
  const have = o.recorded.manifest;
  let oldIndex: IndexEntry[];
  try {
    // (pinned by the digest the delta names: every entry is checked, the per-line
    // re-serialisation that proves canonical form is skipped, as for a full extract's base)
    oldIndex = await loadIndex(o.recorded.indexPath, { sha256: env.base.indexSha256, canonical: false });
  } catch (e) {
    throw new TiuError('DELTA_BASE_MODIFIED', `the recorded index of snapshot ${o.baseNum} is damaged: ${(e as Error).message}`, { hint: 'use the full image', cause: e });
  }

  const target = await rebuildIndex(delta, oldIndex, join(o.workDir, INDEX_PATH));

  const sources = oldSources(oldIndex);
  const contents = resolveContents(delta.header, target, oldIndex, sources);
  const oneAtATime = gate();

  const oldFile = (digest: string): IndexEntry => {
    const s = sources.get(digest);
    if (!s) throw new TiuError('DELTA_FORMAT', `the delta needs old content ${digest.slice(0, 12)}… that the base image does not have`, { hint: 'the delta was not made for this base; use the full image' });
    return s;
  };
  const modified = (s: IndexEntry) =>
    new TiuError('DELTA_BASE_MODIFIED', `/${displayPath(s.path)} in snapshot ${o.baseNum} differs from the image ${have.version} it was installed from, and the delta builds on it`, {
      hint: 'update with the full image (tiu update --source <full .tiu>); nothing was changed',
    });

  /**
   * Reads an old file whole (a patch dictionary, or content reused as it is), checked against the
   * old index. Synchronously: it is at most PATCH_MAX_BYTES, and mostly a few KiB. Into one of
   * two reused buffers where the caller is done with it before the next read of its kind: `small`
   * (a synchronous decode) or `gated` (a patch decoded one at a time, through the gate); fresh
   * memory otherwise. Fresh buffers for the 26 MB of old files a Debian update patches cost more
   * (page faults, garbage collection) than reading them.
   */
  const readOld = (s: IndexEntry, into?: 'small' | 'gated'): Buffer => {
    const size = s.size ?? 0;
    if (size > PATCH_MAX_BYTES) throw new TiuError('DELTA_FORMAT', `the delta patches /${displayPath(s.path)}, larger than ${PATCH_MAX_BYTES} bytes`, { hint: 'use the full image' });
    let buf: Buffer;
    if (into === 'small' && size <= SMALL_PATCH) buf = smallOld ??= Buffer.allocUnsafe(SMALL_PATCH + 1);
    else if (into === 'gated') buf = gatedOld = gatedOld && gatedOld.length > size ? gatedOld : Buffer.allocUnsafe(Math.min(PATCH_MAX_BYTES, Math.max(gatedSize, size) + 1));
    else buf = Buffer.allocUnsafe(size + 1);
    let n = 0;
    try {
      const fd = openSync(under(o.baseDir, sourceLocation(s.path)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
      try {
        // (one byte more than the index says, where the buffer has room: a longer file is caught)
        for (let r = -1; r !== 0 && n < buf.length; n += r) r = readSync(fd, buf, n, buf.length - n, n);
      } finally {
        closeSync(fd);
      }
    } catch {
      throw modified(s);
    }
    const b = buf.subarray(0, n);
    // (hashed again unless the precheck checked it: the base snapshot is read-only, and every
    // file rebuilt from it is hashed against the new index anyway)
    if (n !== size || (!verified.has(s.path) && createHash('sha256').update(b).digest('hex') !== s.sha256)) throw modified(s);
    return b;
  };
  let smallOld: Buffer | undefined;
  let gatedOld: Buffer | undefined;
  // Sized once for the largest old file an ELF patch reads (growing it file by file left the
  // smaller ones as garbage, several MiB at the apply step's peak).
  let gatedSize = 0;
  for (const c of contents.values()) if (c.method === 'bsdiff-elf') gatedSize = Math.max(gatedSize, Math.min(PATCH_MAX_BYTES, sources.get(c.base!)?.size ?? 0));

  /** A small zstd content or zstd patch (with a small base), decoded in one synchronous call. */
  const decodeSmall = (c: Resolved, what: string): Buffer | undefined => {
    if (!((c.method === 'zstd' || c.method === 'zstd-patch') && c.size <= SMALL_PATCH && c.length <= SMALL_PATCH)) return undefined;
    const base = c.method === 'zstd-patch' ? oldFile(c.base!) : undefined;
    if (base && (base.size ?? 0) > SMALL_PATCH) return undefined;
    const blob = delta.readBlobSync(c.offset, c.length);
    const dictionary = base ? readOld(base, 'small') : undefined;
    try {
      // One output buffer of the expected size (+1: a longer output is still caught), not 16 KiB
      // chunks concatenated: hundreds of small contents made ~18 MiB of garbage that way.
      return zlib().zstdDecompressSync(blob, { ...(dictionary ? { dictionary } : {}), maxOutputLength: Math.max(1, c.size), chunkSize: Math.max(64, c.size + 1), params: { [zlib().constants.ZSTD_d_windowLogMax]: 27 } } as never);
    } catch (e) {
      throw new TiuError('DELTA_CORRUPT', `cannot decode ${what} from the delta: ${(e as Error).message}`, { hint: 'use the full image' });
    }
  };

  /** Old files the precheck found equal to the old index (hashed, or on a trusted base). */
  const verified = new Set<string>();
  /** Small patches decode side by side (a dictionary and window of at most a few MiB each); large ones one at a time. */
  const small = (c: Resolved, base: IndexEntry) => c.size <= SMALL_PATCH && (base.size ?? 0) <= SMALL_PATCH;
  const blobStream = (c: Resolved) => Readable.from(range(delta.fh, delta.blobBase + c.offset, c.length));

  return {
    target,
    indexRoot: o.workDir,
    oldIndex,
    readSmall(e) {
      const c = contents.get(e.sha256!);
      if (c) return decodeSmall(c, `/${displayPath(e.path)}`);
      // Reused content: the base snapshot's file with that digest.
      return readOld(oldFile(e.sha256!), 'small');
    },
    async open(e) {
      const c = contents.get(e.sha256!);
      const what = `/${displayPath(e.path)}`;
      // Small contents and patches (most of them: the tzdata and small ELF files of a security
      // update) in one read and one synchronous decode: a stream per file costs more than the
      // decoding itself. A large zstd frame (window up to 8 MiB) waits its turn with the patches.
      if (c) {
        const whole = decodeSmall(c, what);
        if (whole) return (async function* () {
          yield whole;
        })();
      }
      if (c?.method === 'zstd') return c.size <= 1024 * 1024 ? zstdStream(blobStream(c), what) : oneAtATime(() => zstdStream(blobStream(c), what));
      if (c?.method === 'bsdiff') {
        const base = oldFile(c.base!);
        return (async function* () {
          const fh = await open(under(o.baseDir, sourceLocation(base.path)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => {
            throw modified(base);
          });
          try {
            const streams = (await streamsP)!;
            const at = c.bsdiff!;
            yield* bspatchStream(fh, base.size ?? 0, {
              ctrl: { fh: streams!.ctrl, ...at.ctrl },
              diff: { fh: streams!.diff, ...at.diff },
              extra: { fh: streams!.extra, ...at.extra },
            }, c.size);
          } finally {
            await fh.close();
          }
        })();
      }
      if (c?.method === 'bsdiff-elf') {
        const base = oldFile(c.base!);
        // The old file with its addresses moved by the delta's map: read whole (at most
        // PATCH_MAX_BYTES), rewritten in place and patched from memory; one at a time.
        return oneAtATime(async function* () {
          let map: Buffer;
          try {
            map = zlib().zstdDecompressSync(await delta.readBlob(c.offset, c.length), { maxOutputLength: MAX_ELF_MAP } as never);
          } catch (e) {
            throw new TiuError('DELTA_CORRUPT', `cannot decode the ELF address map of ${what} from the delta: ${(e as Error).message}`, { hint: 'use the full image' });
          }
          const predicted = predictElf(readOld(base, 'gated'), decodeElfMap(map));
          const streams = (await streamsP)!;
          const at = c.bsdiff!;
          yield* bspatchStream(predicted, predicted.length, {
            ctrl: { fh: streams.ctrl, ...at.ctrl },
            diff: { fh: streams.diff, ...at.diff },
            extra: { fh: streams.extra, ...at.extra },
          }, c.size);
        });
      }
      if (c?.method === 'gzip-patch') {
        const base = oldFile(c.base!);
        // (it holds the gunzipped old and new contents too: small only when those are)
        return (small(c, base) && c.gzip!.rawSize <= SMALL_PATCH ? run : oneAtATime)(async function* () {
          let old: Buffer;
          try {
            old = zlib().gunzipSync(readOld(base), { maxOutputLength: GZIP_RAW_MAX });
          } catch (e) {
            if (e instanceof TiuError) throw e;
            throw new TiuError('DELTA_FORMAT', `the delta patches /${displayPath(base.path)} as gzip, which it is not`, { hint: 'the delta was not made for this base; use the full image' });
          }
          const parts: Buffer[] = [];
          for await (const b of zstdStream(blobStream(c), what, old, c.gzip!.rawSize)) parts.push(Buffer.from(b));
          const raw = Buffer.concat(parts);
          if (raw.length !== c.gzip!.rawSize) throw new TiuError('DELTA_CORRUPT', `${what} decodes to ${raw.length} bytes, the delta says ${c.gzip!.rawSize}`, { hint: 'use the full image' });
          yield await regzip((file, args, o) => sys.run(file, args, o), raw, c.gzip!.header, c.gzip!.level);
        });
      }
      if (c?.method === 'zstd-patch') {
        const base = oldFile(c.base!);
        return (small(c, base) ? run : oneAtATime)(async function* () {
          const dict = readOld(base);
          yield* zstdStream(blobStream(c), what, dict);
        });
      }
      // Reused content: the base snapshot's file with that digest (checked by the executor's hash).
      const s = oldFile(e.sha256!);
      const fh = await open(under(o.baseDir, sourceLocation(s.path)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => {
        throw modified(s);
      });
      return fh.createReadStream({ highWaterMark: 1024 * 1024 });
    },
    async close() {
      await closeStreams();
    },
    releaseBuffers() {
      smallOld = gatedOld = undefined;
      releaseBspatchBuffers();
    },
    async precheck(plan, check) {
      const need = new Map<string, IndexEntry>();
      for (const ch of plan.changes) {
        if (ch.op !== 'write') continue;
        const c = contents.get(ch.entry.sha256!);
        if (c?.method === 'zstd') continue;
        const s = oldFile(c ? c.base! : ch.entry.sha256!);
        need.set(s.path, s);
      }
      if (check.baseTrusted) {
        for (const p of need.keys()) verified.add(p);
        return { files: need.size, hashed: 0 };
      }
      // A few at a time: most are small, and one await chain per file would serialize them.
      // (The first mismatch stops the rest; none is still reading when the error comes back.)
      await forEachLimit([...need.values()], 4, async (s) => {
        let d: string;
        try {
          d = await hashPath(under(o.baseDir, sourceLocation(s.path)));
        } catch {
          throw modified(s);
        }
        if (d !== s.sha256) throw modified(s);
        verified.add(s.path);
      });
      return { files: need.size, hashed: need.size };
    },
  };
}
