/**
 * dm-verity hash trees (sha256, 4096/4096, format 1, no superblock), computed and verified in
 * this process on an open file handle. See verity/tree.ts for the contracts.
 */
export { verityLayout, VERITY_BLOCK_SIZE, type VerityLayout, type VerityLevel } from './verity/layout.ts';
export { computeHashTree, verifyHashTree, type ComputeHashTreeOptions, type VerifyHashTreeOptions } from './verity/tree.ts';
