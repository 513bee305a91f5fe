import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { chmod, lchown, mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { comparePaths, pathBytes } from '../src/core/fileindex/types.ts';
import { planEtcMerge } from '../src/etc-merge/plan.ts';
import { applyEtcPlan, etcDiff, mergeEtc, verifyEtcResult } from '../src/etc-merge/apply.ts';
import { scanEtc, absPath, dirContents, parseGetfattr } from '../src/etc-merge/scan.ts';
import { contentEqual, isBelow, metaDiff, parentOf, sameEntry } from '../src/etc-merge/compare.ts';
import { formatPlan, planReport, planResult } from '../src/etc-merge/report.ts';
import { isText, mergeText } from '../src/etc-merge/textmerge.ts';
import type { EtcAction, EtcEntry, EtcPlan, EtcSide } from '../src/etc-merge/types.ts';
import { TiuError } from '../src/core/errors.ts';
import { testSystem, tempDir } from './helpers/env.ts';
import { makeLoopBtrfs, type LoopBtrfs } from './helpers/btrfs.ts';

const sys = testSystem();

// ---------- trees as specs (written to disk, or turned into entries directly) ----------

type Node =
  | { type: 'file'; content: string | Buffer; mode?: number; uid?: number; gid?: number; xattrs?: Record<string, string> }
  | { type: 'symlink'; target: string; uid?: number; xattrs?: Record<string, string> }
  | { type: 'dir'; mode?: number; uid?: number; xattrs?: Record<string, string> }
  | { type: 'fifo'; mode?: number };
type Spec = Map<string, Node>;

const sha = (b: string | Buffer) => createHash('sha256').update(typeof b === 'string' ? Buffer.from(b, 'latin1') : b).digest('hex');
const bytes = (c: string | Buffer) => (typeof c === 'string' ? Buffer.from(c, 'latin1') : c);

/** Contents by sha256, for the pure planner (every spec'd file registers its bytes). */
const registry = new Map<string, Buffer>();

function toEntry(path: string, n: Node): EtcEntry {
  const base = { path, mode: 0o644, uid: 0, gid: 0, mtime: 0 };
  switch (n.type) {
    case 'file': {
      const b = bytes(n.content);
      registry.set(sha(b), b);
      return { ...base, type: 'file', mode: n.mode ?? 0o644, uid: n.uid ?? 0, gid: n.gid ?? 0, size: b.length, sha256: sha(b), ...(n.xattrs ? { xattrs: n.xattrs } : {}) };
    }
    case 'symlink':
      return { ...base, type: 'symlink', mode: 0o777, uid: n.uid ?? 0, gid: n.uid ?? 0, target: n.target, ...(n.xattrs ? { xattrs: n.xattrs } : {}) };
    case 'dir':
      return { ...base, type: 'dir', mode: n.mode ?? 0o755, uid: n.uid ?? 0, gid: n.uid ?? 0, ...(n.xattrs ? { xattrs: n.xattrs } : {}) };
    case 'fifo':
      return { ...base, type: 'fifo', mode: n.mode ?? 0o644 };
  }
}

function toTree(spec: Spec): Map<string, EtcEntry> {
  return new Map([...spec].map(([p, n]) => [p, toEntry(p, n)]));
}

const memContents = (side: EtcSide, path: string, trees: Record<EtcSide, Map<string, EtcEntry>>) => {
  const e = trees[side].get(path);
  return e?.sha256 ? registry.get(e.sha256) : undefined;
};

async function plan(b: Spec, l: Spec, n: Spec): Promise<{ plan: EtcPlan; trees: Record<EtcSide, Map<string, EtcEntry>> }> {
  const trees = { base: toTree(b), local: toTree(l), new: toTree(n) };
  return { plan: await planEtcMerge(trees.base, trees.local, trees.new, (s, p) => memContents(s, p, trees)), trees };
}

/** Escapes a byte path for setfattr --restore (the getfattr quoting). */
function quote(abs: Buffer): string {
  let s = '';
  for (const c of abs) s += c <= 0x20 || c === 0x5c || c >= 0x7f ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
  return s;
}

async function writeTree(root: string, spec: Spec): Promise<void> {
  await mkdir(root, { recursive: true });
  let dump = '';
  for (const p of [...spec.keys()].sort(comparePaths)) {
    const n = spec.get(p)!;
    const abs = absPath(root, p);
    if (p !== '.') {
      if (n.type === 'file') await writeFile(abs, bytes(n.content));
      else if (n.type === 'symlink') await symlink(pathBytes(n.target), abs);
      else if (n.type === 'dir') await mkdir(abs);
      else {
        // mknod takes a string path: make the fifo under an ASCII name, then rename it (bytes).
        await sys.run('mknod', [`${root}/.fifo-tmp`, 'p']);
        await rename(`${root}/.fifo-tmp`, abs);
      }
    }
    const e = toEntry(p, n);
    await lchown(abs, e.uid, e.gid);
    if (e.type !== 'symlink') await chmod(abs, e.mode);
    if (e.xattrs) dump += `# file: ${quote(abs)}\n${Object.entries(e.xattrs).map(([k, v]) => `${k}=0s${v}\n`).join('')}\n`;
  }
  if (dump) await sys.run('setfattr', ['-h', '--restore=-'], { input: dump });
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

// ---------- the table: every (base, local, new) of absent / same / changed ----------

type V = 0 | 1 | 2 | null;
type Expect = 'none' | 'vendor' | 'local' | 'deleted' | 'conflict' | 'note';
/** [base, local, new, outcome, which side's version the result has (null = absent)] */
const ROWS: [V, V, V, Expect, V][] = [
  [null, null, 2, 'vendor', 2], // vendor added
  [null, 1, null, 'local', 1], // device added
  [null, 1, 1, 'vendor', 1], // both added the same
  [null, 1, 2, 'conflict', 1], // both added differently
  [0, 0, 0, 'none', 0],
  [0, 0, null, 'deleted', null], // vendor deleted, device did not change
  [0, 0, 2, 'vendor', 2], // vendor changed, device did not
  [0, null, 0, 'deleted', null], // device deleted, vendor did not change
  [0, null, null, 'deleted', null], // both deleted
  [0, null, 2, 'conflict', null], // device deleted, vendor changed: stays deleted + .tiunew
  [0, 1, 0, 'local', 1], // device changed, vendor did not
  [0, 1, null, 'conflict', 1], // device changed, vendor deleted: kept, nothing to write beside
  [0, 1, 1, 'vendor', 1], // same change on both sides
  [0, 1, 2, 'conflict', 1], // both changed differently
];

type Kind = { name: string; meta?: boolean; make: (v: 0 | 1 | 2) => [string, Node][] };
const KINDS: Kind[] = [
  { name: 'binary', make: (v) => [['', { type: 'file', content: Buffer.from(`bin\0${v}\0`) }]] },
  { name: 'symlink', make: (v) => [['', { type: 'symlink', target: `target-${v}\xff` }]] },
  {
    name: 'file-link-dir',
    make: (v) => (v === 0 ? [['', { type: 'file', content: 'f\n' }]] : v === 1 ? [['', { type: 'symlink', target: 'elsewhere' }]] : [['', { type: 'dir' }], ['/in side', { type: 'file', content: 'x\n' }]]),
  },
  {
    name: 'dir-file-link',
    make: (v) => (v === 0 ? [['', { type: 'dir', mode: 0o750 }], ['/-child', { type: 'file', content: 'c\n' }]] : v === 1 ? [['', { type: 'file', content: 'now a file\n' }]] : [['', { type: 'symlink', target: '/usr/share/x' }]]),
  },
  { name: 'file-fifo-link', make: (v) => (v === 0 ? [['', { type: 'file', content: 'plain\n' }]] : v === 1 ? [['', { type: 'fifo', mode: 0o600 }]] : [['', { type: 'symlink', target: 't' }]]) },
  { name: 'mode', meta: true, make: (v) => [['', { type: 'file', content: 'same\n', mode: [0o644, 0o600, 0o4750][v] }]] },
  { name: 'owner', meta: true, make: (v) => [['', { type: 'file', content: 'same\n', uid: [0, 1000, 2000][v], gid: [0, 100, 200][v] }]] },
  { name: 'xattr', meta: true, make: (v) => [['', { type: 'file', content: 'same\n', xattrs: { 'user.k': b64(`v${v}`), ...(v === 1 ? { 'user.local': b64('l') } : {}) } }]] },
  { name: 'dirmode', meta: true, make: (v) => [['', { type: 'dir', mode: [0o755, 0o700, 0o750][v] }], ['/kid', { type: 'file', content: 'k\n' }]] },
];
/** Hostile name parts: spaces, newlines, leading dashes, non-UTF-8 bytes, backslashes. */
const HOSTILE = ['', ' lead', '-dash', 'new\nline', '\xff\xfe', 'sp ace', 'back\\slash'];

interface Case {
  path: string;
  kind: Kind;
  row: (typeof ROWS)[number];
}

const CASES: Case[] = [];
KINDS.forEach((kind, k) =>
  ROWS.forEach((row, r) => {
    const h = HOSTILE[(k + r) % HOSTILE.length]!;
    const dir = r % 3 === 0 ? 'sub \xff dir/' : '';
    CASES.push({ path: `${dir}${h}${kind.name}.${r}`, kind, row });
  }),
);

function sideSpec(): Spec {
  return new Map([['.', { type: 'dir' }], ['sub \xff dir', { type: 'dir' }]]);
}
function buildSpecs(): Record<EtcSide, Spec> {
  const specs = { base: sideSpec(), local: sideSpec(), new: sideSpec() };
  for (const c of CASES) {
    const [b, l, n] = c.row;
    for (const [side, v] of [['base', b], ['local', l], ['new', n]] as const) {
      if (v === null) continue;
      for (const [suffix, node] of c.kind.make(v)) specs[side].set(c.path + suffix, node);
    }
  }
  return specs;
}

function actionAt(p: EtcPlan, path: string): EtcAction | undefined {
  return p.actions.find((a) => a.path === path);
}

function outcome(a: EtcAction | undefined): Expect {
  if (!a) return 'none';
  if (a.op === 'conflict') return 'conflict';
  if (a.notes?.length) return 'note';
  const r = planReport({ actions: [a], unchanged: 0 });
  if (r.takenFromVendor.length) return 'vendor';
  if (r.keptLocal.length) return 'local';
  if (r.deleted.length) return 'deleted';
  return 'none';
}

/** Entries of `tree` at `p` and below, keyed relative to p. */
function subtreeOf(tree: ReadonlyMap<string, EtcEntry>, p: string): Map<string, EtcEntry> {
  const out = new Map<string, EtcEntry>();
  for (const [q, e] of tree) if (q === p || isBelow(q, p)) out.set(q.slice(p.length), e);
  return out;
}
function sameSubtree(a: Map<string, EtcEntry>, b: Map<string, EtcEntry>): boolean {
  return [...new Set([...a.keys(), ...b.keys()])].every((k) => sameEntry(a.get(k), b.get(k)));
}

describe('etc merge: the (base, local, new) table for every kind of entry, planned and executed', () => {
  let fs: LoopBtrfs;
  const trees = {} as Record<EtcSide | 'result', Map<string, EtcEntry>>;
  let thePlan: EtcPlan;
  let ms = 0;

  beforeAll(async () => {
    fs = await makeLoopBtrfs({ sizeMiB: 256 });
    const specs = buildSpecs();
    const dirs = { base: `${fs.mount}/base`, local: `${fs.mount}/local`, new: `${fs.mount}/new` };
    for (const side of ['base', 'local', 'new'] as const) {
      await writeTree(dirs[side], specs[side]);
      trees[side] = await scanEtc(dirs[side], { sys });
    }
    const result = `${fs.mount}/result`;
    await sys.run('cp', ['-a', '--reflink=always', `${dirs.new}/.`, `${result}/`]);
    const t0 = performance.now();
    thePlan = await planEtcMerge(trees.base, trees.local, trees.new, dirContents(dirs));
    await applyEtcPlan(sys, thePlan, { local: dirs.local, next: dirs.new, result });
    ms = performance.now() - t0;
    trees.result = await scanEtc(result, { sys });
  });
  afterAll(async () => {
    await fs?.[Symbol.asyncDispose]();
  });

  it('scans what was written (hostile names, xattrs, fifo, owners)', () => {
    expect(trees.local.size).toBeGreaterThan(CASES.length / 2);
    const x = [...trees.local.values()].find((e) => e.path.endsWith('xattr.1'));
    expect(x?.xattrs).toEqual({ 'user.k': b64('v1'), 'user.local': b64('l') });
    expect([...trees.local.values()].some((e) => e.type === 'fifo')).toBe(true);
    expect([...trees.local.keys()].some((p) => p.includes('new\nline'))).toBe(true);
    expect([...trees.local.keys()].some((p) => p.includes('\xff\xfe'))).toBe(true);
  });

  it.each(CASES.map((c) => [`${c.kind.name} row ${ROWS.indexOf(c.row)} ${JSON.stringify(c.row.slice(0, 3))}`, c] as const))('%s', (_, c) => {
    const [, l, n, exp0, resultSide0] = c.row;
    // Metadata-only changes on both sides: the device's attribute wins, with a note (no .tiunew).
    const both = c.row[1] === 1 && c.row[2] === 2;
    const exp = c.kind.meta && both ? 'note' : exp0;
    const resultSide = c.kind.meta && both ? 1 : resultSide0;
    const a = actionAt(thePlan, c.path);
    expect(outcome(a)).toBe(exp);

    // On disk: the result has the expected side's version (whole subtree), or nothing.
    const want = resultSide === null ? new Map() : subtreeOf(trees[(['base', 'local', 'new'] as const)[resultSide]], c.path);
    expect(sameSubtree(subtreeOf(trees.result, c.path), want)).toBe(true);

    if (exp === 'conflict') {
      expect(a?.op).toBe('conflict');
      const rec = planReport(thePlan).conflicts.find((x) => x.path === Buffer.from(c.path, 'latin1').toString('utf8'));
      expect(rec).toBeDefined();
      if (n !== null) {
        // The vendor's version (with everything below it) is beside it as .tiunew.
        const tiunew = a!.op === 'conflict' ? a!.tiunew!.path : '';
        expect(tiunew).toBe(`${c.path}.tiunew`);
        expect(rec!.tiunew).toBeDefined();
        expect(sameSubtree(subtreeOf(trees.result, tiunew), subtreeOf(trees.new, c.path))).toBe(true);
      } else {
        expect(trees.result.has(`${c.path}.tiunew`)).toBe(false);
      }
      void l;
    } else {
      expect(trees.result.has(`${c.path}.tiunew`)).toBe(false);
    }
  });

  it('the executed result equals the plan outcome everywhere', () => {
    expect(verifyEtcResult(planResult(thePlan, trees.new), trees.result)).toEqual([]);
    // No temp directory left behind.
    expect([...trees.result.keys()].filter((p) => p.startsWith('.tiu-'))).toEqual([]);
    expect(ms).toBeLessThan(20_000);
  });
});

// ---------- directories ----------

const D = (extra: Partial<Node & { type: 'dir' }> = {}): Node => ({ type: 'dir', ...extra });
const F = (content: string, extra: Partial<Node & { type: 'file' }> = {}): Node => ({ type: 'file', content, ...extra });
const S = (target: string): Node => ({ type: 'symlink', target });
const spec = (entries: Record<string, Node>): Spec => new Map([['.', D()], ...Object.entries(entries)]);

describe('etc merge: directories', () => {
  const b = { 'd': D(), 'd/a': F('a\n'), 'd/b': F('b\n') };

  it('merge entry by entry when both keep the directory', async () => {
    const { plan: p, trees } = await plan(spec(b), spec({ ...b, 'd/a': F('A local\n'), 'd/mine': F('m\n') }), spec({ ...b, 'd/b': F('B vendor\n'), 'd/theirs': F('t\n') }));
    const r = planResult(p, trees.new);
    expect(registry.get(r.get('d/a')!.sha256!)!.toString()).toBe('A local\n');
    expect(registry.get(r.get('d/b')!.sha256!)!.toString()).toBe('B vendor\n');
    expect(r.has('d/mine') && r.has('d/theirs')).toBe(true);
    expect(planReport(p).conflicts).toEqual([]);
  });

  it('a directory deleted on the device stays deleted; a vendor addition inside is a conflict with the whole vendor dir beside it', async () => {
    const { plan: p, trees } = await plan(spec(b), spec({}), spec({ ...b, 'd/new': F('n\n') }));
    const r = planResult(p, trees.new);
    expect(r.has('d')).toBe(false);
    expect([...r.keys()].filter((k) => k.startsWith('d.tiunew')).sort()).toEqual(['d.tiunew', 'd.tiunew/a', 'd.tiunew/b', 'd.tiunew/new']);
    expect(planReport(p).conflicts).toEqual([{ path: 'd', reason: expect.stringContaining('deleted on this device'), tiunew: 'd.tiunew' }]);
  });

  it('a directory the vendor deleted is kept with a conflict when the device added to it', async () => {
    const { plan: p, trees } = await plan(spec(b), spec({ ...b, 'd/mine': F('m\n') }), spec({}));
    const r = planResult(p, trees.new);
    expect([...r.keys()].filter((k) => k !== '.').sort()).toEqual(['d', 'd/a', 'd/b', 'd/mine']);
    expect(planReport(p).conflicts.map((c) => [c.path, c.tiunew])).toEqual([['d', undefined]]);
  });

  it('a directory the vendor deleted goes when the device did not change it', async () => {
    const { plan: p, trees } = await plan(spec(b), spec(b), spec({}));
    expect([...planResult(p, trees.new).keys()]).toEqual(['.']);
    expect(planReport(p).deleted).toEqual(['d']);
  });

  it('a directory replaced by a symlink on the vendor side, with device changes inside: device dir kept, symlink beside it', async () => {
    const { plan: p, trees } = await plan(spec(b), spec({ ...b, 'd/a': F('changed\n') }), spec({ d: S('/usr/etc/d') }));
    const r = planResult(p, trees.new);
    expect(r.get('d')?.type).toBe('dir');
    expect(r.get('d.tiunew')).toMatchObject({ type: 'symlink', target: '/usr/etc/d' });
  });

  it('both sides change a directory mode differently: the device mode wins and it is recorded', async () => {
    const { plan: p, trees } = await plan(spec({ d: D({ mode: 0o755 }) }), spec({ d: D({ mode: 0o700 }) }), spec({ d: D({ mode: 0o750 }) }));
    expect(planResult(p, trees.new).get('d')?.mode).toBe(0o700);
    expect(planReport(p).conflicts).toEqual([{ path: 'd', reason: expect.stringContaining('mode') }]);
  });

  it('per-attribute: device content change + vendor mode change are combined', async () => {
    const { plan: p, trees } = await plan(spec({ f: F('x', { mode: 0o644 }) }), spec({ f: F('local', { mode: 0o644 }) }), spec({ f: F('x', { mode: 0o640, uid: 7 }) }));
    const e = planResult(p, trees.new).get('f')!;
    expect([registry.get(e.sha256!)!.toString(), e.mode, e.uid]).toEqual(['local', 0o640, 7]);
    expect(planReport(p).merged).toEqual(['f']);
  });

  it('a .tiunew name already in use gets a numbered suffix', async () => {
    const { plan: p } = await plan(spec({ f: F('\0b') }), spec({ f: F('\0l'), 'f.tiunew': F('old leftover') }), spec({ f: F('\0n') }));
    const c = p.actions.find((a) => a.op === 'conflict');
    expect(c?.op === 'conflict' && c.tiunew?.path).toBe('f.tiunew.2');
  });
});

// ---------- text merges ----------

const SSHD = (over: Record<number, string> = {}) =>
  Array.from({ length: 30 }, (_, i) => over[i] ?? ['Port 22', '#AddressFamily any', 'PermitRootLogin prohibit-password', 'PasswordAuthentication yes', 'X11Forwarding no'][i] ?? `# option ${i}`).join('\n') + '\n';

describe('etc merge: text files', () => {
  it('isText: NUL, invalid UTF-8 and > 1 MiB are binary', () => {
    expect(isText(Buffer.from('ok ünïcode\n'))).toBe(true);
    expect(isText(Buffer.from('a\0b'))).toBe(false);
    expect(isText(Buffer.from([0x61, 0xff, 0x0a]))).toBe(false);
    expect(isText(Buffer.alloc(1024 * 1024 + 1, 0x61))).toBe(false);
    expect(isText(Buffer.alloc(1024 * 1024, 0x61))).toBe(true);
  });

  it('identical edits on both sides are not a conflict', () => {
    const m = mergeText(Buffer.from('a\nb\n'), Buffer.from('a\nB\n'), Buffer.from('a\nB\n'));
    expect(m).toEqual({ clean: true, merged: Buffer.from('a\nB\n') });
  });

  it('on disk: a local sshd_config edit and a vendor edit elsewhere merge cleanly; overlapping edits conflict', async () => {
    await using d = await tempDir();
    const base = SSHD();
    const mkside = (sshd: string, login: string) => spec({ ssh: D(), 'ssh/sshd_config': F(sshd, { mode: 0o600 }), 'login.defs': F(login) });
    const login = 'UMASK 022\nUID_MIN 1000\nENCRYPT_METHOD SHA512\n';
    const dirs = { base: `${d.path}/base`, local: `${d.path}/local`, new: `${d.path}/new` };
    await writeTree(dirs.base, mkside(base, login));
    await writeTree(dirs.local, mkside(SSHD({ 3: 'PasswordAuthentication no' }), 'UMASK 077\nUID_MIN 1000\nENCRYPT_METHOD SHA512\n'));
    await writeTree(dirs.new, mkside(SSHD({ 25: 'KbdInteractiveAuthentication no', 26: 'UsePAM yes' }), 'UMASK 027\nUID_MIN 1000\nENCRYPT_METHOD YESCRYPT\n'));
    await sys.run('cp', ['-a', `${dirs.new}/.`, `${d.path}/result/`]);
    const { report, plan: p } = await mergeEtc(sys, { baseDir: dirs.base, localDir: dirs.local, newDir: dirs.new, resultDir: `${d.path}/result`, verify: true });

    const sshd = await readFile(`${d.path}/result/ssh/sshd_config`, 'utf8');
    expect(sshd).toContain('PasswordAuthentication no\n');
    expect(sshd).toContain('KbdInteractiveAuthentication no\nUsePAM yes\n');
    expect(sshd).not.toContain('PasswordAuthentication yes');
    expect(report.merged).toEqual(['ssh/sshd_config']);

    // login.defs: the device changed line 1, the vendor lines 1 and 3 -> overlapping -> conflict.
    expect(await readFile(`${d.path}/result/login.defs`, 'utf8')).toBe('UMASK 077\nUID_MIN 1000\nENCRYPT_METHOD SHA512\n');
    expect(await readFile(`${d.path}/result/login.defs.tiunew`, 'utf8')).toBe('UMASK 027\nUID_MIN 1000\nENCRYPT_METHOD YESCRYPT\n');
    expect(report.conflicts).toEqual([{ path: 'login.defs', reason: expect.stringContaining('overlapping'), tiunew: 'login.defs.tiunew' }]);
    expect(formatPlan(p).join('\n')).toMatch(/conflict +\/etc\/login.defs -> login.defs.tiunew/);
    // The merged file keeps its mode.
    expect((await scanEtc(`${d.path}/result`)).get('ssh/sshd_config')?.mode).toBe(0o600);
  });

  it('adjacent-line edits are treated as overlapping (conservative, like GNU diff3)', () => {
    const m = mergeText(Buffer.from('a\nb\nc\n'), Buffer.from('A\nb\nc\n'), Buffer.from('a\nB\nc\n'));
    expect(m.clean).toBe(false);
  });
});

// ---------- executor safety ----------

describe('etc merge: executor', () => {
  it('refuses a local file that changed between scan and apply (ETC_MERGE), leaving no temp dir', async () => {
    await using d = await tempDir();
    const dirs = { base: `${d.path}/b`, local: `${d.path}/l`, new: `${d.path}/n` };
    await writeTree(dirs.base, spec({ f: F('1\n') }));
    await writeTree(dirs.local, spec({ f: F('2\n') }));
    await writeTree(dirs.new, spec({ f: F('1\n') }));
    await sys.run('cp', ['-a', `${dirs.new}/.`, `${d.path}/r/`]);
    const trees = { base: await scanEtc(dirs.base), local: await scanEtc(dirs.local), new: await scanEtc(dirs.new) };
    const p = await planEtcMerge(trees.base, trees.local, trees.new, dirContents(dirs));
    expect(p.actions.map((a) => a.op)).toEqual(['keep-local']);
    await writeFile(`${dirs.local}/f`, 'edited meanwhile\n');
    const err = await applyEtcPlan(sys, p, { local: dirs.local, next: dirs.new, result: `${d.path}/r` }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TiuError);
    expect((err as TiuError).code).toBe('ETC_MERGE');
    expect((await scanEtc(`${d.path}/r`)).size).toBe(2);
  });

  it('the planner rejects content that does not match the scan', async () => {
    const trees = { base: toTree(spec({ f: F('a\n') })), local: toTree(spec({ f: F('b\n') })), new: toTree(spec({ f: F('c\n') })) };
    const err = await planEtcMerge(trees.base, trees.local, trees.new, () => Buffer.from('forged\n')).catch((e: unknown) => e);
    expect((err as TiuError).code).toBe('ETC_MERGE');
  });

  it('merges in place when the result directory is the new directory itself', async () => {
    await using d = await tempDir();
    const dirs = { base: `${d.path}/b`, local: `${d.path}/l`, new: `${d.path}/n` };
    await writeTree(dirs.base, spec({ f: F('\0b'), g: F('g') }));
    await writeTree(dirs.local, spec({ f: F('\0l'), g: F('g'), mine: S('x') }));
    await writeTree(dirs.new, spec({ f: F('\0n'), g: F('G') }));
    const { report } = await mergeEtc(sys, { baseDir: dirs.base, localDir: dirs.local, newDir: dirs.new, resultDir: dirs.new, verify: true });
    expect(await readFile(`${dirs.new}/f`, 'latin1')).toBe('\0l');
    expect(await readFile(`${dirs.new}/f.tiunew`, 'latin1')).toBe('\0n');
    expect(await readFile(`${dirs.new}/g`, 'latin1')).toBe('G');
    expect(report).toEqual({ takenFromVendor: ['g'], keptLocal: ['mine'], merged: [], deleted: [], conflicts: [{ path: 'f', reason: expect.any(String), tiunew: 'f.tiunew' }] });
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it('dry run plans without writing', async () => {
    await using d = await tempDir();
    await writeTree(`${d.path}/b`, spec({ f: F('1') }));
    await writeTree(`${d.path}/l`, spec({ f: F('2') }));
    await writeTree(`${d.path}/n`, spec({ f: F('1') }));
    const r = await mergeEtc(sys, { baseDir: `${d.path}/b`, localDir: `${d.path}/l`, newDir: `${d.path}/n`, resultDir: `${d.path}/n`, dryRun: true });
    expect(r.report.keptLocal).toEqual(['f']);
    expect(await readFile(`${d.path}/n/f`, 'utf8')).toBe('1');
    expect(Object.keys(r.localDigests).sort()).toEqual(['.', 'f']);
  });
});

// ---------- etc diff ----------

describe('etc diff', () => {
  it('lists added, modified (with what) and deleted paths, collapsing below added/deleted dirs', async () => {
    await using d = await tempDir();
    await writeTree(`${d.path}/b`, spec({ a: F('1'), m: F('1', { mode: 0o644 }), gone: D(), 'gone/x': F('x'), l: S('t') }));
    await writeTree(`${d.path}/l`, spec({ a: F('2'), m: F('1', { mode: 0o600 }), 'new\ndir': D(), 'new\ndir/y': F('y'), l: S('u') }));
    expect(await etcDiff(sys, `${d.path}/b`, `${d.path}/l`)).toEqual([
      { path: 'a', change: 'modified', what: ['content'] },
      { path: 'gone', change: 'deleted' },
      { path: 'l', change: 'modified', what: ['target'] },
      { path: 'm', change: 'modified', what: ['mode'] },
      { path: 'new\ndir', change: 'added' },
    ]);
  });

  it('parses getfattr quoting (octal escapes) back to raw bytes', () => {
    const m = parseGetfattr('# file: /r/a b\\012c\nuser.t=0saGk=\n\n# file: /r/\xff\nuser.e=0s\n\n# file: /other\nuser.z=0sAA==\n', '/r');
    expect([...m]).toEqual([
      ['a b\nc', { 'user.t': 'aGk=' }],
      ['\xff', { 'user.e': '' }],
    ]);
  });
});

// ---------- properties over random trees ----------

const NAMES = ['a', 'b', '-c', 'd e'];
const SUB = ['x', 'y\xff'];
const PATHS = NAMES.flatMap((n) => [n, ...SUB.map((s) => `${n}/${s}`)]);
const LINES = ['one', 'two', 'three', 'four', 'five', 'six'];

const nodeArb: fc.Arbitrary<Node | null> = fc.oneof(
  fc.constant(null),
  fc.record({ type: fc.constant('file' as const), content: fc.array(fc.constantFrom(...LINES), { maxLength: 6 }).map((l) => l.join('\n') + '\n'), mode: fc.constantFrom(0o644, 0o600) }),
  fc.record({ type: fc.constant('file' as const), content: fc.constantFrom('\0bin1', '\0bin2'), mode: fc.constant(0o644) }),
  fc.record({ type: fc.constant('symlink' as const), target: fc.constantFrom('t1', 't2') }),
  fc.record({ type: fc.constant('dir' as const), mode: fc.constantFrom(0o755, 0o700) }),
);

/** Drops entries whose parent is not a directory (keeps trees consistent). */
function normalize(s: Map<string, Node | null>): Spec {
  const out: Spec = new Map([['.', D()]]);
  for (const p of [...s.keys()].sort(comparePaths)) {
    const n = s.get(p);
    const parent = parentOf(p);
    if (n && (parent === '.' || out.get(parent)?.type === 'dir')) out.set(p, n);
  }
  return out;
}

const treeArb = fc.tuple(...PATHS.map(() => nodeArb)).map((nodes) => new Map(PATHS.map((p, i) => [p, nodes[i]!])));
const editsArb = fc.array(fc.tuple(fc.constantFrom(...PATHS), nodeArb), { maxLength: 5 });
const apply = (t: Map<string, Node | null>, edits: [string, Node | null][]) => {
  const c = new Map(t);
  for (const [p, n] of edits) c.set(p, n);
  return normalize(c);
};
const scenarioArb = fc.tuple(treeArb, editsArb, editsArb).map(([t, el, en]) => ({ base: normalize(t), local: apply(t, el), next: apply(t, en) }));

function resultOk(result: Map<string, EtcEntry>, expected: Map<string, EtcEntry>): boolean {
  const keys = new Set([...result.keys(), ...expected.keys()]);
  return [...keys].every((k) => sameEntry(result.get(k), expected.get(k)));
}

describe('etc merge: properties over random trees', () => {
  it('local = base -> result = new; new = base -> result = local', async () => {
    await fc.assert(
      fc.asyncProperty(treeArb, editsArb, async (t, edits) => {
        const base = normalize(t);
        const changed = apply(t, edits);
        const a = await plan(base, base, changed);
        expect(resultOk(planResult(a.plan, a.trees.new), a.trees.new)).toBe(true);
        const b = await plan(base, changed, base);
        expect(resultOk(planResult(b.plan, b.trees.new), b.trees.local)).toBe(true);
        expect(b.plan.actions.filter((x) => x.op === 'conflict')).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });

  it('no local change disappears without a conflict record; untouched paths get the vendor version; the result is a tree', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        const { plan: p, trees } = await plan(s.base, s.local, s.next);
        const result = planResult(p, trees.new);
        const conflictAt = (q: string) =>
          p.actions.some((a) => (a.op === 'conflict' && (a.path === q || isBelow(q, a.path))) || (a.path === q && (a.notes?.length ?? 0) > 0));
        for (const q of new Set([...trees.base.keys(), ...trees.local.keys(), ...trees.new.keys()])) {
          const [b, l, n, r] = [trees.base.get(q), trees.local.get(q), trees.new.get(q), result.get(q)];
          if (!sameEntry(l, b) && !conflictAt(q)) {
            if (!l) expect(r).toBeUndefined();
            else {
              expect(r?.type).toBe(l.type);
              const merged = p.actions.some((a) => a.op === 'merged' && a.path === q);
              if (!contentEqual(l, b)) expect(contentEqual(r, l) || merged).toBe(true);
              for (const f of metaDiff(l, b ?? { ...l, mode: -1, uid: -1, gid: -1, xattrs: { none: '' } })) {
                if (f === 'mode') expect(r!.mode).toBe(l.mode);
                if (f === 'owner') expect([r!.uid, r!.gid]).toEqual([l.uid, l.gid]);
              }
            }
          }
          // Where the device changed nothing at or above q, the vendor's version is the result.
          const ancestorsSame = (x: string): boolean => x === '.' || (sameEntry(trees.local.get(x), trees.base.get(x)) && ancestorsSame(parentOf(x)));
          if (ancestorsSame(q) && !conflictAt(q)) expect(sameEntry(r, n)).toBe(true);
        }
        for (const q of result.keys()) if (q !== '.') expect(result.get(parentOf(q))?.type).toBe('dir');
        // Every .tiunew holds the vendor version of its path.
        for (const a of p.actions) {
          if (a.op === 'conflict' && a.tiunew) expect(sameEntry({ ...result.get(a.tiunew.path)!, path: a.path }, { ...trees.new.get(a.path)!, path: a.path })).toBe(true);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('executed on disk, the result equals the plan outcome (random trees)', async () => {
    await using d = await tempDir();
    let run = 0;
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (s) => {
        const root = `${d.path}/${run++}`;
        const dirs = { base: `${root}/b`, local: `${root}/l`, new: `${root}/n` };
        await writeTree(dirs.base, s.base);
        await writeTree(dirs.local, s.local);
        await writeTree(dirs.new, s.next);
        await sys.run('cp', ['-a', `${dirs.new}/.`, `${root}/r/`]);
        const { plan: p } = await mergeEtc(sys, { baseDir: dirs.base, localDir: dirs.local, newDir: dirs.new, resultDir: `${root}/r`, verify: true });
        const expected = planResult(p, await scanEtc(dirs.new, { sys }));
        expect(verifyEtcResult(expected, await scanEtc(`${root}/r`, { sys }))).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });
});
