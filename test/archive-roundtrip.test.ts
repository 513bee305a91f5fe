/**
 * Round trip: tree -> `tiu create` -> kernel loop mount of the image -> the same tree.
 * Every path of the source (minus the contents of the excluded directories) must come back with
 * the same type, mode (setuid included), owner, size, content, symlink target, mtime, xattrs,
 * hardlink grouping and device numbers; the index inside the image must list exactly the image's
 * paths and describe each one as it is. On the small tree with every file type, and on Debian.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { INDEX_PATH, type IndexEntry } from '../src/core/fileindex/types.ts';
import { loadIndex } from '../src/core/fileindex/io.ts';
import {
  debianTree, archiveParts, buildTypesTree, createArchive, describeTree, excludedRel, hardlinkGroups, makeKeys, mountSquashfs, xattrsOfTree, ODD,
  type ArchiveParts, type Node,
} from './helpers/archive.ts';
import { tempDir } from './helpers/env.ts';

let work: { path: string } & AsyncDisposable;
const subjects: Record<string, { tree: string; archive: string; parts: ArchiveParts }> = {};

beforeAll(async () => {
  work = await tempDir('tiu-roundtrip-');
  const keys = await makeKeys(join(work.path, 'keys'));
  const small = await buildTypesTree(join(work.path, 'small'));
  const debian = debianTree();
  for (const [name, tree] of [['small', small], ['debian', debian]] as const) {
    const archive = await createArchive({ tree, out: join(work.path, `${name}.tiu`), keys });
    subjects[name] = { tree, archive, parts: await archiveParts(archive) };
  }
}, 600_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

/** glibc's major()/minor() of a dev_t. */
function devNumbers(rdev: number): { major: number; minor: number } {
  const d = BigInt(rdev);
  return { major: Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn)), minor: Number((d & 0xffn) | ((d >> 12n) & ~0xffn)) };
}

const show = (p: string) => JSON.stringify(Buffer.from(p, 'latin1').toString('utf8'));

/** Differences between two nodes in what the image must keep. */
function nodeDiff(a: Node, b: Node): string[] {
  const out: string[] = [];
  for (const k of ['type', 'mode', 'uid', 'gid', 'mtime', 'size', 'sha256', 'target', 'rdev'] as const) {
    if (a[k] !== b[k]) out.push(`${k} ${typeof a[k] === 'number' && k === 'mode' ? a[k].toString(8) : a[k]} != ${typeof b[k] === 'number' && k === 'mode' ? b[k].toString(8) : b[k]}`);
  }
  return out;
}

/** Differences between an index entry and the image's node for that path. */
function entryDiff(e: IndexEntry, n: Node): string[] {
  const out: string[] = [];
  const expect: Partial<Record<keyof Node, unknown>> = { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime };
  if (e.type === 'file') Object.assign(expect, { size: e.size, sha256: e.sha256 });
  if (e.type === 'symlink') expect.target = e.target;
  for (const [k, v] of Object.entries(expect)) if (n[k as keyof Node] !== v) out.push(`${k}: index ${String(v)}, image ${String(n[k as keyof Node])}`);
  if (e.type === 'chr' || e.type === 'blk') {
    const d = devNumbers(n.rdev!);
    if (e.rdev?.major !== d.major || e.rdev?.minor !== d.minor) out.push(`rdev: index ${JSON.stringify(e.rdev)}, image ${JSON.stringify(d)}`);
  }
  return out;
}

