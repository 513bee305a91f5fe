/**
 * Reading extended attributes (including security.*, trusted.* and the POSIX ACLs stored as
 * system.posix_acl_access / system.posix_acl_default) with getfattr, since Node has no xattr API.
 *
 * Paths go to getfattr through `xargs -0` on stdin, not argv: Node can only pass UTF-8 argv, and
 * names that are not UTF-8 must reach the tool byte for byte. getfattr runs with `-h` (symlinks
 * are not followed: without it a symlink reports its target's xattrs), `-m -` (every namespace;
 * the default shows only user.*) and `-e base64`.
 */
import { TiuError } from '../errors.ts';
import type { System } from '../system.ts';
import { displayPath } from './types.ts';
import { compareBytes } from './text.ts';

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
      const value = eq < 0 ? '' : line.slice(eq + 1);
      if (value !== '' && !/^0s[A-Za-z0-9+/]*={0,2}$/.test(value)) badOutput(`value is not base64: ${JSON.stringify(line.slice(0, 80))}`);
      current.push([name, Buffer.from(value.slice(2), 'base64').toString('base64')]);
    }
  }
  close();
  return result;
}

/**
 * Reads all xattrs of `paths` (byte strings relative to `root`, `.` for the root itself; symlinks
 * not followed) in one batch. Returns path -> xattrs for the paths that have any. A path that
 * cannot be read throws TREE_INVALID.
 */
export async function listXattrs(sys: System, root: string, paths: readonly string[]): Promise<Map<string, Xattrs>> {
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
