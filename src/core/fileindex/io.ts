/**
 * Index files: writing (serialize + digest) and reading (bounded line splitting, strict
 * parsing and sequence validation, optional digest check). Only readIndex/loadIndex with a path
 * and writeIndex touch the file system.
 */
import { createHash } from 'node:crypto';
import { createReadStream, constants as FS } from 'node:fs';
import { open } from 'node:fs/promises';
import { TiuError, fromErrno } from '../errors.ts';
import type { IndexEntry } from './types.ts';
import { INDEX_HEADER, MAX_ENTRIES, MAX_LINE_BYTES, lineTooLong, parseIndexHeader, parseIndexLine, serializeEntry } from './format.ts';
import { createIndexValidator } from './validate.ts';

/**
 * The index file's text, one line (with its newline) at a time: the header, then each entry.
 * Validates the sequence as it goes and throws TREE_INVALID if the entries could not be read back
 * (so tiu never writes an index it would reject).
 */
export function* serializeIndex(entries: Iterable<IndexEntry>): Generator<string, void, undefined> {
  yield INDEX_HEADER + '\n';
  const v = createIndexValidator();
  for (const e of entries) {
    writerCheck(() => v.push(e));
    yield serializeEntry(e) + '\n';
  }
  writerCheck(() => v.end());
}

/** Async variant of {@link serializeIndex} for streamed entries (e.g. straight from scanTree). */
export async function* serializeIndexAsync(entries: AsyncIterable<IndexEntry> | Iterable<IndexEntry>): AsyncGenerator<string, void, undefined> {
  yield INDEX_HEADER + '\n';
  const v = createIndexValidator();
  for await (const e of entries) {
    writerCheck(() => v.push(e));
    yield serializeEntry(e) + '\n';
  }
  writerCheck(() => v.end());
}

function writerCheck(f: () => void): void {
  try {
    f();
  } catch (err) {
    const msg = err instanceof TiuError ? err.message : String(err);
    throw new TiuError('TREE_INVALID', `cannot index the tree: ${msg}`, { cause: err, hint: 'the tree contains something the index cannot represent' });
  }
}

/** sha256 (hex) of the serialized index: the digest that goes into the manifest. Pure. */
export function indexDigest(entries: Iterable<IndexEntry>): string {
  const h = createHash('sha256');
  for (const line of serializeIndex(entries)) h.update(line, 'utf8');
  return h.digest('hex');
}

export interface WrittenIndex {
  /** sha256 of the file, hex. */
  sha256: string;
  entries: number;
  bytes: number;
}

/**
 * Writes the index to `path` (created or truncated, mode 0644) and returns its digest. Accepts
 * streamed entries; memory stays bounded by one write buffer.
 */
export async function writeIndex(path: string, entries: AsyncIterable<IndexEntry> | Iterable<IndexEntry>): Promise<WrittenIndex> {
  const h = createHash('sha256');
  let fh;
  try {
    fh = await open(path, 'w', 0o644);
  } catch (err) {
    throw fromErrno(err, `writing index ${path}`) ?? err;
  }
  let bytes = 0;
  let lines = -1;
  try {
    let chunk: string[] = [];
    let chunkLen = 0;
    const flush = async () => {
      const buf = Buffer.from(chunk.join(''), 'utf8');
      h.update(buf);
      bytes += buf.length;
      await fh.write(buf);
      chunk = [];
      chunkLen = 0;
    };
    for await (const line of serializeIndexAsync(entries)) {
      chunk.push(line);
      chunkLen += line.length;
      lines++;
      if (chunkLen >= 256 * 1024) await flush();
    }
    await flush();
  } catch (err) {
    throw fromErrno(err, `writing index ${path}`) ?? err;
  } finally {
    await fh.close();
  }
  return { sha256: h.digest('hex'), entries: lines, bytes };
}

export interface ReadIndexOptions {
  /**
   * Expected sha256 of the whole file (hex). Checked when the end is reached: the generator
   * throws ARCHIVE_INDEX then, so do not act on entries before it has finished.
   */
  sha256?: string;
  /** Lower limits for tests; never raised above the format's limits. */
  maxEntries?: number;
  /**
   * Require each line in its one canonical form (default true). May be false only for an index
   * whose bytes are pinned otherwise (a signed digest, or a trusted snapshot's own copy): every
   * entry is still checked in full, only the re-serialisation per line is skipped.
   */
  canonical?: boolean;
}

const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Reads an index file (a path, or a byte stream) entry by entry, checking everything: header,
 * line length (at most 1 MiB), UTF-8, each entry ({@link parseIndexLine}), the sequence (tree
 * order, no duplicates, parents, hardlinks; see validate.ts), a final newline, and the digest if
 * given. Any violation throws ARCHIVE_INDEX with the line number.
 */
export async function* readIndex(source: string | AsyncIterable<Buffer | Uint8Array>, options: ReadIndexOptions = {}): AsyncGenerator<IndexEntry, void, undefined> {
  for await (const batch of readIndexBatches(source, options)) yield* batch;
}

/**
 * {@link readIndex} a chunk's entries at a time: the same checks, with one turn of the async
 * generator per chunk read (256 KiB, ~1,500 entries) instead of one per entry (~2 µs each, and a
 * promise of garbage: ~15 ms of a Debian index's ~50 ms to load).
 */
