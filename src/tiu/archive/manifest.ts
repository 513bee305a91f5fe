/**
 * The signed manifest: strict schema, parse and serialize. Pure: no I/O.
 * The manifest is untrusted until its signature has been verified, and even then it is
 * parsed strictly (bounded sizes, no unknown keys) so a signing mistake cannot confuse a reader.
 */
import { z } from '../../core/zod.ts';
import { TiuError } from '../../core/errors.ts';

export const MANIFEST_FORMAT = 'tiu-archive';
export const MANIFEST_VERSION = 1;
export const MAX_MANIFEST_SIZE = 32 * 1024;

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`), `expected ${bytes * 2} lowercase hex digits`);
const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const text = (max: number) => z.string().min(1).max(max);
/** Printable ASCII without spaces: safe in file names, URLs and logs. */
const token = z.string().min(1).max(128).regex(/^[A-Za-z0-9._+:~@-]+$/, 'only letters, digits and . _ + : ~ @ - are allowed');

export const ManifestSchema = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    formatVersion: z.literal(MANIFEST_VERSION),
    compatible: token,
    version: token,
    buildId: token.optional(),
    created: z.iso.datetime(),
    arch: token,
    os: z.record(z.string().regex(/^[A-Z0-9_]{1,64}$/), z.string().max(512)).refine((o) => Object.keys(o).length <= 64, 'too many os-release fields'),
    image: z
      .object({
        type: z.literal('squashfs'),
        size,
        compression: token,
        blockSize: size,
      })
      .strict(),
    verity: z
      .object({
        algorithm: z.literal('sha256'),
        version: z.literal(1),
        dataBlockSize: z.literal(4096),
        hashBlockSize: z.literal(4096),
        dataSize: size,
        hashOffset: size,
        hashSize: size,
        salt: hex(32),
        rootHash: hex(32),
      })
      .strict(),
    index: z
      .object({
        path: z.string().min(1).max(256),
        sha256: hex(32),
        size,
        entries: size,
      })
      .strict(),
    content: z.object({ files: size, bytes: size }).strict(),
    excluded: z.array(z.string().max(4096)).max(256),
    initrd: z.enum(['regenerate', 'shipped']),
    generator: text(64),
  })
  .strict();

export type Manifest = z.infer<typeof ManifestSchema>;

/** Canonical bytes of a manifest: fixed key order (schema order), 2-space indent, trailing newline. */
export function serializeManifest(m: Manifest): Buffer {
  const parsed = ManifestSchema.parse(m);
  return Buffer.from(JSON.stringify(parsed, null, 2) + '\n', 'utf8');
}

/** Parses and validates manifest bytes; throws ARCHIVE_MANIFEST naming the first bad field. */
export function parseManifest(bytes: Buffer): Manifest {
  if (bytes.length > MAX_MANIFEST_SIZE) {
    throw new TiuError('ARCHIVE_MANIFEST', `manifest is ${bytes.length} bytes, more than the ${MAX_MANIFEST_SIZE} allowed`, { hint: 'the archive was not made by tiu create' });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new TiuError('ARCHIVE_MANIFEST', `manifest is not valid UTF-8 JSON: ${(e as Error).message}`, { hint: 'the archive was not made by tiu create' });
  }
  const r = ManifestSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const where = issue.path.length ? issue.path.join('.') : '(top level)';
    throw new TiuError('ARCHIVE_MANIFEST', `manifest field ${where}: ${issue.message}`, { hint: 'the archive was made by an incompatible or broken tool' });
  }
  return r.data;
}

/**
 * Checks that the manifest's layout agrees with the file: the verity data is the padded image,
 * the tree follows it directly and ends where the signature starts.
 */
export function checkLayout(m: Manifest, sigOffset: number): void {
  const v = m.verity;
  const fail = (what: string) => {
    throw new TiuError('ARCHIVE_MANIFEST', `manifest layout does not match the file: ${what}`, { hint: 'the archive is corrupt or was assembled wrongly' });
  };
  if (v.dataSize % 4096 !== 0 || v.dataSize === 0) fail(`verity data size ${v.dataSize} is not a positive multiple of 4096`);
  if (m.image.size > v.dataSize || m.image.size + 4096 <= v.dataSize) fail(`image size ${m.image.size} does not pad to verity data size ${v.dataSize}`);
  if (v.hashOffset !== v.dataSize) fail(`hash offset ${v.hashOffset} is not directly after the data (${v.dataSize})`);
  if (v.hashOffset + v.hashSize !== sigOffset) fail(`hash tree ends at ${v.hashOffset + v.hashSize}, but the signature starts at ${sigOffset}`);
}

/**
 * Checks a value the builder puts in a token field (compatible, version, buildId, arch) before
 * any work is done, so a bad command-line value is a usage error, not a failure after the build.
 */
export function checkToken(value: string, what: string): void {
  const r = token.safeParse(value);
  if (!r.success) {
    throw new TiuError('USAGE', `${what} ${JSON.stringify(value)} is not valid: ${r.error.issues[0]!.message}`, { hint: 'use 1-128 characters of A-Z a-z 0-9 . _ + : ~ @ -' });
  }
}

/** Checks an archive is meant for this device. */
export function checkCompatible(m: Manifest, compatible: string | undefined): void {
  if (compatible === undefined) return;
  if (m.compatible !== compatible) {
    throw new TiuError('ARCHIVE_COMPATIBLE', `archive is for '${m.compatible}', this device is '${compatible}'`, {
      hint: 'use an archive built for this device (see [device] compatible in /etc/tiu/tiu.conf)',
    });
  }
}
