/**
 * Building a squashfs image with the real mksquashfs (the thin layer: checks paths, writes the
 * pseudo file, runs the tool, reads back the superblock; the decisions are in options.ts,
 * pseudo.ts, failure.ts).
 *
 * Reproducibility: squashfs-tools 4.5.1 reads SOURCE_DATE_EPOCH from the environment and then
 * (a) uses it as the mkfs time and (b) CLAMPS every file mtime later than it down to it, and it
 * refuses `-mkfs-time`/`-all-time` together with it ("SOURCE_DATE_EPOCH and command line options
 * can't be used at the same time", exit 1). File mtimes are data for tiu, so the child never sees
 * SOURCE_DATE_EPOCH and always gets an explicit `-mkfs-time` (plus `-reproducible`).
 */
import { lstat, mkdtemp, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fromErrno, TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import { classifyMksquashfsFailure, droppedXattrPrefixes, ignoredPseudoWarnings } from './failure.ts';
import { buildMksquashfsArgs, validateMksquashfsOptions, type MksquashfsOptions } from './options.ts';
import { monotonicProgress, parseProgressLine } from './progress.ts';
import { normalizePseudoPath, parentOf, renderPseudoFile, type PseudoDefinition } from './pseudo.ts';
import { readImageInfo } from './image.ts';
import type { SquashfsCompression } from './superblock.ts';
import { requireSquashfsTools } from './version.ts';

export interface MksquashfsResult {
  /** Size of the image file (padded to a multiple of 4096). */
  bytes: number;
  /** The filesystem proper, from the superblock. */
  bytesUsed: number;
  compression: SquashfsCompression;
  blockSize: number;
  inodes: number;
  mkfsTime: number;
  /** Extended-attribute prefixes mksquashfs could not store and dropped (e.g. `system.posix_acl_access`). */
  droppedXattrs: string[];
}

async function lstatOrUndefined(p: string | Buffer) {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw fromErrno(err, String(p)) ?? err;
  }
}

/** Checks pseudo definitions against the source tree where mksquashfs would silently drop them. */
async function checkPseudoAgainstSource(source: string, defs: readonly PseudoDefinition[]): Promise<void> {
  const pseudoDirs = new Set(defs.filter((d) => d.type === 'dir').map((d) => normalizePseudoPath(d.path)));
  const inSource = (p: string) => lstatOrUndefined(Buffer.concat([Buffer.from(source + '/'), Buffer.from(p, 'latin1')]));
  for (const def of defs) {
    const path = normalizePseudoPath(def.path);
    const parent = parentOf(path);
    // 4.5.1 drops a definition whose parent directory is missing without any message.
    if (parent !== undefined && !pseudoDirs.has(parent)) {
      const st = await inSource(parent);
      if (!st?.isDirectory()) {
        throw new TiuError('TREE_INVALID', `pseudo definition '${path}': parent directory '${parent}' is neither in ${source} nor defined`, {
          hint: 'add a dir definition for the parent',
        });
      }
    }
    if (def.type === 'modify') {
      if (!(await inSource(path))) throw new TiuError('TREE_INVALID', `pseudo modify '${path}': no such path in ${source}`);
    } else if (def.type === 'file') {
      let st;
      try {
        st = await stat(def.source);
      } catch (err) {
        throw fromErrno(err, `host file ${def.source} for pseudo file '${path}'`) ?? err;
      }
      if (!st.isFile()) throw new TiuError('INPUT_INVALID', `host file ${def.source} for pseudo file '${path}' is not a regular file`);
    }
  }
}

async function removePartial(sys: System, output: string): Promise<void> {
  try {
    const st = await lstat(output);
    // Never unlink what is not a plain file (a device or directory was refused before the run).
    if (st.isFile()) await unlink(output);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') sys.log.warn(`could not remove partial image ${output}: ${(err as Error).message}`);
  }
}

/**
 * Builds `output` from the directory `source` with mksquashfs.
 *
 * Side effects: writes `output` (overwriting a regular file there: always `-noappend`), creates
 * and removes a temp pseudo file. On any failure (including an abort) the partial output is
 * deleted. The child runs without SOURCE_DATE_EPOCH and with an explicit `-mkfs-time`
 * (default: now) so file mtimes are kept and equal inputs give byte-identical images.
 *
 * Throws INPUT_INVALID (bad options/paths), INPUT_NOT_FOUND (source or output directory missing),
 * TREE_INVALID (unreadable file, pseudo definition that would be ignored), NO_SPACE, TOOL_MISSING,
 * TOOL_FAILED.
 */
