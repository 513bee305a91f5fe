/**
 * Listing and extracting squashfs images with the real unsquashfs (thin layer; parsing is in
 * listing.ts). Every image's superblock is validated (bounded 96-byte read) before the tool runs.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fromErrno, TiuError } from '../core/errors.ts';
import type { System } from '../core/system.ts';
import { parseUnsquashfsListing, type SquashfsListEntry } from './listing.ts';
import { readImageInfo } from './image.ts';
import { atLeast, requireSquashfsTools, type SquashfsToolsVersion } from './version.ts';

export interface UnsquashfsListOptions {
  /** Byte offset of the filesystem inside a larger file (unsquashfs `-o`, 4.5+). */
  offset?: number;
}

export interface UnsquashfsExtractOptions extends UnsquashfsListOptions {
  /** Image paths (byte strings, relative to the root) to extract; default everything. Literal, no wildcards. */
  paths?: string[];
  /** Restore extended attributes (default true). */
  xattrs?: boolean;
  processors?: number;
}

function checkOffset(v: SquashfsToolsVersion, offset: number | undefined): string[] {
  if (offset === undefined) return [];
  if (!Number.isSafeInteger(offset) || offset < 0) throw new TiuError('INPUT_INVALID', `offset ${offset} must be a non-negative integer`);
  if (!atLeast(v, '4.5')) throw new TiuError('TOOL_MISSING', `unsquashfs ${v.major}.${v.minor} cannot read at an offset, need ≥ 4.5`);
  return ['-o', String(offset)];
}

function toolError(what: string, image: string, r: { command: string; exitCode: number; stderr: string }): TiuError {
  const text = r.stderr.trim().split('\n').filter(Boolean).slice(-3).join(' | ');
  const code = /No space left on device/.test(r.stderr) ? 'NO_SPACE' : /FATAL ERROR|corrupt|failed to read|uncompress failed|Can't find a SQUASHFS superblock/i.test(r.stderr) ? 'ARCHIVE_FORMAT' : 'TOOL_FAILED';
  return new TiuError(code, `unsquashfs failed ${what} ${image} (exit ${r.exitCode})${text ? `: ${text}` : ''}`, {
    hint: code === 'ARCHIVE_FORMAT' ? 'the image is corrupt; rebuild or download it again' : code === 'NO_SPACE' ? 'free space or choose another destination' : 'rerun with --debug to see the full command and its output',
    details: { command: r.command, exitCode: r.exitCode, stderr: r.stderr },
  });
}

/**
 * Lists every entry of `image` (`unsquashfs -lln`), root first. Paths are byte strings.
 * mtimes are whole minutes with squashfs-tools 4.5.x (`mtimePrecision: 60`) and seconds with
 * 4.6+ (`-full-precision`). Names containing newlines are parsed exactly (see listing.ts).
 * Read-only; throws ARCHIVE_FORMAT/ARCHIVE_TRUNCATED for an invalid image, INPUT_NOT_FOUND if missing.
 */
export async function unsquashfsList(sys: System, image: string, options: UnsquashfsListOptions = {}): Promise<SquashfsListEntry[]> {
  const v = await requireSquashfsTools(sys);
  const img = resolve(image);
  const offsetArgs = checkOffset(v, options.offset);
  await readImageInfo(img, options.offset ?? 0);
  const marker = `tiu-list-${randomBytes(12).toString('hex')}`;
  const args = ['-lln', '-d', marker, ...offsetArgs, ...(atLeast(v, '4.6') ? ['-full-precision'] : []), img];
  // unsquashfs formats times with localtime(); TZ=UTC makes them epoch-convertible.
  const r = await sys.run('unsquashfs', args, { binary: true, allowFailure: true, env: { TZ: 'UTC' } });
  if (r.exitCode !== 0) throw toolError('listing', img, r);
  return parseUnsquashfsListing(r.stdoutBuffer ?? Buffer.from(r.stdout, 'latin1'), marker);
}

/**
 * Extracts `image` (or only `options.paths`) into `dest`, which must not exist or be an empty
 * directory. Ownership, modes, times, device nodes and (by default) xattrs are restored (we run
 * as root). Requested paths are passed through a temp `-ef` file (raw bytes, so non-UTF-8 names
 * work; names with a newline are refused) with `-no-wildcards`; 4.5.1 silently extracts nothing
 * for a path that does not exist, so each one is checked afterwards (INPUT_NOT_FOUND).
 * On failure `dest` is emptied again (and removed if this call created it).
 */
export async function unsquashfsExtract(sys: System, image: string, dest: string, options: UnsquashfsExtractOptions = {}): Promise<void> {
  const v = await requireSquashfsTools(sys);
  const img = resolve(image);
  const out = resolve(dest);
  const offsetArgs = checkOffset(v, options.offset);
  if (options.processors !== undefined && (!Number.isInteger(options.processors) || options.processors < 1)) {
    throw new TiuError('INPUT_INVALID', `processors ${options.processors} must be a positive integer`);
  }
  const paths = (options.paths ?? []).map((p) => {
    const n = p.replace(/^\/+/, '');
    if (n === '' || /[\n\0]/.test(n) || /[^\x00-\xff]/.test(n) || n.split('/').some((c) => c === '' || c === '.' || c === '..')) {
      throw new TiuError('INPUT_INVALID', `cannot extract path ${JSON.stringify(p)}: must be a relative byte string without newline, NUL, '.' or '..'`);
    }
    return n;
  });
  await readImageInfo(img, options.offset ?? 0);

  let created = false;
  try {
    const st = await lstat(out);
    if (!st.isDirectory()) throw new TiuError('INPUT_INVALID', `extraction destination ${out} exists and is not a directory`);
    if ((await readdir(out)).length > 0) throw new TiuError('INPUT_INVALID', `extraction destination ${out} is not empty`, { hint: 'give a new or empty directory' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromErrno(err, out) ?? err;
    await mkdir(out).catch((e: unknown) => {
      throw fromErrno(e, `extraction destination ${out}`) ?? e;
    });
    created = true;
  }

  const tmp = paths.length ? await mkdtemp(join(tmpdir(), 'tiu-extract-')) : undefined;
  try {
    const args = ['-d', out, '-f', '-n', '-q', options.xattrs === false ? '-no-xattrs' : '-xattrs', ...offsetArgs];
    if (atLeast(v, '4.5')) args.push('-st');
    if (options.processors !== undefined) args.push('-p', String(options.processors));
    if (tmp) {
      const list = join(tmp, 'extract');
      await writeFile(list, Buffer.from(paths.map((p) => p + '\n').join(''), 'latin1'), { mode: 0o600 });
      args.push('-no-wildcards', '-ef', list);
    }
    args.push(img);
    const r = await sys.run('unsquashfs', args, { allowFailure: true });
    if (r.exitCode !== 0) throw toolError('extracting', img, r);
    for (const p of paths) {
      try {
        await lstat(Buffer.concat([Buffer.from(out + '/'), Buffer.from(p, 'latin1')]));
      } catch {
        throw new TiuError('INPUT_NOT_FOUND', `path '${Buffer.from(p, 'latin1').toString('utf8')}' not found in squashfs image ${img}`);
      }
    }
  } catch (err) {
    if (created) await rm(out, { recursive: true, force: true });
    else {
      const names = await readdir(out, { encoding: 'buffer' }).catch(() => [] as Buffer[]);
      for (const e of names) await rm(Buffer.concat([Buffer.from(out + '/'), e]), { recursive: true, force: true });
    }
    throw err;
  } finally {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  }
}
