/**
 * Paths resolved beneath a root without ever leaving it: `openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` semantics, built from what Node.js has.
 *
 * Node has no openat(2) and no maintained npm binding of openat2 exists, so each directory is
 * opened as an `O_PATH | O_DIRECTORY | O_NOFOLLOW` descriptor, one component at a time, through
 * `/proc/self/fd/<parent>/<component>`: the kernel resolves that magic link to the very directory
 * the parent descriptor holds (not to a path that could have been swapped), and the single
 * component after it is looked up inside it with O_NOFOLLOW — which is openat's semantics.
 * A symlink, a `..`, or a mount point (different mnt_id) anywhere on the way is refused with
 * PATH_UNSAFE. Operations then use `<dir fd path>/<last name>` with calls that do not follow a
 * final symlink (lstat, unlink, rename, mkdir, symlink, open with O_NOFOLLOW), so nothing is
 * ever string-joined and then opened.
 *
 * Directory descriptors are cached per root (the apply step touches every directory of an
 * image many times); a directory in use is pinned, and removing a path forgets it and below.
 * They are opened synchronously: an O_PATH open of a local directory takes microseconds, while a
 * promise and a trip through libuv's thread pool cost tens (an update opens thousands).
 */
import { closeSync, constants as C, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { TiuError } from './errors.ts';
import { readBounded } from './boundedread.ts';
import { displayPath, pathBytes } from './fileindex/types.ts';

/** Linux O_PATH (Node does not export it). */
const O_PATH = 0o10000000;
const DIR_FLAGS = O_PATH | C.O_DIRECTORY | C.O_NOFOLLOW;
/**
 * Directory descriptors kept open per root before unpinned ones are closed: an eighth of the
 * open-files limit (Node raises the soft limit to the hard one at start), 64 to 4096. A Debian
 * tree has ~1,000 directories; at 512 the apply step reopened (and re-checked) ~1,600 of them.
 */
let cacheLimitValue: number | undefined;
function cacheLimit(): number {
  if (cacheLimitValue === undefined) {
    let soft = 4096;
    try {
      const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'latin1'));
      if (m) soft = m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
    } catch {
      // no /proc/self/limits: assume the common 4096
    }
    cacheLimitValue = Math.max(64, Math.min(4096, Math.floor(soft / 8)));
  }
  return cacheLimitValue;
}

/**
 * Splits a root-relative path into its components. Pure. Empty and `.` components are dropped;
 * an absolute path or a `..` component is refused (PATH_UNSAFE): tiu's paths are relative and
 * never climb.
 */
export function pathComponents(rel: string | Buffer, what = 'path'): Buffer[] {
  const b = typeof rel === 'string' ? pathBytes(rel) : rel;
  if (b.includes(0)) throw new TiuError('PATH_UNSAFE', `${what} contains a NUL byte`);
  if (b[0] === 0x2f) {
    throw new TiuError('PATH_UNSAFE', `${what} ${displayPath(b.toString('latin1'))} is absolute where a relative path is required`);
  }
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= b.length; i++) {
    if (i < b.length && b[i] !== 0x2f) continue;
    const c = b.subarray(start, i);
    start = i + 1;
    if (c.length === 0 || (c.length === 1 && c[0] === 0x2e)) continue;
    if (c.length === 2 && c[0] === 0x2e && c[1] === 0x2e) throw new TiuError('PATH_UNSAFE', `${what} ${show(b)} has a '..' component`);
    out.push(c);
  }
  return out;
}

function show(b: Buffer): string {
  return '/' + displayPath(b.toString('latin1')).replace(/^\/+/, '');
}

function key(parts: readonly Buffer[]): string {
  return Buffer.concat(parts.flatMap((p, i) => (i ? [SLASH, p] : [p]))).toString('latin1');
}
const SLASH = Buffer.from('/');
const DOT = Buffer.from('.');

/** fdinfo of an O_PATH descriptor (pos, flags, mnt_id, ino) is well under this. */
const FDINFO = Buffer.allocUnsafe(1024);

/**
 * The mount id of an open descriptor (from /proc/self/fdinfo): crossing one is a mount point.
 * Read into one reused buffer: thousands of directories are opened per update, and an 8 KiB
 * buffer each (readFileSync) was ~10 MiB of garbage.
 */
function mountId(fd: number): string {
  const info = openSync(`/proc/self/fdinfo/${fd}`, C.O_RDONLY);
  let n = 0;
  try {
    for (let r = -1; r !== 0 && n < FDINFO.length; n += r) r = readSync(info, FDINFO, n, FDINFO.length - n, null);
  } finally {
    closeSync(info);
  }
  const text = n < FDINFO.length ? FDINFO.toString('latin1', 0, n) : readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1');
  return /mnt_id:\s*(\d+)/.exec(text)?.[1] ?? '?';
}

interface CachedDir {
  fd: number;
  pins: number;
  /** Forgotten while pinned: closed by the last release. */
  dropped?: boolean;
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed: nothing to release
  }
}

