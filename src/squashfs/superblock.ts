/**
 * Strict, pure parser of the 96-byte squashfs 4.0 superblock (little-endian), the first bytes of
 * every image mksquashfs writes. Untrusted input: every field is range-checked and any violation
 * throws `TiuError('ARCHIVE_FORMAT')` (or `ARCHIVE_TRUNCATED` when a known file size is too
 * small); nothing else is ever thrown.
 *
 * Layout (squashfs_fs.h, `struct squashfs_super_block`):
 *   0 magic u32 · 4 inodes u32 · 8 mkfs_time u32 · 12 block_size u32 · 16 fragments u32 ·
 *   20 compression u16 · 22 block_log u16 · 24 flags u16 · 26 no_ids u16 · 28 s_major u16 ·
 *   30 s_minor u16 · 32 root_inode u64 · 40 bytes_used u64 · 48 id_table_start u64 ·
 *   56 xattr_id_table_start u64 · 64 inode_table_start u64 · 72 directory_table_start u64 ·
 *   80 fragment_table_start u64 · 88 lookup_table_start (export) u64
 */
import { TiuError } from '../core/errors.ts';

export const SUPERBLOCK_SIZE = 96;
/** 'hsqs' read as a little-endian u32. */
export const SQUASHFS_MAGIC = 0x73717368;

export type SquashfsCompression = 'gzip' | 'lzma' | 'lzo' | 'xz' | 'lz4' | 'zstd';

/** Compression ids of the on-disk format. */
export const COMPRESSION_IDS: Readonly<Record<number, SquashfsCompression>> = {
  1: 'gzip',
  2: 'lzma',
  3: 'lzo',
  4: 'xz',
  5: 'lz4',
  6: 'zstd',
};

/** Superblock flag bits (squashfs_fs.h). Bit 0x0004 (CHECK) is obsolete and never set by 4.x tools. */
export const SUPERBLOCK_FLAGS = {
  uncompressedInodes: 0x0001,
  uncompressedData: 0x0002,
  uncompressedFragments: 0x0008,
  noFragments: 0x0010,
  alwaysFragments: 0x0020,
  duplicates: 0x0040,
  exportable: 0x0080,
  uncompressedXattrs: 0x0100,
  noXattrs: 0x0200,
  compressorOptions: 0x0400,
  uncompressedIds: 0x0800,
} as const;

export type SuperblockFlagName = keyof typeof SUPERBLOCK_FLAGS;

const KNOWN_FLAGS = Object.values(SUPERBLOCK_FLAGS).reduce((a, b) => a | b, 0);
/** The on-disk "no such table" marker (all ones). */
const NO_TABLE = 0xffff_ffff_ffff_ffffn;
/** Metadata blocks are at most 8 KiB uncompressed, so an offset inside one is < 8192. */
const METADATA_SIZE = 8192;

export interface SquashfsSuperblock {
  inodes: number;
  /** Filesystem creation time, seconds since the epoch. */
  mkfsTime: number;
  blockSize: number;
  blockLog: number;
  fragments: number;
  compression: SquashfsCompression;
  compressionId: number;
  flags: number;
  /** The set flags by name. */
  flagNames: SuperblockFlagName[];
  ids: number;
  versionMajor: number;
  versionMinor: number;
  /** Root inode reference: block start relative to the inode table, and offset inside it. */
  rootInode: { block: number; offset: number };
  /** Bytes of the filesystem proper; the file is normally padded after it to a multiple of 4096. */
  bytesUsed: number;
  idTableStart: number;
  /** Absent (undefined) when the image has no such table. */
  xattrIdTableStart: number | undefined;
  inodeTableStart: number;
  directoryTableStart: number;
  fragmentTableStart: number | undefined;
  exportTableStart: number | undefined;
}

export interface ReadSuperblockOptions {
  /** Size of the file (or of the region after the offset) the superblock was read from. */
  fileSize?: number;
}

function bad(message: string): TiuError {
  return new TiuError('ARCHIVE_FORMAT', `not a valid squashfs 4.0 image: ${message}`, {
    hint: 'the image is corrupt or not a squashfs image; rebuild or download it again',
  });
}

