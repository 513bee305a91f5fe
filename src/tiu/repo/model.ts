/**
 * The repository's data model: what tiu puts into each TUF target's `custom.tiu` field, and the
 * strict parser the device uses on it. Pure: no I/O.
 *
 * One target = one file of one update. Today every update is one file (a full `.tiu` archive or,
 * from the delta work, a `.tiud` delta); `update` and `part` leave room for updates made of several
 * files (a device-independent image plus device-specific parts, each its own TUF target, applied
 * together in one transaction): all targets with the same `compatible` and `update` id belong to
 * one update. Channels live on the target (channel name → phased percentage), so promoting an
 * image to another channel re-signs targets without touching the file.
 */
import { z } from '../../core/zod.ts';
import { TiuError } from '../../core/errors.ts';

/** Names safe in paths, URLs and logs (the manifest's token rule). */
const token = z.string().min(1).max(128).regex(/^[A-Za-z0-9._+:~@-]+$/);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
export const CHANNEL_RE = /^[a-z][a-z0-9-]{0,31}$/;
const channelName = z.string().regex(CHANNEL_RE);

export const ChannelEntrySchema = z
  .object({
    /** Percentage of devices (by phase bucket) that may take this image: 0-100. */
    phased: z.number().int().min(0).max(100),
    /** When the image entered the channel (ISO time). */
    since: z.iso.datetime(),
  })
  .strict();

export const TiuTargetSchema = z
  .object({
    compatible: token,
    version: token,
    /** Monotonic per compatible: the order of publication (tiu versions have no order of their own). */
    build: z.number().int().min(1).max(2 ** 31),
    kind: z.enum(['full', 'delta']),
    /** sha256 of the image's file index (manifest.index.sha256): what a device has after installing it. */
    index: hex64,
    /** For a delta: the index sha256 of the image it applies to. */
    base: hex64.optional(),
    /** Which update this file belongs to (several targets may share it); today the version. */
    update: token,
    /** The file's role in its update: 'image' for the whole image or delta. */
    part: token,
    channels: z.record(channelName, ChannelEntrySchema).refine((o) => Object.keys(o).length <= 16, 'too many channels'),
    created: z.iso.datetime(),
  })
  .strict()
  .refine((t) => (t.kind === 'delta') === (t.base !== undefined), 'a delta needs a base, a full image must not have one');

export type TiuTarget = z.infer<typeof TiuTargetSchema>;

/** One file of the repository as the planner sees it: TUF target path, size, hashes, tiu fields. */
export interface RepoImage extends TiuTarget {
  /** TUF target path, e.g. `my-device/2.0/os-2.0.tiu`. */
  path: string;
  length: number;
  sha256: string;
}

/** Target path of a file: `<compatible>/<version>/<file name>`. */
export function targetPath(compatible: string, version: string, fileName: string): string {
  const safe = fileName.replace(/[^A-Za-z0-9._+-]/g, '_').slice(0, 100);
  return `${compatible}/${version}/${safe}`;
}

/**
 * Parses one TUF target's custom field into a RepoImage; REPO_METADATA naming the field when it
 * is not tiu's (the metadata is signed, so this means a broken or foreign publisher).
 */
export function parseImage(path: string, length: number, hashes: Record<string, string>, custom: unknown): RepoImage {
  const tiu = custom && typeof custom === 'object' ? (custom as Record<string, unknown>).tiu : undefined;
  const r = TiuTargetSchema.safeParse(tiu);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new TiuError('REPO_METADATA', `target ${path}: custom.tiu.${issue.path.join('.') || '(top level)'}: ${issue.message}`, { hint: 'the repository was not made by tiu publish, or by an incompatible version' });
  }
  const sha256 = hashes.sha256;
  if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) throw new TiuError('REPO_METADATA', `target ${path} has no sha256 hash`, { hint: 'republish it with tiu publish' });
  return { ...r.data, path, length, sha256 };
}

/** Images for one device and channel (any phase), sorted by build. */
export function imagesFor(images: readonly RepoImage[], compatible: string, channel: string): RepoImage[] {
  return images.filter((i) => i.compatible === compatible && i.channels[channel] !== undefined).sort((a, b) => a.build - b.build);
}
