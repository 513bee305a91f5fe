/**
 * Opening a delta on the device: signature, envelope, the whole body's digest, the header, and
 * the new archive's own signature and manifest inside it. All before anything is applied; all
 * through one open file handle that the caller keeps.
 */
import { createHash } from 'node:crypto';
import { constants, readSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { TiuError, fromErrno, withContext } from '../../core/errors.ts';
import { verifySignedData, type VerifiedSignature } from '../sign/verify.ts';
import { checkCompatible, parseManifest, type Manifest } from '../archive/manifest.ts';
import { inflateHeader, decodePreamble, locateDeltaSignature, parseEnvelope, parseHeader, PREAMBLE_SIZE, TRAILER_SIZE, type Envelope, type Header } from './format.ts';

export interface OpenedDelta extends AsyncDisposable {
  path: string;
  /** The file's size in bytes. */
  size: number;
  fh: FileHandle;
  envelope: Envelope;
  header: Header;
  /** File offset of blob offset 0. */
  blobBase: number;
  /** The new image's manifest, authenticated by its own (embedded) signature. */
  manifest: Manifest;
  manifestBytes: Buffer;
  /** The new archive's CMS SignedData (DER) carried verbatim: recorded for `tiu verify --system`. */
  signatureDer: Buffer;
  /** Who signed the delta (its envelope), and the chain to the keyring's CA. */
  signer: VerifiedSignature['signer'];
  chain: string[];
  /** Who signed the new image's manifest carried inside, and that chain. */
  targetSigner: VerifiedSignature['signer'];
  targetChain: string[];
  readBlob(offset: number, size: number): Promise<Buffer>;
  /** {@link readBlob} without a promise (a small content decoded at once). */
  readBlobSync(offset: number, size: number): Buffer;
}

async function readExactly(fh: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new TiuError('DELTA_FORMAT', `delta ended early reading ${length} bytes at offset ${position}`, { hint: 'download the delta again' });
    done += bytesRead;
  }
  return buf;
}

/** {@link readExactly} without a promise. */
function readExactlySync(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  for (let done = 0; done < length; ) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new TiuError('DELTA_FORMAT', `delta ended early reading ${length} bytes at offset ${position}`, { hint: 'download the delta again' });
    done += n;
  }
  return buf;
}

/** Whether a file starts with the delta magic (a .tiu starts with squashfs' `hsqs`). */
export async function isDeltaFile(path: string): Promise<boolean> {
  const fh = await open(path, constants.O_RDONLY).catch(() => undefined);
  if (!fh) return false;
  try {
    const b = Buffer.alloc(8);
    const { bytesRead } = await fh.read(b, 0, 8, 0);
    return bytesRead === 8 && b.toString('latin1') === 'TIUDELTA';
  } finally {
    await fh.close();
  }
}

export interface OpenDeltaOptions {
  keyringPem: string;
  allowedSigners?: string[];
  compatible?: string;
  now?: Date;
}

/** Opens and authenticates a delta. Throws a TiuError naming what failed; closes on failure. */
export async function openDelta(path: string, o: OpenDeltaOptions): Promise<OpenedDelta> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY);
  } catch (e) {
    throw fromErrno(e, `cannot open delta ${path}`) ?? e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new TiuError('INPUT_INVALID', `${path} is not a regular file`, { hint: 'give the path of a .tiud delta' });
    const size = st.size;
    const trailer = size >= TRAILER_SIZE ? await readExactly(fh, TRAILER_SIZE, size - TRAILER_SIZE) : Buffer.alloc(0);
    const { sigOffset, sigSize } = locateDeltaSignature(size, trailer);
    const der = await readExactly(fh, sigSize, sigOffset);
    let verified;
    try {
      verified = await verifySignedData(der, { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners, now: o.now });
    } catch (e) {
      throw withContext(e, 'delta signature');
    }
    const envelope = parseEnvelope(verified.content);
    if (envelope.body.size !== sigOffset) throw new TiuError('DELTA_CORRUPT', `delta body is ${sigOffset} bytes, its signed envelope says ${envelope.body.size}`, { hint: 'download the delta again' });
    checkCompatible({ compatible: envelope.compatible } as Manifest, o.compatible);

    // The body's digest: the preamble and header are kept from this very read.
    const preamble = await readExactly(fh, PREAMBLE_SIZE, 0);
    const headerLen = decodePreamble(preamble, sigOffset);
    const headerBytes = await readExactly(fh, headerLen, PREAMBLE_SIZE);
    const h = createHash('sha256').update(preamble).update(headerBytes);
    const chunk = Buffer.allocUnsafe(1024 * 1024);
    for (let pos = PREAMBLE_SIZE + headerLen; pos < sigOffset; ) {
      const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, sigOffset - pos), pos);
      if (bytesRead === 0) throw new TiuError('DELTA_FORMAT', 'delta ended early', { hint: 'download the delta again' });
      h.update(chunk.subarray(0, bytesRead));
      pos += bytesRead;
    }
    if (h.digest('hex') !== envelope.body.sha256) {
      throw new TiuError('DELTA_CORRUPT', 'delta content does not match its signed digest (damaged or tampered with)', { hint: 'download the delta again or use the full image; nothing was changed' });
    }
    const blobBase = PREAMBLE_SIZE + headerLen;
    const header = parseHeader(inflateHeader(headerBytes), sigOffset - blobBase);
    const readBlob = (offset: number, n: number) => readExactly(fh, n, blobBase + offset);

    const targetDer = await readBlob(header.targetSignature.offset, header.targetSignature.size);
    let target;
    try {
      target = await verifySignedData(targetDer, { keyringPem: o.keyringPem, allowedSigners: o.allowedSigners, now: o.now });
    } catch (e) {
      throw withContext(e, 'signature of the new image in the delta');
    }
    const manifest = parseManifest(target.content);
    checkCompatible(manifest, o.compatible);
    if (manifest.index.sha256 !== envelope.target.indexSha256 || manifest.version !== envelope.target.version || manifest.compatible !== envelope.compatible) {
      throw new TiuError('DELTA_FORMAT', 'the delta envelope and the new image manifest it carries disagree', { hint: 'the delta was not made by tiu delta; use the full image' });
    }
    return {
      path,
      size,
      fh,
      envelope,
      header,
      blobBase,
      manifest,
      manifestBytes: target.content,
      signatureDer: targetDer,
      signer: verified.signer,
      chain: verified.chain,
      targetSigner: target.signer,
      targetChain: target.chain,
      readBlob,
      readBlobSync: (offset: number, n: number) => readExactlySync(fh.fd, n, blobBase + offset),
      [Symbol.asyncDispose]: () => fh.close(),
    };
  } catch (e) {
    await fh.close();
    throw e;
  }
}
