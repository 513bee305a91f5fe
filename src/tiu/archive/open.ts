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
import { verifyHashTree } from '../verity.ts';

export interface OpenArchiveOptions {
  /** PEM text with the trusted CA certificates. */
  keyringPem: string;
  allowedSigners?: string[];
  /** Required compatible string (the device's), if any. */
  compatible?: string;
  now?: Date;
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
  /** Verifies every data and hash block against the signed root hash (streaming). */
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
    const verified = await verifySignedData(der, { keyringPem: options.keyringPem, allowedSigners: options.allowedSigners, now: options.now });
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
        await verifyHashTree(fh, {
          dataSize: v.dataSize,
          hashOffset: v.hashOffset,
          hashSize: v.hashSize,
          salt: Buffer.from(v.salt, 'hex'),
          rootHash: Buffer.from(v.rootHash, 'hex'),
          onProgress,
          signal,
        });
      },
      fdPath: () => `/proc/${process.pid}/fd/${fh.fd}`,
      close: () => fh.close(),
      [Symbol.asyncDispose]: () => fh.close(),
    };
    return archive;
  } catch (e) {
    await fh.close();
    throw e;
  }
}
