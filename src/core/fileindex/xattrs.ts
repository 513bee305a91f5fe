/**
 * Reading and writing extended attributes (including security.*, trusted.* and the POSIX ACLs
 * stored as system.posix_acl_access / system.posix_acl_default).
 *
 * Node has no xattr API. The N-API binding `@napi-rs/xattr` (prebuilt, l*xattr calls: symlinks are
 * not followed) is used in-process when it loads; it takes paths and names as JS strings, so a
 * path or an attribute name that is not valid UTF-8 goes through getfattr/setfattr instead, as
 * does everything when the binding cannot load (e.g. a bundle shipped without its node_modules).
 *
 * Paths go to getfattr through `xargs -0` on stdin, not argv: Node can only pass UTF-8 argv, and
 * names that are not UTF-8 must reach the tool byte for byte. getfattr runs with `-h` (symlinks
 * are not followed: without it a symlink reports its target's xattrs), `-m -` (every namespace;
 * the default shows only user.*) and `-e base64`.
 */
import { TiuError, fromErrno } from '../errors.ts';
import type { System } from '../system.ts';
import { displayPath } from './types.ts';
import { compareBytes } from './text.ts';
import { readTiuEnv } from '../env.ts';

/** xattr name (byte string) -> value (base64). */
export type Xattrs = Record<string, string>;

/** getfattr escapes `\`, `=` (in names) and control characters as `\ooo`; the rest is raw bytes. */
function unquote(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8) & 0xff));
}

function badOutput(what: string): never {
  throw new TiuError('TOOL_FAILED', `unexpected getfattr output: ${what}`, { hint: 'check that getfattr is the one from the attr package (2.4 or later)' });
}

/**
 * Parses `getfattr -d -e base64` output (as a latin1 byte string) into path -> xattrs, names
 * sorted by bytes. Paths with no xattrs do not appear. Pure.
 */
export function parseGetfattrDump(out: string): Map<string, Xattrs> {
  const result = new Map<string, Xattrs>();
  let current: Array<[string, string]> | undefined;
  let currentPath = '';
  const close = () => {
    if (current && current.length > 0) {
      current.sort((a, b) => compareBytes(a[0], b[0]));
      result.set(currentPath, Object.fromEntries(current));
    }
    current = undefined;
  };
  for (const line of out.split('\n')) {
    if (line === '') {
      close();
    } else if (line.startsWith('# file: ')) {
      close();
      currentPath = unquote(line.slice(8));
      current = [];
    } else {
      if (!current) badOutput(`attribute outside a file block: ${JSON.stringify(line.slice(0, 80))}`);
      const eq = line.indexOf('=');
      const name = unquote(eq < 0 ? line : line.slice(0, eq));
      // An empty value may be printed as "" (the only quoted form accepted).
      const value = eq < 0 || line.slice(eq + 1) === '""' ? '' : line.slice(eq + 1);
      if (value !== '' && !/^0s[A-Za-z0-9+/]*={0,2}$/.test(value)) badOutput(`value is not base64: ${JSON.stringify(line.slice(0, 80))}`);
      current.push([name, Buffer.from(value.slice(2), 'base64').toString('base64')]);
    }
  }
  close();
  return result;
}

/** The subset of `@napi-rs/xattr` tiu uses. */
export interface XattrBinding {
  listAttributes(path: string): Promise<string[]>;
  getAttribute(path: string, name: string): Promise<Buffer | null>;
  listAttributesSync(path: string): string[];
  getAttributeSync(path: string, name: string): Buffer | null;
  setAttribute(path: string, name: string, value: Buffer): Promise<void>;
  removeAttribute(path: string, name: string): Promise<void>;
}

let bindingPromise: Promise<XattrBinding | undefined> | undefined;

/**
 * The in-process binding, or undefined when it cannot load (or TIU_XATTR=tools asks for the
 * getfattr/setfattr path). Loaded once, on first use.
 */
export function xattrBinding(): Promise<XattrBinding | undefined> {
  bindingPromise ??= readTiuEnv().xattrTools
    ? Promise.resolve(undefined)
    : import('@napi-rs/xattr').then((m) => (m.default ?? m) as XattrBinding, () => undefined);
  return bindingPromise;
}

/** A byte string (one char per byte) as a UTF-8 JS string, or undefined when it is not valid UTF-8. */
export function utf8Form(bytes: string): string | undefined {
  const buf = Buffer.from(bytes, 'latin1');
  const s = buf.toString('utf8');
  return Buffer.from(s, 'utf8').equals(buf) ? s : undefined;
}

/** The OS error of a binding failure ("... (os error 2)") as a Node-style errno error. */
export function bindingError(err: unknown): NodeJS.ErrnoException {
  const msg = (err as Error)?.message ?? String(err);
  const m = /\(os error (\d+)\)/.exec(msg);
  const e = new Error(msg) as NodeJS.ErrnoException;
  if (m) {
    const n = Number(m[1]);
    e.errno = -n;
    e.code = ({ 1: 'EPERM', 2: 'ENOENT', 5: 'EIO', 13: 'EACCES', 20: 'ENOTDIR', 28: 'ENOSPC', 30: 'EROFS', 61: 'ENODATA', 95: 'EOPNOTSUPP' } as Record<number, string>)[n] ?? `E${n}`;
  }
  return e;
}

