/**
 * A small scanner for etc trees: it produces the same {@link IndexEntry}s as the image scanner
 * (src/core/fileindex), minus hardlink detection, and reads xattrs only when given `sys`.
 *
 * Reads names as bytes (`readdir` with `encoding: 'buffer'`), so any file name survives.
 * Hashes file contents streaming (bounded memory). Does not follow symlinks, does not detect
 * hardlinks. xattrs are read in-process (@napi-rs/xattr; needs `sys` for the fallback), or with one
 * `getfattr -R` where the binding cannot load. Side effects: reads the tree; may run getfattr.
 */
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { lstat, readFile } from 'node:fs/promises';
import { TiuError, fromErrno } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import { bytesToPath, comparePaths, pathBytes } from '../core/fileindex/types.ts';
import { deviceNumbers, entryType } from '../core/fileindex/scan.ts';
import { hashPathSync } from '../core/fileindex/hash.ts';
import { listXattrs, parseGetfattrDump, xattrBinding } from '../core/fileindex/xattrs.ts';
import type { ContentSource, EtcEntry, EtcSide } from './types.ts';

/** Absolute Buffer path of a byte-string path below `root` (`.` is the root itself). */
export function absPath(root: string, rel: string): Buffer {
  const r = Buffer.from(root.replace(/(.)\/+$/, '$1'), 'utf8');
  return rel === '.' ? r : Buffer.concat([r, Buffer.from('/'), pathBytes(rel)]);
}

export interface ScanOptions {
  /** The system seam: needed to read xattrs (getfattr). Without it, xattrs are not read. */
  sys?: System;
  /** Read xattrs (default: true when `sys` is given). */
  xattrs?: boolean;
}

/**
 * Scans the tree at `dir` into entries keyed by byte-string path (`.` = `dir` itself).
 * Throws INPUT_NOT_FOUND / INPUT_INVALID if `dir` is missing or not a directory.
 */
export async function scanEtc(dir: string, opts: ScanOptions = {}): Promise<Map<string, EtcEntry>> {
  const out = new Map<string, EtcEntry>();
  // Synchronous calls: an /etc is hundreds of small files, and awaiting four thread-pool round
  // trips per entry made one scan take ~0.2 s (an update scans /etc three times).
  const visit = (rel: string): void => {
    const abs = absPath(dir, rel);
    const st = lstatSync(abs, { bigint: true });
    const type = entryType(st);
    if (!type) throw new TiuError('ETC_MERGE', `${dir}/${rel}: unsupported file type`);
    const e: EtcEntry = { path: rel, type, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtime: Number(st.mtimeMs / 1000n) };
    if (type === 'file') {
      e.size = Number(st.size);
      e.sha256 = hashPathSync(abs);
    } else if (type === 'symlink') {
      e.target = bytesToPath(readlinkSync(abs, { encoding: 'buffer' }));
    } else if (type === 'chr' || type === 'blk') {
      e.rdev = deviceNumbers(st.rdev);
    }
    out.set(rel, e);
    if (type === 'dir') {
      const names = readdirSync(abs, { encoding: 'buffer' });
      for (const name of names.map(bytesToPath).sort()) visit(rel === '.' ? name : `${rel}/${name}`);
    }
  };
  try {
    const st = await lstat(dir);
    if (!st.isDirectory()) throw new TiuError('INPUT_INVALID', `${dir} is not a directory`);
    visit('.');
  } catch (err) {
    throw fromErrno(err, `scanning ${dir}`) ?? err;
  }
  if (opts.sys && opts.xattrs !== false) {
    // In-process through the binding (one getfattr child per scan cost more than the whole
    // scan); getfattr only where the binding is missing or a path or name is not UTF-8.
    const binding = await xattrBinding();
    const xattrs = binding ? await listXattrs(opts.sys, dir, [...out.keys()]) : await readXattrs(opts.sys, dir);
    for (const [rel, x] of xattrs) {
      const e = out.get(rel);
      if (e) e.xattrs = x;
    }
  }
  return new Map([...out.entries()].sort((a, b) => comparePaths(a[0], b[0])));
}

/**
 * Parses `getfattr --absolute-names -d -m - -e base64` output (read as latin1) into
 * path -> (name -> base64 value), paths relative to `root` (others left out). The parsing is
 * the file index's ({@link parseGetfattrDump}).
 */
export function parseGetfattr(text: string, root: string): Map<string, Record<string, string>> {
  const prefix = Buffer.from(root.replace(/(.)\/+$/, '$1'), 'utf8').toString('latin1');
  const out = new Map<string, Record<string, string>>();
  for (const [abs, xattrs] of parseGetfattrDump(text)) {
    const rel = abs === prefix ? '.' : abs.startsWith(prefix + '/') ? abs.slice(prefix.length + 1) : undefined;
    if (rel !== undefined) out.set(rel, xattrs);
  }
  return out;
}

async function readXattrs(sys: System, dir: string): Promise<Map<string, Record<string, string>>> {
  const r = await sys.run('getfattr', ['--absolute-names', '-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--', dir], { binary: true, allowFailure: true });
  // A filesystem without xattr support makes getfattr fail with nothing to report: no xattrs.
  if (r.exitCode !== 0 && !/not supported/i.test(r.stderr)) {
    throw new TiuError('TOOL_FAILED', `getfattr failed on ${dir}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`, { hint: 'rerun with --debug' });
  }
  return parseGetfattr((r.stdoutBuffer ?? Buffer.from(r.stdout)).toString('latin1'), dir);
}

/**
 * A {@link ContentSource} reading files from the three directories, refusing anything larger
 * than `maxBytes` (the planner never asks for more than 1 MiB).
 */
export function dirContents(dirs: Record<EtcSide, string>, maxBytes = 16 * 1024 * 1024): ContentSource {
  return async (side, path) => {
    const p = absPath(dirs[side], path);
    try {
      const st = await lstat(p);
      if (!st.isFile() || st.size > maxBytes) return undefined;
      return await readFile(p);
    } catch {
      return undefined;
    }
  };
}