function u64(buf: Buffer, at: number, name: string, optional: boolean): number | undefined {
  const v = buf.readBigUInt64LE(at);
  if (v === NO_TABLE) {
    if (optional) return undefined;
    throw bad(`${name} is missing`);
  }
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${name} ${v} is out of range`);
  return Number(v);
}

/**
 * Parses and validates a squashfs 4.0 superblock from the first 96 bytes of `buf`.
 * Pure: no I/O. Throws only TiuError (ARCHIVE_FORMAT, or ARCHIVE_TRUNCATED when
 * `options.fileSize` is smaller than the filesystem's bytes_used).
 */
export function readSuperblock(buf: Buffer, options: ReadSuperblockOptions = {}): SquashfsSuperblock {
  if (!Buffer.isBuffer(buf) || buf.length < SUPERBLOCK_SIZE) {
    throw new TiuError('ARCHIVE_TRUNCATED', `squashfs superblock truncated: need ${SUPERBLOCK_SIZE} bytes, have ${Buffer.isBuffer(buf) ? buf.length : 0}`, {
      hint: 'the image is incomplete; download or build it again',
    });
  }
  const magic = buf.readUInt32LE(0);
  if (magic !== SQUASHFS_MAGIC) throw bad(`bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0x73717368 'hsqs')`);

  const versionMajor = buf.readUInt16LE(28);
  const versionMinor = buf.readUInt16LE(30);
  if (versionMajor !== 4 || versionMinor !== 0) throw bad(`unsupported squashfs version ${versionMajor}.${versionMinor} (only 4.0)`);

  const inodes = buf.readUInt32LE(4);
  const mkfsTime = buf.readUInt32LE(8);
  const blockSize = buf.readUInt32LE(12);
  const fragments = buf.readUInt32LE(16);
  const compressionId = buf.readUInt16LE(20);
  const blockLog = buf.readUInt16LE(22);
  const flags = buf.readUInt16LE(24);
  const ids = buf.readUInt16LE(26);

  if (blockLog < 12 || blockLog > 20) throw bad(`block_log ${blockLog} out of range 12..20`);
  if (blockSize !== 2 ** blockLog) throw bad(`block size ${blockSize} does not match block_log ${blockLog}`);
  const compression = COMPRESSION_IDS[compressionId];
  if (!compression) throw bad(`unknown compression id ${compressionId}`);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw bad(`unknown flags 0x${(flags & ~KNOWN_FLAGS).toString(16)}`);
  if (inodes === 0) throw bad('inode count is 0 (there is always a root directory)');
  if (ids === 0) throw bad('id count is 0 (there is always at least one uid/gid)');
  if ((flags & SUPERBLOCK_FLAGS.noFragments) !== 0 && fragments !== 0) throw bad(`${fragments} fragments although the no-fragments flag is set`);

  const rootRaw = buf.readBigUInt64LE(32);
  const rootOffset = Number(rootRaw & 0xffffn);
  const rootBlock = Number(rootRaw >> 16n);
  if (rootOffset >= METADATA_SIZE) throw bad(`root inode offset ${rootOffset} beyond a metadata block`);

  const bytesUsed = u64(buf, 40, 'bytes_used', false)!;
  const idTableStart = u64(buf, 48, 'id table', false)!;
  const xattrIdTableStart = u64(buf, 56, 'xattr id table', true);
  const inodeTableStart = u64(buf, 64, 'inode table', false)!;
  const directoryTableStart = u64(buf, 72, 'directory table', false)!;
  const fragmentTableStart = u64(buf, 80, 'fragment table', true);
  const exportTableStart = u64(buf, 88, 'export table', true);

  if (bytesUsed < SUPERBLOCK_SIZE) throw bad(`bytes_used ${bytesUsed} smaller than the superblock`);
  if (options.fileSize !== undefined && bytesUsed > options.fileSize) {
    throw new TiuError('ARCHIVE_TRUNCATED', `squashfs image truncated: the superblock says ${bytesUsed} bytes, the file has ${options.fileSize}`, {
      hint: 'the image is incomplete; download or build it again',
    });
  }
  // mksquashfs writes: superblock, [compressor options], data, inode table, directory table,
  // then fragment, export, id and xattr tables; every table must lie inside bytes_used.
  if (inodeTableStart < SUPERBLOCK_SIZE) throw bad(`inode table at ${inodeTableStart} overlaps the superblock`);
  if (directoryTableStart <= inodeTableStart) throw bad(`directory table at ${directoryTableStart} not after inode table at ${inodeTableStart}`);
  if (inodeTableStart + rootBlock >= directoryTableStart) throw bad(`root inode block ${rootBlock} outside the inode table`);
  const tables: [string, number | undefined][] = [
    ['id table', idTableStart],
    ['xattr id table', xattrIdTableStart],
    ['fragment table', fragmentTableStart],
    ['export table', exportTableStart],
  ];
  for (const [name, start] of tables) {
    if (start === undefined) continue;
    if (start < directoryTableStart) throw bad(`${name} at ${start} before the directory table at ${directoryTableStart}`);
    if (start >= bytesUsed) throw bad(`${name} at ${start} beyond bytes_used ${bytesUsed}`);
  }
  if (directoryTableStart >= bytesUsed) throw bad(`directory table at ${directoryTableStart} beyond bytes_used ${bytesUsed}`);
  if (fragments > 0 && fragmentTableStart === undefined) throw bad(`${fragments} fragments but no fragment table`);
  if ((flags & SUPERBLOCK_FLAGS.exportable) !== 0 && exportTableStart === undefined) throw bad('exportable flag set but no export table');

  const flagNames = (Object.keys(SUPERBLOCK_FLAGS) as SuperblockFlagName[]).filter((n) => (flags & SUPERBLOCK_FLAGS[n]) !== 0);
  return {
    inodes,
    mkfsTime,
    blockSize,
    blockLog,
    fragments,
    compression,
    compressionId,
    flags,
    flagNames,
    ids,
    versionMajor,
    versionMinor,
    rootInode: { block: rootBlock, offset: rootOffset },
    bytesUsed,
    idTableStart,
    xattrIdTableStart,
    inodeTableStart,
    directoryTableStart,
    fragmentTableStart,
    exportTableStart,
  };
}
