/**
 * `tiu delta`: two signed archives -> a signed delta (docs/delta-format.md).
 *
 * Both archives are verified completely (signature, every verity block) and mounted; the planner
 * says which new contents to carry; each is encoded as a `zstd --patch-from` patch against an old
 * file and as plain zstd (ELF files also as bsdiff, and x86-64 ones as bsdiff against the old file
 * with its addresses moved: `bsdiff-elf`, elf.ts; `.gz` files as gzip-aware patches), and the
 * smallest one is kept. The output is written to a temp file next
 * to it and renamed at the end. Same inputs give the same bytes: zstd runs single-threaded at a
 * fixed level, contents are sorted by digest, and the envelope is signed with the new manifest's
 * `created` time as signingTime (RSA PKCS #1 v1.5 signatures are deterministic).
 *
 * Memory: zstd -19 with a long window uses up to about 10x the larger of the two files
 * (at most {@link PATCH_MAX_BYTES} for patches), so about 200 MiB; Node holds both indexes.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, open, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { tmpdir } from 'node:os';
import { forEachLimit } from '../../core/concurrency.ts';
import { TiuError } from '../../core/errors.ts';
import type { System } from '../../core/system.ts';
import { openArchive } from '../archive/open.ts';
import { interruptible } from '../archive/create.ts';
import { mountImage } from '../archive/mount.ts';
import { readImageIndex } from '../device/state.ts';
import { INDEX_PATH, pathBytes } from '../../core/fileindex/types.ts';
import { signManifest } from '../sign/sign.ts';
import { TIU_VERSION } from '../version.ts';
import { planDelta, BSDIFF_MAX_BYTES, type DeltaPlan } from './plan.ts';
import { DELTA_VERSION, encodePreamble, serializeEnvelope, serializeHeader, type DeltaContent, type Header } from './format.ts';
import { encodeCtrl, MAX_CTRL_BYTES, splitBsdiff40 } from './bsdiff.ts';
import { applyIndexDiff, diffIndex } from './index-diff.ts';
import { buildElfMap, encodeElfMap, predictElf } from './elf.ts';
import { gzipHeaderLength, gzipLevels, GZIP_RAW_MAX, regzip } from './gzip.ts';
import { gunzipSync, zstdCompressSync, constants as zc } from 'node:zlib';

export interface CreateDeltaOptions {
  old: string;
  new: string;
  output: string;
  keyPem: string;
  certPem: string;
  chainPem?: string;
  keyringPem: string;
  allowedSigners?: string[];
  /** Parallel zstd runs. */
  jobs?: number;
  onProgress?: (phase: string, fraction: number) => void;
}

export interface CreateDeltaResult {
  output: string;
  size: number;
  base: { version: string; indexSha256: string };
  target: { version: string; indexSha256: string };
  contents: number;
  patched: number;
  reused: number;
  contentBytes: number;
  indexBytes: number;
}

/** zstd level and options: fixed, so output is reproducible. */
// (no frame checksum: every content is checked against its sha256 in the signed index)
const ZSTD_FULL = ['-q', '-19', '-T1', '--no-check', '--no-progress'];
const ZSTD_PATCH = ['-q', '-19', '--long=27', '-T1', '--no-check', '--no-progress'];
/** Node's zstd for the index: level 19, no checksum (the index digest is signed). */
const ZSTD_NODE = { params: { [zc.ZSTD_c_compressionLevel]: 19 } };
/** xz for the grouped bsdiff streams: single-threaded (reproducible), an 8 MiB dictionary (the device's decoder needs about that). */
const XZ = ['-q', '-T1', '--format=xz', '--check=crc64'];
/**
 * LZMA2 options per stream. pb=0: the streams have no 2- or 4-byte alignment (measured on the
 * Debian update: diff 428,052 vs 430,688 B with the defaults lc=3,pb=2; extra 96,992 vs 97,428 B).
 */