async function* readIndexBatches(source: string | AsyncIterable<Buffer | Uint8Array>, options: ReadIndexOptions = {}): AsyncGenerator<IndexEntry[], void, undefined> {
  // Never through a final symlink, and a FIFO fails (EAGAIN) instead of hanging; fs.open takes
  // numeric flags although the stream option is typed as a string.
  const flags = (FS.O_RDONLY | FS.O_NOFOLLOW | FS.O_NONBLOCK) as unknown as string;
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 256 * 1024, flags }) : source;
  const h = createHash('sha256');
  const v = createIndexValidator({ maxEntries: Math.min(options.maxEntries ?? MAX_ENTRIES, MAX_ENTRIES) });
  const canonical = options.canonical ?? true;
  let lineNo = 0;
  let pending: Buffer[] = [];
  let pendingLen = 0;
  /** One line (without its newline), decoded; `lineNo` is its number. */
  const handleLine = (line: string): IndexEntry | undefined => {
    if (lineNo === 1) {
      parseIndexHeader(line);
      return undefined;
    }
    const e = parseIndexLine(line, lineNo, canonical);
    v.push(e, lineNo, true); // (parseIndexLine checked the entry alone)
    return e;
  };
  const handle = (lineBuf: Buffer): IndexEntry | undefined => {
    lineNo++;
    if (lineBuf.length > MAX_LINE_BYTES) tooLong(lineNo);
    let line: string;
    try {
      line = decoder.decode(lineBuf);
    } catch {
      throw new TiuError('ARCHIVE_INDEX', `index line ${lineNo}: not valid UTF-8`, { hint: 'the image index is corrupt' });
    }
    return handleLine(line);
  };
  try {
    for await (const raw of stream) {
      const chunk = Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      h.update(chunk);
      const batch: IndexEntry[] = [];
      let start = 0;
      // The line begun in an earlier chunk ends in this one (without a newline here, the whole
      // chunk joins it below).
      const first = pendingLen > 0 ? chunk.indexOf(0x0a) : -1;
      if (first >= 0) {
        const lineBuf = Buffer.concat([...pending, chunk.subarray(0, first)]);
        pending = [];
        pendingLen = 0;
        const e = handle(lineBuf);
        if (e) batch.push(e);
        start = first + 1;
      }
      // The whole lines here are decoded at once (a newline byte never ends inside a UTF-8
      // sequence): one string, and each line a slice of it, instead of a buffer view and a
      // string per line. Where that finds bad UTF-8, line by line, to name the line.
      const last = chunk.lastIndexOf(0x0a);
      if (last >= start) {
        let text: string | undefined;
        try {
          text = decoder.decode(chunk.subarray(start, last));
        } catch {
          text = undefined;
        }
        if (text !== undefined) {
          for (let p = 0; ; ) {
            const q = text.indexOf('\n', p);
            const line = q < 0 ? text.slice(p) : text.slice(p, q);
            lineNo++;
            if (lineTooLong(line)) tooLong(lineNo);
            const e = handleLine(line);
            if (e) batch.push(e);
            if (q < 0) break;
            p = q + 1;
          }
        } else {
          for (let p = start; p <= last; ) {
            const nl = chunk.indexOf(0x0a, p);
            const e = handle(chunk.subarray(p, nl));
            if (e) batch.push(e);
            p = nl + 1;
          }
        }
        start = last + 1;
      }
      if (start < chunk.length) {
        const rest = chunk.subarray(start);
        pending.push(Buffer.from(rest)); // copy: the stream may reuse its buffer
        pendingLen += rest.length;
        if (pendingLen > MAX_LINE_BYTES) tooLong(lineNo + 1);
      }
      if (batch.length > 0) yield batch;
    }
  } catch (err) {
    if (err instanceof TiuError) throw err;
    throw fromErrno(err, `reading index ${typeof source === 'string' ? source : ''}`.trim()) ?? err;
  }
  if (pendingLen > 0) throw new TiuError('ARCHIVE_INDEX', `index line ${lineNo + 1}: no newline at the end (truncated?)`, { hint: 'the image index is corrupt' });
  if (lineNo === 0) throw new TiuError('ARCHIVE_INDEX', 'the index is empty', { hint: 'the image index is corrupt' });
  v.end();
  if (options.sha256 !== undefined) {
    const got = h.digest('hex');
    if (got !== options.sha256.toLowerCase()) {
      throw new TiuError('ARCHIVE_INDEX', `index digest mismatch: expected ${options.sha256}, got ${got}`, { hint: 'the image index does not belong to this manifest; the image is corrupt or tampered with' });
    }
  }
}

function tooLong(lineNo: number): never {
  throw new TiuError('ARCHIVE_INDEX', `index line ${lineNo}: longer than ${MAX_LINE_BYTES} bytes`, { hint: 'the image index is corrupt' });
}

/** Reads a whole index into memory (see {@link readIndex}); the digest, if given, is checked before returning. */
export async function loadIndex(source: string | AsyncIterable<Buffer | Uint8Array>, options: ReadIndexOptions = {}): Promise<IndexEntry[]> {
  const out: IndexEntry[] = [];
  for await (const batch of readIndexBatches(source, options)) for (const e of batch) out.push(e);
  return out;
}
