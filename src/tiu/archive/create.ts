/**
 * `tiu create`: root tree -> signed archive.
 *
 * Steps: build the squashfs while scanning the tree into the per-file index, which mksquashfs
 * takes from its stdin when it reaches that file (side by side: see imageindex.ts); pad to
 * 4 KiB; append the dm-verity hash tree; sign the manifest and append it with the trailer.
 * Writes `.<name>.tmp-<pid>` next to the output and renames it at the very end, so a failure
 * (a full disk, Ctrl-C) leaves nothing half-written under the output name, and removes the temp.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { mkdtemp, open, rename, rm, stat, readFile } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { tmpdir } from 'node:os';
import { TiuError, fromErrno } from '../../core/errors.ts';
import { missingToolError, type System } from '../../core/system.ts';
import { TIU_VERSION } from '../version.ts';
import { encodeTrailer, padTo, MAX_SIGNATURE_SIZE } from './layout.ts';
import { checkToken, serializeManifest, type Manifest } from './manifest.ts';
import { versionProblem } from './version-order.ts';
import { detectArch, openSourceTree, readOsRelease } from './sourcetree.ts';
import { INDEX_PATH } from '../../core/fileindex/types.ts';
import { planImageIndex, writeImageIndex } from './imageindex.ts';
import { mksquashfs } from '../../squashfs/index.ts';
import { computeHashTree } from '../verity.ts';
import { signManifest } from '../sign/sign.ts';
import { onInterrupt } from '../guard.ts';

/** What `create` runs, in the order a user should install them (tar only for tarballs). */
const REQUIRED_TOOLS = ['mksquashfs', 'unsquashfs', 'xargs', 'getfattr'];

export interface CreateOptions {
  source: string;
  output: string;
  keyPem: string;
  certPem: string;
  chainPem?: string;
  compatible: string;
  version: string;
  buildId?: string;
  arch?: string;
  compression: string;
  level?: number;
  blockSize: number;
  /** Paths ('/var', ...) whose contents the image leaves out. */
  exclude: string[];
  shippedInitrd?: boolean;
  tmpdir?: string;
  /** Seconds since the epoch: makes the archive reproducible (salt, times, signature). */
  sourceDateEpoch?: number;
  progress?: (phase: string, fraction: number) => void;
}

export interface CreateResult {
  manifest: Manifest;
  size: number;
  /** Entries left out because of exclusions, per excluded path. */
  excludedCounts: Record<string, number>;
  entries: number;
}

