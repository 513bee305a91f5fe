/**
 * The tiu delta format (`*.tiud`, docs/delta-format.md): parsing and writing its pieces. Pure.
 *
 * ```
 * | "TIUDELTA" u32 version u32 headerLen | header JSON | blobs ... | CMS SignedData | u64 BE sigSize |
 * |<------------------------------ body (sha256 in the signed envelope) --------->|
 * ```
 * The CMS signs a small envelope JSON (base, target, body size and sha256); the header lists the
 * blobs (new index, the new archive's signature, per-content patches or compressed content); it
 * is stored zstd-compressed.
 */
import { z } from '../../core/zod.ts';
// zlib is loaded where it is used (process.getBuiltinModule): every `tiu extract` imports this
// module, and a full archive never needs zlib (~2 ms of start-up).
const zlib = () => process.getBuiltinModule('node:zlib');
import { TiuError } from '../../core/errors.ts';

export const DELTA_MAGIC = Buffer.from('TIUDELTA', 'ascii');
export const DELTA_VERSION = 4;
/** Magic (8) + version (4) + header length (4). */
export const PREAMBLE_SIZE = 16;
export const MAX_HEADER_SIZE = 16 * 1024 * 1024;
export const MAX_ENVELOPE_SIZE = 8 * 1024;
export const MAX_DELTA_SIGNATURE = 64 * 1024;
export const TRAILER_SIZE = 8;

const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const token = z.string().regex(/^[A-Za-z0-9._+:~@-]{1,128}$/);
const uint = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const blob = z.object({ offset: uint, size: uint }).strict();

/** The signed envelope: what a device checks before it reads anything else. */
export const EnvelopeSchema = z
  .object({
    format: z.literal('tiu-delta'),
    formatVersion: z.literal(DELTA_VERSION),
    compatible: token,
    base: z.object({ version: token, indexSha256: hex64 }).strict(),
    target: z.object({ version: token, indexSha256: hex64 }).strict(),
    body: z.object({ size: uint, sha256: hex64 }).strict(),
    generator: z.string().max(64),
  })
  .strict();
export type Envelope = z.infer<typeof EnvelopeSchema>;

/** How one new content is carried. */
export const CONTENT_METHODS = ['zstd', 'zstd-patch', 'bsdiff', 'gzip-patch', 'bsdiff-elf'] as const;
export type ContentMethod = (typeof CONTENT_METHODS)[number];

/**
 * One new content. Contents are named by position, not digest (64 hex digits each would be most
 * of the header): `entry` is the position in the new index of a file holding the content,
 * `base` the position in the old index of the file a patch applies to. `zstd` and `zstd-patch`
 * take `length` bytes of the contents area (in this order, back to back); `bsdiff` takes `ctrl`,
 * `diff` and `extra` bytes of the three shared decompressed bsdiff streams (in this order too).
 * `gzip-patch` (a .gz file) takes `length` bytes too: a zstd patch of the gunzipped new content
 * (`rawSize` bytes) against the gunzipped old one; the device recompresses it with `gzip -<gzipLevel>n`
 * and puts `gzipHeader` (base64: the original header, name and mtime included) in front.
 * `bsdiff-elf` takes bsdiff slices and `length` bytes: a zstd frame of the old->new address map
 * (src/tiu/delta/elf.ts); the patch applies to the old file with its addresses moved by that map.
 */
export const ContentSchema = z
  .object({
    entry: uint,
    method: z.enum(CONTENT_METHODS),
    base: uint.optional(),
    length: uint.optional(),
    ctrl: uint.optional(),
    diff: uint.optional(),
    extra: uint.optional(),
    rawSize: uint.optional(),
    gzipHeader: z.string().regex(/^[A-Za-z0-9+/]{1,1400}={0,2}$/).optional(),
    gzipLevel: z.number().int().min(1).max(9).optional(),
  })
  .strict();
export type DeltaContent = z.infer<typeof ContentSchema>;