const XZ_LZMA2 = { ctrl: 'preset=9e,dict=8MiB', diff: 'preset=9e,dict=8MiB,lc=3,pb=0', extra: 'preset=9e,dict=8MiB,lc=4,pb=0' };
/** bsdiff-elf candidates per ELF file, each with the map made from the previous pass's matches (a third pass gained nothing on the Debian update). */
const ELF_PASSES = 2;
/** A zstd patch under this many bytes is kept without trying bsdiff. */
const BSDIFF_MIN_GAIN = 512;
/** Grouped and xz-compressed, bsdiff streams take about this share of their per-file bzip2 size. */
const BSDIFF_GROUPED_RATIO = 0.8;

/** A string path for the zstd CLI: the path itself when it is UTF-8, else a copy in `work`. */
async function stringPath(root: string, p: string, work: string, n: number): Promise<string> {
  const b = Buffer.concat([Buffer.from(root + '/'), pathBytes(p)]);
  const s = b.toString('utf8');
  if (Buffer.from(s, 'utf8').equals(b)) return s;
  const copy = join(work, `src-${n}`);
  await copyFile(b, copy);
  return copy;
}

/** Whether a file starts with the ELF magic. */
async function isElf(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    await fh.close();
  }
}

/**
 * The gzip-aware candidate for a .gz file patched against an old .gz: a zstd patch of the
 * gunzipped contents, used only when `gzip -<level>n` of the new content (behind the original
 * header) gives back the new file byte for byte, which the device then does.
 */
async function gzipPatch(run: System['run'], oldPath: string, newPath: string, prefix: string): Promise<{ data: Buffer; rawSize: number; gzipHeader: string; gzipLevel: number } | undefined> {
  const [oldGz, newGz] = [await readFile(oldPath), await readFile(newPath)];
  const hlen = gzipHeaderLength(newGz);
  if (hlen === undefined || gzipHeaderLength(oldGz) === undefined) return undefined;
  let oldRaw: Buffer;
  let newRaw: Buffer;
  try {
    oldRaw = gunzipSync(oldGz, { maxOutputLength: GZIP_RAW_MAX });
    newRaw = gunzipSync(newGz, { maxOutputLength: GZIP_RAW_MAX });
  } catch {
    return undefined;
  }
  let gzipLevel: number | undefined;
  for (const level of gzipLevels(newGz)) {
    if ((await regzip(run, newRaw, newGz.subarray(0, hlen), level)).equals(newGz)) {
      gzipLevel = level;
      break;
    }
  }
  if (gzipLevel === undefined) return undefined;
  await writeFile(`${prefix}-old.raw`, oldRaw);
  await writeFile(`${prefix}-new.raw`, newRaw);
  const data = await zstd(run, [...ZSTD_PATCH, `--patch-from=${prefix}-old.raw`, `${prefix}-new.raw`], `${prefix}-raw.zst`);
  return { data, rawSize: newRaw.length, gzipHeader: newGz.subarray(0, hlen).toString('base64'), gzipLevel };
}

async function zstd(run: System['run'], args: string[], out: string): Promise<Buffer> {
  await run('zstd', [...args, '-f', '-o', out]);
  return readFile(out);
}

export async function createDelta(sys: System, o: CreateDeltaOptions): Promise<CreateDeltaResult> {
  // Ctrl-C / SIGTERM abort the work so that the unwinding below runs: the two image mounts, the
  // work directory and the temp output are removed (Node would otherwise just exit and leave them).
  using interrupt = interruptible('no delta was written', 'run tiu delta again');
  const stop = interrupt.signal;
  try {
    return await createDeltaWith(sys, o, stop);
  } catch (e) {
    // Whatever failed after an interrupt (a killed child) failed because of it.
    throw stop.aborted ? stop.reason : e;
  }
}