/** Builds the archive. See the module comment for the failure guarantees. */
export async function createArchive(sys: System, o: CreateOptions): Promise<CreateResult> {
  const epoch = o.sourceDateEpoch;
  const now = epoch !== undefined ? new Date(epoch * 1000) : new Date();
  const mkfsTime = Math.floor(now.getTime() / 1000);
  checkToken(o.compatible, 'compatible string');
  checkToken(o.version, 'version');
  // Versions are ordered (downgrades are refused on the device): an unorderable one is refused here.
  const vp = versionProblem(o.version);
  if (vp) throw new TiuError('USAGE', `version '${o.version}' cannot be ordered: ${vp}`, { hint: 'use a version such as 1.2, 2.0~rc1 or 2026.12.05-3 (see docs/archive-format.md, Versions)' });
  if (o.buildId !== undefined) checkToken(o.buildId, 'build id');
  if (o.arch !== undefined) checkToken(o.arch, 'architecture');
  // Fail on bad keys before the long work: sign a probe.
  signManifest({ content: Buffer.from('probe'), keyPem: o.keyPem, certPem: o.certPem, chainPem: o.chainPem, signingTime: now });
  // Likewise on missing tools, naming the first one (the scan would otherwise trip over xargs
  // before mksquashfs is ever looked for).
  for (const tool of REQUIRED_TOOLS) {
    if ((await sys.which(tool)) === undefined) throw missingToolError(tool);
  }

  await assertOutputPath(o.output);

  // Ctrl-C / SIGTERM abort the build so that the cleanup below runs: no temp output, work dir or
  // unpacked tarball is left behind (Node would otherwise just exit).
  using interrupt = interruptible();
  const stop = interrupt.signal;
  await using tree = await openSourceTree(sys, o.source, { tmpdir: o.tmpdir }).catch((e: unknown) => {
    throw stop.aborted ? stop.reason : e;
  });
  const work = await mkdtemp(join(o.tmpdir ?? tmpdir(), 'tiu-create-'));
  const tmpOut = join(dirname(o.output), `.${basename(o.output)}.tmp-${process.pid}`);
  try {
    // mksquashfs starts at once; the index is scanned and written meanwhile and reaches the
    // image through mksquashfs's stdin, which it reads only when it gets to that file (in
    // usr/lib). The scan's ~0.3 s of hashing and stat calls then overlap the build.
    const plan = await planImageIndex(tree.dir, { exclude: o.exclude, mkfsTime });
    const indexContent = new PassThrough();
    // Stops mksquashfs when the index cannot be delivered (it would wait for its stdin forever).
    const noIndex = new AbortController();
    let scanError: unknown;
    // The scan starts once mksquashfs runs (true) or could not start (false): started together,
    // the scan's many small steps would hold up mksquashfs's own preparation on this one event
    // loop until the scan was done.
    let mksquashfsStarted!: (running: boolean) => void;
    const started = new Promise<boolean>((resolve) => (mksquashfsStarted = resolve));
    const scanning = (async () => {
      if (!(await started)) return undefined;
      let index;
      try {
        index = await writeImageIndex(sys, tree.dir, plan, work);
      } catch (e) {
        scanError = e;
        noIndex.abort(e);
        throw e;
      }
      try {
        await pipeline(createReadStream(index.file), indexContent);
      } catch (e) {
        noIndex.abort(e);
        throw e;
      }
      return index;
    })();
    o.progress?.('squashfs', 0);
    const squashing = mksquashfs(sys, tree.dir, tmpOut, {
      compression: o.compression as never,
      level: o.level,
      blockSize: o.blockSize,
      mkfsTime,
      excludes: plan.squashfsExcludes,
      pseudo: plan.pseudo,
      stdin: indexContent,
      progress: (f) => o.progress?.('squashfs', f),
      signal: AbortSignal.any([stop, noIndex.signal]),
      onStart: () => mksquashfsStarted(true),
    }).finally(() => {
      mksquashfsStarted(false);
      // Nothing reads mksquashfs's stdin any more: a scan still writing there must not wait.
      indexContent.destroy();
    });
    const [scanned, squashed] = await Promise.allSettled([scanning, squashing]);
    stop.throwIfAborted();
    // A scan error explains a killed mksquashfs; otherwise mksquashfs's own error explains why
    // the index could not be delivered.
    if (scanError !== undefined) throw scanError;
    if (squashed.status === 'rejected') throw squashed.reason;
    if (scanned.status === 'rejected') throw scanned.reason;
    const index = scanned.value;
    const sq = squashed.value;
    if (!index) throw new TiuError('INTERNAL', 'mksquashfs finished without reading the index');
    const osRelease = await readOsRelease(tree.dir);
    const arch = o.arch ?? (await detectArch(tree.dir)) ?? 'unknown';
    stop.throwIfAborted();

    const fh = await open(tmpOut, 'r+');
    try {
      const imageSize = (await fh.stat()).size;
      const dataSize = padTo(imageSize);
      await fh.truncate(dataSize);
      // Reproducible builds derive the salt from what the image contains; others use a random one.
      const salt = epoch !== undefined
        ? createHash('sha256').update('tiu-verity-salt\0').update(index.sha256).update('\0').update(o.compatible).update('\0').update(o.version).digest()
        : randomBytes(32);
      o.progress?.('verity', 0);
      // The image mksquashfs wrote goes to disk while its hash tree is computed (from the page
      // cache): the sync at the end then has only the hash tree and the signature left to write.
      const imageSynced = fh.datasync();
      imageSynced.catch(() => {});
      const { rootHash, hashSize } = await computeHashTree(fh, { dataSize, hashOffset: dataSize, salt, onProgress: (d: number, t: number) => o.progress?.('verity', t ? d / t : 1) });
      await imageSynced;
      stop.throwIfAborted();
      const manifest: Manifest = {
        format: 'tiu-archive',
        formatVersion: 1,
        compatible: o.compatible,
        version: o.version,
        ...(o.buildId ? { buildId: o.buildId } : {}),
        created: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        arch,
        os: osRelease,
        image: { type: 'squashfs', size: sq.bytesUsed, compression: sq.compression, blockSize: sq.blockSize },
        verity: {
          algorithm: 'sha256', version: 1, dataBlockSize: 4096, hashBlockSize: 4096,
          dataSize, hashOffset: dataSize, hashSize, salt: salt.toString('hex'), rootHash: rootHash.toString('hex'),
        },
        index: { path: INDEX_PATH, sha256: index.sha256, size: index.size, entries: index.entries },
        content: { files: index.files, bytes: index.bytes },
        excluded: o.exclude,
        initrd: o.shippedInitrd ? 'shipped' : 'regenerate',
        generator: `tiu ${TIU_VERSION}`,
      };
      const der = signManifest({ content: serializeManifest(manifest), keyPem: o.keyPem, certPem: o.certPem, chainPem: o.chainPem, signingTime: now });
      if (der.length > MAX_SIGNATURE_SIZE) {
        throw new TiuError('INPUT_INVALID', `signature is ${der.length} bytes, more than ${MAX_SIGNATURE_SIZE}`, { hint: 'embed fewer intermediate certificates' });
      }
      const sigOffset = dataSize + hashSize;
      await writeAll(fh, der, sigOffset);
      await writeAll(fh, encodeTrailer(der.length), sigOffset + der.length);
      await fh.sync();
      const size = sigOffset + der.length + 8;
      await fh.close();
      stop.throwIfAborted();
      await rename(tmpOut, o.output);
      await syncDir(dirname(o.output));
      return { manifest, size, excludedCounts: plan.excludedCounts, entries: index.entries };
    } finally {
      await fh.close().catch(() => {});
    }
  } catch (e) {
    await rm(tmpOut, { force: true });
    // Whatever failed after an interrupt (a killed child, a closed file) failed because of it.
    if (stop.aborted) throw stop.reason;
    throw fromErrno(e, `creating ${o.output}`) ?? e;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** SIGINT/SIGTERM -> an abort signal carrying INTERRUPTED, for as long as it is not disposed. */
export function interruptible(outcome = 'no archive was written', hint = 'run tiu create again'): { signal: AbortSignal } & Disposable {
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    ac.abort(new TiuError('INTERRUPTED', `interrupted by ${sig}; ${outcome}`, { hint }));
  };
  const release = onInterrupt(onSignal);
  return {
    signal: ac.signal,
    [Symbol.dispose]() {
      release();
    },
  };
}

async function writeAll(fh: import('node:fs/promises').FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, position + done)).bytesWritten;
}

async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

async function assertWritableDir(dir: string): Promise<void> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    throw new TiuError('INPUT_NOT_FOUND', `output directory ${dir} does not exist`, { hint: 'create it or choose another --output', cause: e });
  }
  if (!st.isDirectory()) throw new TiuError('INPUT_INVALID', `${dir} is not a directory`, { hint: 'choose another --output' });
}

/** The output must be a new file or a file to replace: find out before the build, not at the rename. */
async function assertOutputPath(output: string): Promise<void> {
  const st = await stat(output).catch(() => undefined);
  if (st?.isDirectory()) throw new TiuError('INPUT_INVALID', `output ${output} is a directory`, { hint: 'give the file name of the archive to write, e.g. --output os-1.0.tiu' });
  await assertWritableDir(dirname(output));
}

/** Reads PEM files for `create`, with one-line errors. */
export async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw fromErrno(e, `cannot read ${what} ${path}`) ?? e;
  }
}