describe.each(['small', 'debian'])('%s tree', (name) => {
  const s = () => subjects[name]!;

  it('every source path comes back from the mounted image with the same metadata, content and hardlinks', async () => {
    const { tree, archive, parts } = s();
    const excluded = parts.manifest.excluded.map(excludedRel);
    expect(excluded).toContain('var');
    await using m = await mountSquashfs(archive);
    const src = await describeTree(tree, excluded);
    const img = await describeTree(m.dir);
    // The image holds the source paths plus the index and the directories tiu made for it.
    const synthetic = ['usr/lib/tiu', 'usr/lib/tiu/image', INDEX_PATH].filter((p) => !src.has(p));
    expect([...img.keys()].sort()).toEqual([...src.keys(), ...synthetic].sort());
    // Excluded directories are kept, empty.
    for (const e of excluded) if (src.has(e)) expect([...img.keys()].filter((p) => p.startsWith(`${e}/`)), e).toEqual([]);

    const problems: string[] = [];
    for (const [p, a] of src) {
      const d = nodeDiff(a, img.get(p)!);
      if (d.length) problems.push(`${show(p)}: ${d.join(', ')}`);
    }
    expect(problems).toEqual([]);

    // Hardlinks: same inode in the source <=> same inode in the image.
    const restrict = (g: Map<string, string>) => new Map([...g].map(([p, key]) => [p, key.split('\u0000').filter((x) => src.has(x)).join('\u0000')]));
    const srcGroups = restrict(hardlinkGroups(src));
    const imgGroups = restrict(hardlinkGroups(new Map([...img].filter(([p]) => src.has(p)))));
    expect(imgGroups).toEqual(srcGroups);
    const multi = [...srcGroups.values()].filter((k) => k.includes('\u0000'));
    expect(multi.length).toBeGreaterThan(0);

    if (name === 'small') {
      // The fixture's special cases are really there (guards against a weakened fixture).
      const get = (p: string) => img.get(p)!;
      expect(get('usr/bin/suid-tool').mode).toBe(0o4755);
      expect(get('usr/bin/sgid-tool').mode).toBe(0o2711);
      expect(get('shared/sticky').mode).toBe(0o1777);
      expect(get('etc/secret').mode).toBe(0);
      expect([get('etc/owned').uid, get('etc/owned').gid]).toEqual([1234, 5678]);
      expect(devNumbers(get('dev-nodes/big').rdev!)).toEqual({ major: 300, minor: 70000 });
      expect(devNumbers(get('dev-nodes/loop9').rdev!)).toEqual({ major: 7, minor: 9 });
      expect(get('dev-nodes/fifo').type).toBe('fifo');
      expect(get('dev-nodes/socket').type).toBe('socket');
      expect(get('links/odd-target').target).toBe('bad\xfftarget');
      for (const p of Object.values(ODD)) expect(img.has(p), show(p)).toBe(true);
      expect(get('usr/share/data/empty').size).toBe(0);
      expect(get('usr/share/data/sparse.img').size).toBe(8 << 20);
      expect(get('usr/lib/libhard.so.1').ino).toBe(get('links/hard-third').ino);
      expect(get('links/pair-a').ino).not.toBe(get('usr/lib/libhard.so.1').ino);
    }
  });

  it('keeps every xattr except POSIX ACLs (which squashfs cannot store)', async () => {
    const { tree, archive, parts } = s();
    const excluded = parts.manifest.excluded.map(excludedRel);
    const below = (p: string) => excluded.some((e) => p.startsWith(`${e}/`));
    await using m = await mountSquashfs(archive);
    const srcX = new Map([...(await xattrsOfTree(tree))].filter(([p]) => !below(p)));
    const imgX = await xattrsOfTree(m.dir);
    const expected = new Map<string, Record<string, string>>();
    for (const [p, x] of srcX) {
      const kept = Object.fromEntries(Object.entries(x).filter(([k]) => !k.startsWith('system.posix_acl_')));
      if (Object.keys(kept).length) expected.set(p, kept);
    }
    expect(imgX).toEqual(expected);
    if (name === 'small') {
      expect(imgX.get('usr/bin/cap-tool')).toHaveProperty(['security.capability']);
      expect(imgX.get('etc/hostname')).toEqual({ 'user.comment': Buffer.from('hello world').toString('base64'), 'user.binary': 'AP8Q' });
      expect(srcX.get('etc/owned')).toHaveProperty(['system.posix_acl_access']);
    }
  });

  it('the index in the image lists exactly the image paths and describes each as it is', async () => {
    const { tree, archive, parts } = s();
    const excluded = parts.manifest.excluded.map(excludedRel);
    const below = (p: string) => excluded.some((e) => p.startsWith(`${e}/`));
    await using m = await mountSquashfs(archive);
    const entries = await loadIndex(join(m.dir, INDEX_PATH), { sha256: parts.manifest.index.sha256 });
    const img = await describeTree(m.dir);
    expect(entries.length).toBe(parts.manifest.index.entries);
    expect(entries.map((e) => e.path).sort()).toEqual([...img.keys()].filter((p) => p !== INDEX_PATH).sort());

    const problems: string[] = [];
    const groups = hardlinkGroups(img);
    const srcX = await xattrsOfTree(tree);
    for (const e of entries) {
      const n = img.get(e.path)!;
      const d = entryDiff(e, n);
      // Hardlinks: a later member names an earlier one of the same group in the image.
      if (e.hardlink !== undefined && groups.get(e.hardlink) !== groups.get(e.path)) d.push(`hardlink to ${show(e.hardlink)} but not the same inode`);
      if (e.hardlink === undefined && e.type === 'file' && n.nlink > 1) {
        const firsts = entries.filter((x) => groups.get(x.path) === groups.get(e.path) && x.hardlink === undefined);
        if (firsts.length !== 1) d.push(`hardlink group has ${firsts.length} first members`);
      }
      // xattrs as in the source, POSIX ACLs included.
      if (!below(e.path) && !e.path.startsWith('usr/lib/tiu')) {
        const want = srcX.get(e.path) ?? {};
        if (JSON.stringify(Object.entries(e.xattrs ?? {}).sort()) !== JSON.stringify(Object.entries(want).sort())) d.push(`xattrs ${JSON.stringify(e.xattrs)} != source ${JSON.stringify(want)}`);
      }
      if (d.length) problems.push(`${show(e.path)}: ${d.join('; ')}`);
    }
    expect(problems).toEqual([]);
    if (name === 'small') {
      const byPath = new Map(entries.map((e) => [e.path, e]));
      expect(byPath.get('etc/owned')!.xattrs).toHaveProperty(['system.posix_acl_access']);
      expect(byPath.get('shared/setgid')!.xattrs).toHaveProperty(['system.posix_acl_default']);
      expect(byPath.get('usr/share/data/sparse.img')!.sparse).toBe(true);
      expect(byPath.get('dev-nodes/big')!.rdev).toEqual({ major: 300, minor: 70000 });
      expect([byPath.get('usr/lib/libhard-copy.so')!.hardlink, byPath.get('usr/lib/libhard.so.1')!.hardlink, byPath.get('links/hard-third')!.hardlink].filter((h) => h !== undefined)).toHaveLength(2);
    }
  });
});