export async function mksquashfs(sys: System, source: string, output: string, options: MksquashfsOptions): Promise<MksquashfsResult> {
  const version = await requireSquashfsTools(sys);
  validateMksquashfsOptions(options);
  const src = resolve(source);
  const out = resolve(output);
  const mkfsTime = options.mkfsTime ?? Math.floor(Date.now() / 1000);

  const srcStat = await lstatOrUndefined(src);
  if (!srcStat) throw new TiuError('INPUT_NOT_FOUND', `squashfs source directory ${src} does not exist`, { hint: 'check the path' });
  if (!srcStat.isDirectory()) throw new TiuError('INPUT_INVALID', `squashfs source ${src} is not a directory`);
  const outStat = await lstatOrUndefined(out);
  if (outStat && !outStat.isFile()) throw new TiuError('INPUT_INVALID', `squashfs output ${out} exists and is not a regular file`, { hint: 'give a new file path' });
  const outDir = await lstatOrUndefined(dirname(out));
  if (!outDir?.isDirectory()) throw new TiuError('INPUT_NOT_FOUND', `cannot create squashfs image ${out}: directory ${dirname(out)} does not exist`, { hint: 'create the output directory first' });

  const pseudo = options.pseudo ?? [];
  const readsStdin = pseudo.some((d) => d.type === 'stdin');
  if (readsStdin !== (options.stdin !== undefined)) {
    throw new TiuError('INPUT_INVALID', readsStdin ? 'a pseudo file reads stdin but no stdin was given' : 'stdin was given but no pseudo file reads it');
  }
  const pseudoBytes = pseudo.length ? renderPseudoFile(pseudo, mkfsTime) : undefined;
  if (pseudo.length) await checkPseudoAgainstSource(src, pseudo);

  const tmp = pseudoBytes ? await mkdtemp(join(tmpdir(), 'tiu-pseudo-')) : undefined;
  try {
    const pseudoFile = tmp ? join(tmp, 'pseudo') : undefined;
    if (pseudoFile && pseudoBytes) await writeFile(pseudoFile, pseudoBytes, { mode: 0o600 });
    const args = buildMksquashfsArgs(options, version, { source: src, output: out, mkfsTime, ...(pseudoFile ? { pseudoFile } : {}) });
    const report = options.progress ? monotonicProgress(options.progress) : undefined;
    report?.(0);

    let result;
    try {
      result = await sys.run('mksquashfs', args, {
        allowFailure: true,
        // `undefined` removes the variable from the child's environment (see header comment).
        env: { SOURCE_DATE_EPOCH: undefined },
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.stdin ? { input: options.stdin } : {}),
        ...(options.onStart ? { onSpawn: options.onStart } : {}),
        ...(report
          ? {
              onLine: (line: string, stream: 'stdout' | 'stderr') => {
                if (stream !== 'stdout') return;
                const f = parseProgressLine(line);
                if (f !== undefined) report(f);
              },
            }
          : {}),
      });
    } catch (err) {
      await removePartial(sys, out);
      throw err;
    }
    if (result.exitCode !== 0) {
      await removePartial(sys, out);
      throw classifyMksquashfsFailure({ source: src, output: out, command: result.command, exitCode: result.exitCode, stderr: result.stderr });
    }
    const ignored = ignoredPseudoWarnings(result.stderr);
    if (ignored.length) {
      await removePartial(sys, out);
      throw new TiuError('TREE_INVALID', `mksquashfs ignored pseudo definitions building ${out}: ${ignored.join(' | ')}`, {
        hint: 'a pseudo definition conflicts with the source tree',
        details: { command: result.command, stderr: result.stderr },
      });
    }
    const droppedXattrs = droppedXattrPrefixes(result.stderr);
    if (droppedXattrs.length) sys.log.debug(`mksquashfs dropped xattrs it cannot store: ${droppedXattrs.join(', ')}`);

    let info;
    try {
      info = await readImageInfo(out);
    } catch (err) {
      await removePartial(sys, out);
      throw err;
    }
    report?.(1);
    return {
      bytes: info.size,
      bytesUsed: info.sb.bytesUsed,
      compression: info.sb.compression,
      blockSize: info.sb.blockSize,
      inodes: info.sb.inodes,
      mkfsTime: info.sb.mkfsTime,
      droppedXattrs,
    };
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}
