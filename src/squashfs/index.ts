/** Typed wrapper over squashfs-tools (mksquashfs/unsquashfs) and a strict superblock parser. */
export { squashfsToolsVersion, requireSquashfsTools, parseSquashfsVersion, type SquashfsToolsVersion } from './version.ts';
export { mksquashfs, type MksquashfsResult } from './mksquashfs.ts';
export type { MksquashfsOptions } from './options.ts';
export type { PseudoDefinition } from './pseudo.ts';
export { unsquashfsList, unsquashfsExtract, type UnsquashfsListOptions, type UnsquashfsExtractOptions } from './unsquashfs.ts';
export type { SquashfsListEntry } from './listing.ts';
export { readSuperblock, type SquashfsSuperblock, type SquashfsCompression } from './superblock.ts';
export { readImageInfo } from './image.ts';
