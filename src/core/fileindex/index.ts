/** The per-file index: scan a tree, write and read index files, compare two indexes. */
export * from './types.ts';
export { INDEX_HEADER, MAX_ENTRIES, MAX_LINE_BYTES, entryProblem, parseIndexHeader, parseIndexLine, serializeEntry } from './format.ts';
export { createIndexValidator, type IndexValidator } from './validate.ts';
export { indexDigest, loadIndex, readIndex, serializeIndex, serializeIndexAsync, writeIndex, type ReadIndexOptions, type WrittenIndex } from './io.ts';
export { scanTree, scanTreeToArray, type ScanOptions, type ScanStats } from './scan.ts';
export { listXattrs, parseGetfattrDump, type Xattrs } from './xattrs.ts';
export { changedFields, diffIndexStreams, diffIndexes, summarizeChanges, type ChangeField, type ChangeKind, type DiffOptions, type IndexChange } from './diff.ts';