function releaser(e: CachedDir): () => void {
  return () => {
    if (--e.pins === 0 && e.dropped) closeQuietly(e.fd);
  };
}

export interface SafeRootOptions {
  /** How the root is named in messages ("the new snapshot", "the image"). */
  what: string;
  /** Also refuse crossing into another mount below the root (default true). */
  noXdev?: boolean;
}

/**
 * A directory tree that tiu works in, with every path resolved beneath it (see the module
 * comment). The root path itself is trusted (tiu made or chose it). Dispose to close the cached
 * descriptors.
 */
export class SafeRoot implements AsyncDisposable {
  readonly root: string;
  readonly what: string;
  private readonly noXdev: boolean;
  private readonly rootFd: number;
  private readonly mnt: string;
  private readonly cache = new Map<string, CachedDir>();

  private constructor(root: string, fd: number, o: SafeRootOptions) {
    this.root = root;
    this.rootFd = fd;
    this.what = o.what;
    this.noXdev = o.noXdev ?? true;
    this.mnt = mountId(fd);
  }

  /** Opens the root (which must be a directory). */
  static async open(root: string, o: SafeRootOptions): Promise<SafeRoot> {
    let fd: number;
    try {
      fd = openSync(root, O_PATH | C.O_DIRECTORY);
    } catch (e) {
      throw new TiuError('PATH_UNSAFE', `${o.what} ${root} is not a directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
    }
    return new SafeRoot(root, fd, o);
  }

  /**
   * `/proc/self/fd/<fd>/<name>`, or `/proc/self/fd/<fd>/.` for the directory itself (the magic
   * link alone is a symlink to lstat, cp -a and lutimes; `/.` is the directory): a path only
   * this process can use.
   */
  static fdPath(fd: number, name?: Buffer): Buffer {
    return Buffer.concat([Buffer.from(`/proc/self/fd/${fd}/`), name ?? DOT]);
  }

  /** `/proc/<pid>/fd/<fd>/<name>`: the same, usable by a child process run as root. */
  static procPath(fd: number, name?: Buffer): Buffer {
    return Buffer.concat([Buffer.from(`/proc/${process.pid}/fd/${fd}/`), name ?? DOT]);
  }

  private unsafe(parts: readonly Buffer[], why: string): TiuError {
    return new TiuError('PATH_UNSAFE', `${show(Buffer.from(key(parts), 'latin1'))} in ${this.what} ${why}; tiu does not follow links or mounts out of ${this.what}`, {
      hint: 'the image or the device state is hostile or damaged; nothing outside was touched',
    });
  }

  /**
   * Opens the directory `parts` (every component a real directory on the root's mount), creating
   * missing ones with `create` mode when given; pinned until `release`.
   */
  private acquire(parts: readonly Buffer[], create?: number): { fd: number; release: () => void } {
    if (parts.length === 0) return { fd: this.rootFd, release: () => {} };
    const k = key(parts);
    const hit = this.cache.get(k);
    if (hit) {
      hit.pins++;
      this.cache.delete(k);
      this.cache.set(k, hit);
      return { fd: hit.fd, release: releaser(hit) };
    }
    const parent = this.acquire(parts.slice(0, -1), create);
    let fd: number;
    try {
      const name = parts[parts.length - 1]!;
      const p = SafeRoot.fdPath(parent.fd, name);
      try {
        fd = openSync(p, DIR_FLAGS);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' && create !== undefined) {
          try {
            mkdirSync(p, { mode: create });
          } catch (me) {
            if ((me as NodeJS.ErrnoException).code !== 'EEXIST') throw me;
          }
          fd = openSync(p, DIR_FLAGS);
        } else if (code === 'ENOTDIR' || code === 'ELOOP') {
          const st = lstatSync(p, { throwIfNoEntry: false });
          if (st?.isSymbolicLink()) {
            let to = '?';
            try {
              to = readlinkSync(p, 'utf8');
            } catch {
              // gone meanwhile: the message says '?'
            }
            throw this.unsafe(parts, `is a symlink (to ${to})`);
          }
          throw this.unsafe(parts, 'is not a directory');
        } else throw e;
      }
    } finally {
      parent.release();
    }
    if (this.noXdev && mountId(fd) !== this.mnt) {
      closeQuietly(fd);
      throw this.unsafe(parts, 'is a mount point');
    }
    const entry: CachedDir = { fd, pins: 1 };
    this.cache.set(k, entry);
    this.evict();
    return { fd, release: releaser(entry) };
  }

  private evict(): void {
    const limit = cacheLimit();
    if (this.cache.size <= limit) return;
    for (const [k, v] of this.cache) {
      if (this.cache.size <= limit / 2) break;
      if (v.pins > 0) continue;
      this.cache.delete(k);
      closeQuietly(v.fd);
    }
  }

  /** `rel` as components (given as such, or split and checked by {@link pathComponents}). */
  private parts(rel: string | Buffer | readonly Buffer[]): readonly Buffer[] {
    return Array.isArray(rel) ? (rel as readonly Buffer[]) : pathComponents(rel as string | Buffer, `path in ${this.what}`);
  }

  /**
   * Runs `fn` with a path naming `rel` safely: `/proc/self/fd/<parent>/<name>` (the root itself
   * for `.`). Every directory above `rel` is checked; `rel` itself is NOT followed only if `fn`
   * uses non-following calls (lstat, unlink, rename, mkdir, symlink, lchown, lutimes, O_NOFOLLOW).
   * `o.create` makes missing parent directories with that mode. `o.child` gives a path a child
   * process can use (via /proc/<pid>).
   */
  async at<T>(rel: string | Buffer | readonly Buffer[], fn: (path: Buffer) => Promise<T>, o: { create?: number; child?: boolean } = {}): Promise<T> {
    const parts = this.parts(rel);
    const mk = o.child ? SafeRoot.procPath : SafeRoot.fdPath;
    if (parts.length === 0) return fn(mk(this.rootFd));
    const dir = this.acquire(parts.slice(0, -1), o.create);
    try {
      return await fn(mk(dir.fd, parts[parts.length - 1]));
    } finally {
      dir.release();
    }
  }

  /**
   * {@link at} for synchronous work (no promise per call: removing a tree of thousands of
   * entries one thread-pool round trip at a time cost ~0.15 ms each, the calls themselves ~0.02).
   */
  atSync<T>(rel: string | Buffer | readonly Buffer[], fn: (path: Buffer) => T): T {
    const parts = this.parts(rel);
    if (parts.length === 0) return fn(SafeRoot.fdPath(this.rootFd));
    const dir = this.acquire(parts.slice(0, -1));
    try {
      return fn(SafeRoot.fdPath(dir.fd, parts[parts.length - 1]));
    } finally {
      dir.release();
    }
  }

  /** {@link dir} for synchronous work. */
  dirSync<T>(rel: string | Buffer | readonly Buffer[], fn: (path: Buffer) => T): T {
    const parts = this.parts(rel);
    const d = this.acquire(parts);
    try {
      return fn(SafeRoot.fdPath(d.fd));
    } finally {
      d.release();
    }
  }

  /**
   * Runs `fn` with a path of the directory `rel` itself, checked to be a real directory (made
   * with `create` mode, parents too, when missing).
   */
  async dir<T>(rel: string | Buffer, fn: (path: Buffer) => Promise<T>, o: { create?: number; child?: boolean } = {}): Promise<T> {
    const parts = pathComponents(rel, `path in ${this.what}`);
    const d = this.acquire(parts, o.create);
    try {
      return await fn((o.child ? SafeRoot.procPath : SafeRoot.fdPath)(d.fd));
    } finally {
      d.release();
    }
  }

  /** Throws PATH_UNSAFE unless each of `rels` is a real directory (or missing) beneath the root. */
  async assertDirs(rels: readonly string[]): Promise<void> {
    for (const r of rels) {
      await this.dir(r, async () => {}).catch((e) => {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw e;
      });
    }
  }

  /**
   * Writes `data` to `rel` atomically (a fresh `.tmp` beside it, created O_EXCL|O_NOFOLLOW, then
   * renamed over), making missing parents with `dirMode`.
   */
  async writeAtomic(rel: string, data: Buffer | string, o: { mode?: number; dirMode?: number } = {}): Promise<void> {
    const parts = pathComponents(rel, `path in ${this.what}`);
    const tmpParts = [...parts.slice(0, -1), Buffer.concat([parts[parts.length - 1]!, Buffer.from('.tmp')])];
    await this.at(tmpParts, async (tmp) => {
      await unlink(tmp).catch((e) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      });
      const fh = await open(tmp, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, o.mode ?? 0o644);
      try {
        await fh.writeFile(data);
        await fh.chmod(o.mode ?? 0o644);
      } finally {
        await fh.close();
      }
      await this.at(parts, (dst) => rename(tmp, dst));
    }, { create: o.dirMode });
  }

  /** Reads `rel`: a regular file (no symlink anywhere) of at most `max` bytes (see readBounded). */
  async readBounded(rel: string, max: number): Promise<Buffer> {
    return this.at(rel, (p) => readBounded(p, { max, what: `/${rel} in ${this.what}` }));
  }

  /** Forgets cached descriptors of `rel` and everything below it (call after removing or renaming it). */
  forget(rel: string | Buffer | readonly Buffer[]): void {
    const parts = Array.isArray(rel) ? (rel as readonly Buffer[]) : pathComponents(rel as string | Buffer);
    const k = key(parts);
    for (const [ck, v] of this.cache) {
      if (ck === k || ck.startsWith(k + '/') || k === '') {
        this.cache.delete(ck);
        if (v.pins === 0) closeQuietly(v.fd);
        else v.dropped = true;
      }
    }
  }

  async close(): Promise<void> {
    const all = [...this.cache.values()];
    this.cache.clear();
    for (const v of all) closeQuietly(v.fd);
    closeQuietly(this.rootFd);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