/**
 * Reads all xattrs of `paths` (byte strings relative to `root`, `.` for the root itself; symlinks
 * not followed). Returns path -> xattrs (names sorted by bytes) for the paths that have any. A
 * path that cannot be read throws TREE_INVALID.
 */
export async function listXattrs(sys: System, root: string, paths: readonly string[]): Promise<Map<string, Xattrs>> {
  if (paths.length === 0) return new Map();
  const b = await xattrBinding();
  if (!b) return listXattrsWithTools(sys, root, paths);
  const out = new Map<string, Xattrs>();
  const viaTools: string[] = [];
  const base = Buffer.from(root.endsWith('/') ? root : `${root}/`).toString('utf8');
  // Synchronous calls: reading a cached inode's attributes is a short syscall, and a promise and
  // a thread-pool round trip per path cost more (the 552 entries of a Debian /etc: 4-8 instead
  // of 9-21 ms; /etc is scanned three times per update).
  for (const p of paths) {
    const u = p === '.' ? '' : utf8Form(p);
    if (u === undefined) {
      viaTools.push(p);
      continue;
    }
    const abs = p === '.' ? root : base + u;
    try {
      const names = b.listAttributesSync(abs);
      if (names.length === 0) continue;
      if (names.some((n) => n.includes('\ufffd'))) {
        viaTools.push(p); // a name that is not UTF-8: the binding cannot name it
        continue;
      }
      const pairs: Array<[string, string]> = [];
      for (const n of names) {
        const v = b.getAttributeSync(abs, n);
        if (v !== null) pairs.push([Buffer.from(n, 'utf8').toString('latin1'), v.toString('base64')]);
      }
      if (pairs.length === 0) continue;
      pairs.sort((x, y) => compareBytes(x[0], y[0]));
      out.set(p, Object.fromEntries(pairs));
    } catch (err) {
      const e = bindingError(err);
      throw new TiuError('TREE_INVALID', `cannot read extended attributes of ${JSON.stringify(displayPath(p))} under ${root}: ${e.code ?? e.message}`, {
        hint: 'check permissions and that nothing modifies the tree while it is scanned',
        cause: err,
      });
    }
  }
  if (viaTools.length > 0) for (const [p, x] of await listXattrsWithTools(sys, root, viaTools)) out.set(p, x);
  return out;
}

/**
 * Makes the xattrs of `abs` (a path below `root`, as bytes) exactly `want` given that it has
 * `have` now, in-process. Returns false (nothing done) when the binding is missing or a path or
 * name is not UTF-8: the caller then uses setfattr.
 */
export async function setXattrsInProcess(abs: Buffer, have: Xattrs, want: Xattrs): Promise<boolean> {
  const b = await xattrBinding();
  if (!b) return false;
  const p = abs.toString('utf8');
  if (!Buffer.from(p, 'utf8').equals(abs)) return false;
  const names = [...Object.keys(have), ...Object.keys(want)];
  const utf = new Map<string, string>();
  for (const n of names) {
    const u = utf8Form(n);
    if (u === undefined) return false;
    utf.set(n, u);
  }
  try {
    for (const n of Object.keys(have)) if (!(n in want)) await b.removeAttribute(p, utf.get(n)!);
    for (const [n, v] of Object.entries(want)) if (have[n] !== v) await b.setAttribute(p, utf.get(n)!, Buffer.from(v, 'base64'));
  } catch (err) {
    const e = bindingError(err);
    throw fromErrno(e, `setting extended attributes of ${p}`) ?? new TiuError('APPLY_FAILED', `setting extended attributes of ${p} failed: ${e.message}`, { cause: err });
  }
  return true;
}

/** {@link listXattrs} through `xargs getfattr` (one child per batch). */
export async function listXattrsWithTools(sys: System, root: string, paths: readonly string[]): Promise<Map<string, Xattrs>> {
  if (paths.length === 0) return new Map();
  const input = Buffer.from(paths.map((p) => `${p}\0`).join(''), 'latin1');
  const r = await sys.run('xargs', ['-0', '-r', 'getfattr', '-h', '--absolute-names', '-d', '-m', '-', '-e', 'base64', '--'], {
    cwd: root, input, binary: true, allowFailure: true,
  });
  if (r.exitCode === 127) throw new TiuError('TOOL_MISSING', "required tool 'getfattr' is not installed", { hint: 'install it (Debian/Ubuntu: apt-get install attr; openSUSE: zypper install attr)' });
  if (r.exitCode !== 0) {
    const first = r.stderr.split('\n').find((l) => l.trim() !== '') ?? `exit ${r.exitCode}`;
    throw new TiuError(r.exitCode === 123 ? 'TREE_INVALID' : 'TOOL_FAILED', `cannot read extended attributes under ${root}: ${first}`, {
      hint: 'check permissions and that nothing modifies the tree while it is scanned',
      details: { command: r.command, stderr: r.stderr },
    });
  }
  const parsed = parseGetfattrDump((r.stdoutBuffer ?? Buffer.alloc(0)).toString('latin1'));
  const wanted = new Set(paths);
  for (const p of parsed.keys()) {
    if (!wanted.has(p)) badOutput(`xattrs for a path that was not asked for: ${JSON.stringify(displayPath(p))}`);
  }
  return parsed;
}