export const HeaderSchema = z
  .object({
    /** The new archive's CMS SignedData (its manifest inside), verbatim. */
    targetSignature: blob,
    /** The new index: an edit script against the old index (src/tiu/delta/index-diff.ts), or the index itself; one zstd frame. */
    index: z.object({ method: z.enum(['zstd', 'index-diff']), offset: uint, size: uint }).strict(),
    /** The control, diff and extra streams of every bsdiff content, concatenated, each one xz stream. */
    bsdiff: z.object({ ctrl: blob, diff: blob, extra: blob }).strict().optional(),
    /** New contents the old image has nowhere, by ascending `entry`; `offset` is where the first `length` starts. */
    contents: z.object({ offset: uint, items: z.array(ContentSchema).max(10_000_000) }).strict(),
  })
  .strict();
export type Header = z.infer<typeof HeaderSchema>;

/** Sum of the contents' `length`s, and of the bsdiff slices. */
export function contentTotals(items: readonly DeltaContent[]): { length: number; ctrl: number; diff: number; extra: number } {
  const t = { length: 0, ctrl: 0, diff: 0, extra: 0 };
  for (const c of items) {
    t.length += c.length ?? 0;
    t.ctrl += c.ctrl ?? 0;
    t.diff += c.diff ?? 0;
    t.extra += c.extra ?? 0;
  }
  return t;
}

function corrupt(message: string, hint = 'the delta is damaged or was not made by tiu delta; download it again or use the full image'): TiuError {
  return new TiuError('DELTA_FORMAT', message, { hint });
}