describe('what the manifest says about the tree', () => {
  it('Debian: os-release fields and x86_64 from its binaries', () => {
    const m = subjects.debian!.parts.manifest;
    expect(m.os.ID).toBe('debian');
    expect(m.os.VERSION_ID).toBe('12');
    expect(m.arch).toBe('x86_64');
    expect(m.excluded).toContain('/var');
  });

  it('absolute symlinks are resolved inside the tree, never on the build host', async () => {
    // An aarch64 tree built on this x86_64 host, whose os-release and sh are absolute links
    // (as in many images): following them on the host would describe the host instead.
    const tree = join(work.path, 'foreign');
    await mkdir(join(tree, 'usr/lib'), { recursive: true });
    await mkdir(join(tree, 'usr/bin'), { recursive: true });
    await mkdir(join(tree, 'etc'), { recursive: true });
    await writeFile(join(tree, 'usr/lib/os-release'), 'ID=foreign\nVERSION_ID=7\nPRETTY_NAME="Foreign OS 7"\n');
    await symlink('/usr/lib/os-release', join(tree, 'etc/os-release'));
    const elf = Buffer.alloc(64);
    elf.write('\x7fELF', 0, 'latin1');
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf.writeUInt16LE(0xb7, 18); // EM_AARCH64
    await writeFile(join(tree, 'usr/bin/dash'), elf, { mode: 0o755 });
    await symlink('/usr/bin/dash', join(tree, 'usr/bin/sh'));
    await symlink('usr/bin', join(tree, 'bin'));
    const keys = { ...(await makeKeys(join(work.path, 'foreign-keys'))) };
    const archive = await createArchive({ tree, out: join(work.path, 'foreign.tiu'), keys });
    const m = (await archiveParts(archive)).manifest;
    expect(m.arch).toBe('aarch64');
    expect(m.os).toEqual({ ID: 'foreign', VERSION_ID: '7', PRETTY_NAME: 'Foreign OS 7' });
  });
});
