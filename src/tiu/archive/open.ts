/**
 * Opening an archive: locate and verify the signature, parse the manifest, check the layout,
 * and (on request) verify every data block against the verity tree.
 *
 * Everything is read through one open file handle that the caller keeps, so the file cannot be
 * swapped between the checks and later use (mounting it goes through /proc/self/fd/N).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import { TiuError, fromErrno } from '../../core/errors.ts';
import { checkTruncated, locateSignature, TRAILER_SIZE } from './layout.ts';
import { SUPERBLOCK_SIZE } from '../../squashfs/superblock.ts';
import { checkCompatible, checkLayout, parseManifest, type Manifest } from './manifest.ts';
import { verifySignedData, type VerifiedSignature } from '../sign/verify.ts';
import { verifyHashTree, verityLayout } from '../verity.ts';
import { veritysetupVerify, type ExternalVerityParams, type ExternalVerityResult } from '../verity/external.ts';
import type { System } from '../../core/system.ts';

export interface OpenArchiveOptions {
  /** PEM text with the trusted CA certificates. */
  keyringPem: string;
  allowedSigners?: string[];
  /** Required compatible string (the device's), if any. */
  compatible?: string;
  now?: Date;
  /**
   * Check the blocks with `veritysetup verify` in a child process (verity/external.ts), started
   * as soon as the manifest is parsed, while the signature is still being checked: its result is
   * used only once the signature holds, and the child is stopped when it does not.
   * {@link OpenedArchive.verifyData} then waits for it.
   */
  sys?: System;
}

export interface OpenedArchive extends AsyncDisposable {
  path: string;
  fh: FileHandle;
  size: number;
  manifest: Manifest;
  manifestBytes: Buffer;
  signature: VerifiedSignature['signer'];
  chain: string[];
  sigOffset: number;
  sigSize: number;
  /**
   * Verifies every data and hash block against the signed root hash (streaming); with
   * `options.sys`, through veritysetup's result (then `onProgress` sees only the end). A
   * mismatch is named by this process's verifier (tree.ts) either way.
   */
  verifyData(onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<void>;
  /** A path that names exactly the open file (for losetup/unsquashfs), valid while open. */
  fdPath(): string;
  close(): Promise<void>;
}

async function readExactly(fh: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new TiuError('ARCHIVE_TRUNCATED', `archive ended early reading ${length} bytes at offset ${position}`, { hint: 'download the archive again' });
    done += bytesRead;
  }
  return buf;
}

/** Opens and authenticates an archive. Throws a TiuError naming what failed; closes on failure. */
export async function openArchive(path: string, options: OpenArchiveOptions): Promise<OpenedArchive> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY);
  } catch (e) {
    throw fromErrno(e, `cannot open archive ${path}`) ?? e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TiuError('INPUT_INVALID', `${path} is not a regular file`, { hint: 'give the path of a .tiu archive' });
    const size = st.size;
    const trailer = size >= TRAILER_SIZE ? await readExactly(fh, TRAILER_SIZE, size - TRAILER_SIZE) : Buffer.alloc(0);
    let located: ReturnType<typeof locateSignature>;
    try {
      located = locateSignature(size, trailer);
    } catch (e) {
      // A cut-off download ends inside the image: its last bytes are no trailer. Say so.
      if (size >= SUPERBLOCK_SIZE) checkTruncated(size, await readExactly(fh, SUPERBLOCK_SIZE, 0));
      throw e;
    }
    const { sigOffset, sigSize } = located;
    const der = await readExactly(fh, sigSize, sigOffset);
    let early: EarlyCheck | undefined;
    const sys = options.sys;
    const onContent = sys ? (unverified: Buffer) => void (early = startEarlyCheck(sys, fh, unverified, sigOffset)) : undefined;
    let verified: Awaited<ReturnType<typeof verifySignedData>>;
    try {
      verified = await verifySignedData(der, { keyringPem: options.keyringPem, allowedSigners: options.allowedSigners, now: options.now, onContent });
    } catch (e) {
      await stopEarly(early);
      throw e;
    }
    const manifest = parseManifest(verified.content);
    checkLayout(manifest, sigOffset);
    checkCompatible(manifest, options.compatible);
    const v = manifest.verity;
    const archive: OpenedArchive = {
      path,
      fh,
      size,
      manifest,
      manifestBytes: verified.content,
      signature: verified.signer,
      chain: verified.chain,
      sigOffset,
      sigSize,
      async verifyData(onProgress, signal) {
        const pending = early;
        early = undefined;
        let external: ExternalVerityResult | undefined;
        // (the same bytes as the signed manifest: compared all the same, every parameter it used)
        if (pending && sameVerityParams(pending.params, v)) {
          external = await awaitEarly(pending, signal);
          if (external === 'ok') {
            onProgress?.(v.dataSize + v.hashSize, v.dataSize + v.hashSize);
            return;
          }
        } else await stopEarly(pending);
        // (veritysetup is missing or could not check, or found a mismatch: this names the block)
        await verifyHashTree(fh, {
          dataSize: v.dataSize,
          hashOffset: v.hashOffset,
          hashSize: v.hashSize,
          salt: Buffer.from(v.salt, 'hex'),
          rootHash: Buffer.from(v.rootHash, 'hex'),
          onProgress,
          signal,
        });
        if (external === 'mismatch') {
          throw new TiuError('ARCHIVE_VERITY', 'verity: veritysetup verify found a block that does not match the signed root hash', {
            hint: 'the archive is corrupt or was tampered with; download it again',
          });
        }
      },
      fdPath: () => `/proc/${process.pid}/fd/${fh.fd}`,
      close: async () => {
        await stopEarly(early);
        await fh.close();
      },
      [Symbol.asyncDispose]: () => archive.close(),
    };
    return archive;
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/** A `veritysetup verify` started from the manifest before its signature was checked. */
interface EarlyCheck {
  params: ExternalVerityParams;
  abort: AbortController;
  result: Promise<ExternalVerityResult>;
}

/**
 * Starts veritysetup on the blocks as the still unverified manifest describes them, when it
 * parses and fits the file (else the check runs later, in this process). Never throws.
 */
function startEarlyCheck(sys: System, fh: FileHandle, unverified: Buffer, sigOffset: number): EarlyCheck | undefined {
  try {
    const m = parseManifest(unverified);
    checkLayout(m, sigOffset);
    const v = m.verity;
    if (verityLayout(v.dataSize / 4096).size !== v.hashSize) return undefined;
    const abort = new AbortController();
    const result = veritysetupVerify(sys, `/proc/${process.pid}/fd/${fh.fd}`, v, abort.signal);
    result.catch(() => {});
    return { params: { dataSize: v.dataSize, hashOffset: v.hashOffset, salt: v.salt, rootHash: v.rootHash }, abort, result };
  } catch {
    return undefined;
  }
}

function sameVerityParams(a: ExternalVerityParams, b: ExternalVerityParams): boolean {
  return a.dataSize === b.dataSize && a.hashOffset === b.hashOffset && a.salt === b.salt && a.rootHash === b.rootHash;
}

async function stopEarly(early: EarlyCheck | undefined): Promise<void> {
  if (!early) return;
  early.abort.abort();
  await early.result.catch(() => {});
}

/** The early check's result; `signal` stops it (rejecting with the signal's reason). */
async function awaitEarly(early: EarlyCheck, signal: AbortSignal | undefined): Promise<ExternalVerityResult> {
  const onAbort = () => early.abort.abort(signal!.reason);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await early.result;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