function parseJson<T>(bytes: Buffer, schema: z.ZodType<T>, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw corrupt(`delta ${what} is not valid UTF-8 JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw corrupt(`delta ${what} field ${issue.path.length ? issue.path.join('.') : '(top level)'}: ${issue.message}`);
  }
  return r.data;
}

export function parseEnvelope(bytes: Buffer): Envelope {
  if (bytes.length > MAX_ENVELOPE_SIZE) throw corrupt(`delta envelope is ${bytes.length} bytes, more than ${MAX_ENVELOPE_SIZE}`);
  return parseJson(bytes, EnvelopeSchema, 'envelope');
}

/** Parses the header and checks every blob lies inside the body's blob area, without overlap. */
export function parseHeader(bytes: Buffer, blobArea: number): Header {
  const h = parseJson(bytes, HeaderSchema, 'header');
  const items = h.contents.items;
  for (let i = 0; i < items.length; i++) {
    const c = items[i]!;
    if (i > 0 && items[i - 1]!.entry >= c.entry) throw corrupt('delta contents are not in index order or repeat an entry');
    const isBsdiff = c.method === 'bsdiff' || c.method === 'bsdiff-elf';
    if ((c.method !== 'zstd') !== (c.base !== undefined)) throw corrupt(`delta content ${c.entry}: a patch needs a base, nothing else has one`);
    if ((c.method === 'bsdiff') !== (c.length === undefined) || [c.ctrl, c.diff, c.extra].some((v) => (v === undefined) !== !isBsdiff)) {
      throw corrupt(`delta content ${c.entry}: bsdiff takes ctrl, diff and extra; bsdiff-elf those and a length; the other methods a length`);
    }
    if ([c.rawSize, c.gzipHeader, c.gzipLevel].some((v) => (c.method === 'gzip-patch') !== (v !== undefined))) {
      throw corrupt(`delta content ${c.entry}: gzip-patch and only it takes rawSize, gzipHeader and gzipLevel`);
    }
    if (isBsdiff && !h.bsdiff) throw corrupt(`delta content ${c.entry} is a bsdiff patch, but the delta has no bsdiff streams`);
  }
  const totals = contentTotals(items);
  const ranges: [number, number, string][] = [
    [h.targetSignature.offset, h.targetSignature.size, 'target signature'],
    [h.index.offset, h.index.size, 'index'],
    [h.contents.offset, totals.length, 'contents'],
    ...(h.bsdiff ? (['ctrl', 'diff', 'extra'] as const).map((k) => [h.bsdiff![k].offset, h.bsdiff![k].size, `bsdiff ${k} stream`] as [number, number, string]) : []),
  ];
  ranges.sort((a, b) => a[0] - b[0]);
  let end = 0;
  for (const [off, size, what] of ranges) {
    if (size === 0 && off <= blobArea) continue;
    if (off < end || off + size > blobArea) throw corrupt(`delta ${what} lies outside the delta or overlaps another part`);
    end = off + size;
  }
  if (h.targetSignature.size > MAX_DELTA_SIGNATURE) throw corrupt('delta target signature is too large');
  return h;
}

/** The header as stored: canonical JSON (schema key order, no spaces), zstd level 19. */
export function serializeHeader(h: Header): Buffer {
  const { zstdCompressSync, constants: zc } = zlib();
  return zstdCompressSync(Buffer.from(JSON.stringify(HeaderSchema.parse(h)), 'utf8'), { params: { [zc.ZSTD_c_compressionLevel]: 19 } });
}

/** Decompresses a stored header, at most {@link MAX_HEADER_SIZE} bytes. */
export function inflateHeader(stored: Buffer): Buffer {
  try {
    return zlib().zstdDecompressSync(stored, { maxOutputLength: MAX_HEADER_SIZE });
  } catch (e) {
    throw corrupt(`delta header does not decompress: ${(e as Error).message}`);
  }
}

export function serializeEnvelope(e: Envelope): Buffer {
  return Buffer.from(JSON.stringify(EnvelopeSchema.parse(e), null, 2) + '\n', 'utf8');
}

export function encodePreamble(headerLen: number): Buffer {
  const b = Buffer.alloc(PREAMBLE_SIZE);
  DELTA_MAGIC.copy(b, 0);
  b.writeUInt32BE(DELTA_VERSION, 8);
  b.writeUInt32BE(headerLen, 12);
  return b;
}

/** Checks the preamble; returns the header length. */
export function decodePreamble(b: Buffer, bodySize: number): number {
  if (b.length < PREAMBLE_SIZE || !b.subarray(0, 8).equals(DELTA_MAGIC)) throw corrupt('not a tiu delta (no TIUDELTA magic)');
  const v = b.readUInt32BE(8);
  if (v !== DELTA_VERSION) throw corrupt(`delta format version ${v} is not supported (this tiu reads ${DELTA_VERSION})`, 'update tiu or use the full image');
  const len = b.readUInt32BE(12);
  if (len > MAX_HEADER_SIZE || PREAMBLE_SIZE + len > bodySize) throw corrupt(`delta header length ${len} is out of bounds`);
  return len;
}

/** Where the signature is, from the file size and the last 8 bytes. */
export function locateDeltaSignature(fileSize: number, trailer: Buffer): { sigOffset: number; sigSize: number } {
  if (fileSize < PREAMBLE_SIZE + TRAILER_SIZE || trailer.length !== TRAILER_SIZE) throw corrupt('delta is too short');
  const big = trailer.readBigUInt64BE(0);
  if (big === 0n || big > BigInt(MAX_DELTA_SIGNATURE) || big > BigInt(fileSize - TRAILER_SIZE - PREAMBLE_SIZE)) throw corrupt(`delta signature size ${big} is out of bounds`);
  const sigSize = Number(big);
  return { sigOffset: fileSize - TRAILER_SIZE - sigSize, sigSize };
}

/** What a delta carries, for `tiu info`: contents per method, and the bytes of each part. */
export interface DeltaSummary {
  contents: number;
  methods: Partial<Record<ContentMethod, number>>;
  /** Bytes of the contents area (zstd frames, zstd and gzip patches, ELF address maps). */
  contentBytes: number;
  /** Bytes of the three xz-packed bsdiff streams. */
  bsdiffBytes: number;
  index: { method: Header['index']['method']; bytes: number };
}

export function summarizeDelta(h: Header): DeltaSummary {
  const methods: Partial<Record<ContentMethod, number>> = {};
  for (const c of h.contents.items) methods[c.method] = (methods[c.method] ?? 0) + 1;
  const b = h.bsdiff;
  return {
    contents: h.contents.items.length,
    methods,
    contentBytes: contentTotals(h.contents.items).length,
    bsdiffBytes: b ? b.ctrl.size + b.diff.size + b.extra.size : 0,
    index: { method: h.index.method, bytes: h.index.size },
  };
}