async function createDeltaWith(sys: System, o: CreateDeltaOptions, stop: AbortSignal): Promise<CreateDeltaResult> {
  const run: System['run'] = (file, args, opts) => {
    stop.throwIfAborted();
    return sys.run(file, args, { ...opts, signal: stop });
  };
  const trust = { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners };
  await using oldA = await openArchive(o.old, trust);
  await using newA = await openArchive(o.new, trust);
  const om = oldA.manifest;
  const nm = newA.manifest;
  if (om.compatible !== nm.compatible) {
    throw new TiuError('USAGE', `the archives are for different devices (${om.compatible}, ${nm.compatible})`, { hint: 'make deltas between versions of one image' });
  }
  o.onProgress?.('verifying', 0);
  await oldA.verifyData();
  stop.throwIfAborted();
  await newA.verifyData();
  stop.throwIfAborted();
  await using oldImg = await mountImage(sys, oldA, { verifiedInUserspace: true });
  await using newImg = await mountImage(sys, newA, { verifiedInUserspace: true });
  const oldIndex = await readImageIndex(`${oldImg.dir}/${INDEX_PATH}`, om.index.sha256);
  const newIndex = await readImageIndex(`${newImg.dir}/${INDEX_PATH}`, nm.index.sha256);
  const plan: DeltaPlan = planDelta(oldIndex, newIndex);

  const work = await mkdtemp(join(tmpdir(), 'tiu-delta-'));
  const tmpOut = join(dirname(o.output), `.${basename(o.output)}.tmp-${process.pid}`);
  try {
    // The blobs, in order: target signature, index, contents (by digest).
    const blobs: Buffer[] = [];
    let offset = 0;
    const put = (b: Buffer) => {
      const at = { offset, size: b.length };
      blobs.push(b);
      offset += b.length;
      return at;
    };
    const targetSignature = put(await readAt(newA.fh, newA.sigOffset, newA.sigSize));
    // The index: an edit script against the old one when the device's own decoder rebuilds it
    // byte for byte (and it is smaller), else the index itself.
    const newIndexBytes = await readFile(`${newImg.dir}/${INDEX_PATH}`);
    const script = diffIndex(oldIndex, newIndex);
    const scriptZ = applyIndexDiff(oldIndex, script).equals(newIndexBytes) ? zstdCompressSync(script, ZSTD_NODE) : undefined;
    const indexFull = zstdCompressSync(newIndexBytes, ZSTD_NODE);
    const useScript = scriptZ !== undefined && scriptZ.length < indexFull.length;
    const ib = put(useScript ? scriptZ : indexFull);
    const index: Header['index'] = { method: useScript ? 'index-diff' : 'zstd', ...ib };

    // Encode contents in parallel; place them in index order.
    type Encoded =
      | { method: 'zstd' | 'zstd-patch'; data: Buffer }
      | { method: 'gzip-patch'; data: Buffer; rawSize: number; gzipHeader: string; gzipLevel: number }
      | { method: 'bsdiff'; ctrl: Buffer; diff: Buffer; extra: Buffer }
      | { method: 'bsdiff-elf'; map: Buffer; ctrl: Buffer; diff: Buffer; extra: Buffer };
    const encoded: Encoded[] = new Array(plan.needed.length);
    let done = 0;
    // (forEachLimit: after a failure or an interrupt it waits for the other lane's children before
    // the caller unmounts the images; a bare Promise.all left a zstd still reading a mounted file,
    // so umount failed and the mount and its loop device stayed)
    await forEachLimit(plan.needed, Math.max(1, o.jobs ?? 2), async (n, i, w) => {
      const src = await stringPath(newImg.dir, n.path, work, i);
      let patch: Buffer | undefined;
      if (n.base) {
        const basePath = await stringPath(oldImg.dir, n.base.path, work, -i - 1);
        patch = await zstd(run, [...ZSTD_PATCH, `--patch-from=${basePath}`, src], join(work, `w${w}-patch.zst`));
      }
      // A patch under a tenth of the file is not beaten by compressing it (saves half the time).
      const full = patch && patch.length * 10 < n.size ? undefined : await zstd(run, [...ZSTD_FULL, src], join(work, `w${w}-full.zst`));
      const cands: { cost: number; e: Encoded }[] = [];
      if (full) cands.push({ cost: full.length, e: { method: 'zstd', data: full } });
      if (patch) cands.push({ cost: patch.length, e: { method: 'zstd-patch', data: patch } });
      if (n.base && n.path.endsWith('.gz')) {
        const basePath = await stringPath(oldImg.dir, n.base.path, work, -i - 1);
        const g = await gzipPatch(run, basePath, src, join(work, `w${w}`));
        if (g) cands.push({ cost: g.data.length + g.gzipHeader.length, e: { method: 'gzip-patch', ...g } });
      }
      // (not when the zstd patch is already tiny: bsdiff cannot save more than those bytes, and
      // it is the slowest step of making a delta)
      if (n.base && n.base.size <= BSDIFF_MAX_BYTES && n.size <= BSDIFF_MAX_BYTES && !(patch && patch.length < BSDIFF_MIN_GAIN) && (await isElf(src))) {
        // bsdiff beats zstd on machine code (relocated addresses) and only there; on long runs
        // of equal bytes (sparse files) its suffix sort takes quadratic time, hence ELF only.
        const out = join(work, `w${w}-bsdiff`);
        await run('bsdiff', [await stringPath(oldImg.dir, n.base.path, work, -i - 1), src, out]);
        const file = await readFile(out);
        const parts = splitBsdiff40(file);
        const bunzip = async (b: Buffer) => (await run('bzip2', ['-dc'], { input: b, binary: true })).stdoutBuffer!;
        // Its cost: the per-file (bzip2) size, times what one xz pass over all streams saves
        // (measured on the Debian fixture update: 583 kB grouped vs 726 kB per file).
        const ctrl = await bunzip(parts.ctrl);
        cands.push({ cost: file.length * BSDIFF_GROUPED_RATIO, e: { method: 'bsdiff', ctrl, diff: await bunzip(parts.diff), extra: await bunzip(parts.extra) } });
        // x86-64 ELF: bsdiff again against the old file with its addresses moved as the
        // previous pass's matches say (src/tiu/delta/elf.ts); the map travels with the patch.
        // Twice: the second pass's matches make a better map (libapt-pkg: 12.1 -> 4.2 kB of diff).
        const oldBytes = await readFile(await stringPath(oldImg.dir, n.base.path, work, -i - 1));
        const newBytes = await readFile(src);
        let passCtrl = ctrl;
        for (let pass = 0; pass < ELF_PASSES; pass++) {
          const map = buildElfMap(oldBytes, newBytes, passCtrl);
          if (!map) break;
          const predicted = join(work, `w${w}-predicted`);
          await writeFile(predicted, predictElf(Buffer.from(oldBytes), map));
          await run('bsdiff', [predicted, src, out]);
          const file2 = await readFile(out);
          const p2 = splitBsdiff40(file2);
          const mapZ = zstdCompressSync(encodeElfMap(map), ZSTD_NODE);
          passCtrl = await bunzip(p2.ctrl);
          cands.push({ cost: file2.length * BSDIFF_GROUPED_RATIO + mapZ.length, e: { method: 'bsdiff-elf', map: mapZ, ctrl: passCtrl, diff: await bunzip(p2.diff), extra: await bunzip(p2.extra) } });
        }
      }
      // Smallest wins; ties go to the first (cheapest to apply).
      encoded[i] = cands.reduce((a, b) => (b.cost < a.cost ? b : a)).e;
      o.onProgress?.('encoding', ++done / plan.needed.length);
    });

    // bsdiff streams: concatenated in content order, each compressed once.
    const streams = { ctrl: [] as Buffer[], diff: [] as Buffer[], extra: [] as Buffer[] };
    for (const e of encoded) if (e.method === 'bsdiff' || e.method === 'bsdiff-elf') for (const k of ['ctrl', 'diff', 'extra'] as const) streams[k].push(e[k]);
    let bsdiff: Header['bsdiff'];
    if (streams.ctrl.length > 0) {
      const xz = async (k: keyof typeof streams) => {
        const f = join(work, `bsdiff-${k}`);
        const raw = Buffer.concat(streams[k]);
        if (k === 'ctrl' && raw.length > MAX_CTRL_BYTES) throw new TiuError('USAGE', `the update needs ${raw.length / 24} bsdiff control triples, more than a device decodes`, { hint: 'make deltas between closer versions' });
        await writeFile(f, k === 'ctrl' ? encodeCtrl(raw) : raw);
        return (await run('xz', [...XZ, `--lzma2=${XZ_LZMA2[k]}`, '-c', f], { binary: true })).stdoutBuffer!;
      };
      bsdiff = { ctrl: put(await xz('ctrl')), diff: put(await xz('diff')), extra: put(await xz('extra')) };
    }

    const items: DeltaContent[] = [];
    const contentsAt = offset;
    let patched = 0;
    let contentBytes = 0;
    plan.needed.forEach((n, i) => {
      const e = encoded[i]!;
      if (e.method !== 'zstd') patched++;
      const base = e.method !== 'zstd' ? { base: n.base!.entry } : {};
      if (e.method === 'bsdiff') {
        items.push({ entry: n.entry, method: e.method, ...base, ctrl: e.ctrl.length, diff: e.diff.length, extra: e.extra.length });
      } else if (e.method === 'bsdiff-elf') {
        put(e.map);
        contentBytes += e.map.length;
        items.push({ entry: n.entry, method: e.method, ...base, length: e.map.length, ctrl: e.ctrl.length, diff: e.diff.length, extra: e.extra.length });
      } else if (e.method === 'gzip-patch') {
        put(e.data);
        contentBytes += e.data.length;
        items.push({ entry: n.entry, method: e.method, ...base, length: e.data.length, rawSize: e.rawSize, gzipHeader: e.gzipHeader, gzipLevel: e.gzipLevel });
      } else {
        put(e.data);
        contentBytes += e.data.length;
        items.push({ entry: n.entry, method: e.method, ...base, length: e.data.length });
      }
    });
    if (bsdiff) contentBytes += bsdiff.ctrl.size + bsdiff.diff.size + bsdiff.extra.size;
    const header = serializeHeader({ targetSignature, index, ...(bsdiff ? { bsdiff } : {}), contents: { offset: contentsAt, items } });
    const preamble = encodePreamble(header.length);
    const hash = createHash('sha256').update(preamble).update(header);
    for (const b of blobs) hash.update(b);
    const bodySize = preamble.length + header.length + offset;
    const envelope = serializeEnvelope({
      format: 'tiu-delta',
      formatVersion: DELTA_VERSION,
      compatible: nm.compatible,
      base: { version: om.version, indexSha256: om.index.sha256 },
      target: { version: nm.version, indexSha256: nm.index.sha256 },
      body: { size: bodySize, sha256: hash.digest('hex') },
      generator: `tiu ${TIU_VERSION}`,
    });
    const sig = signManifest({ content: envelope, keyPem: o.keyPem, certPem: o.certPem, chainPem: o.chainPem, signingTime: new Date(nm.created) });
    const trailer = Buffer.alloc(8);
    trailer.writeBigUInt64BE(BigInt(sig.length));
    const fh = await open(tmpOut, 'w', 0o644);
    try {
      for (const b of [preamble, header, ...blobs, sig, trailer]) await fh.write(b);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmpOut, o.output);
    const size = (await stat(o.output)).size;
    return {
      output: o.output,
      size,
      base: { version: om.version, indexSha256: om.index.sha256 },
      target: { version: nm.version, indexSha256: nm.index.sha256 },
      contents: items.length,
      patched,
      reused: plan.reused,
      contentBytes,
      indexBytes: ib.size,
    };
  } finally {
    await rm(tmpOut, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const b = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(b, done, length - done, position + done);
    if (bytesRead === 0) throw new TiuError('ARCHIVE_TRUNCATED', 'archive ended early');
    done += bytesRead;
  }
  return b;
}
