import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { planApply, type ApplyPlan } from '../src/tiu/apply/plan.ts';
import { comparePaths, type IndexEntry } from '../src/core/fileindex/types.ts';
import { dirsTouchedByTiu, excludedMatcher, isTiuManaged, VENDOR_ETC_DIR } from '../src/tiu/device/paths.ts';
import { hardlinkLeaders, isVolatile, isVolatileAncestor, lookupNeedless, redatedOnly } from '../src/tiu/device/trusted.ts';
import { redatable, redateScript, shellQuote } from '../src/tiu/apply/redate.ts';

const opts = { isExcluded: excludedMatcher(['/var', '/home']), isProtected: isTiuManaged };

function dir(path: string, extra: Partial<IndexEntry> = {}): IndexEntry {
  return { path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 100, ...extra };
}
function file(path: string, content: string, extra: Partial<IndexEntry> = {}): IndexEntry {
  return { path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 100, size: content.length, sha256: `sha-${content}`, ...extra };
}
function sym(path: string, target: string, extra: Partial<IndexEntry> = {}): IndexEntry {
  return { path, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 100, target, ...extra };
}
function tree(...entries: IndexEntry[]): IndexEntry[] {
  return [dir('.'), ...entries].sort((a, b) => comparePaths(a.path, b.path));
}
function asMap(entries: IndexEntry[]): Map<string, IndexEntry> {
  return new Map(entries.map((e) => [e.path, e]));
}
function ops(plan: ApplyPlan): string[] {
  return [...plan.removals.map((r) => `remove ${r.path}`), ...plan.changes.map((c) => `${c.op === 'write' && c.inPlace ? 'rewrite' : c.op} ${c.entry.path}${c.op === 'meta' ? ` ${c.fields.join('+')}` : ''}`)];
}

/** Applies a plan to an in-memory tree model, to check the result equals the target. */
function simulate(actual: IndexEntry[], target: IndexEntry[], plan: ApplyPlan): Map<string, IndexEntry> {
  const state = asMap(actual);
  for (const r of plan.removals) for (const p of [...state.keys()]) if (p === r.path || p.startsWith(r.path + '/')) state.delete(p);
  for (const c of plan.changes) {
    if (c.op === 'write' && c.inPlace) {
      // Rewritten in place: only over a regular file that is not part of a hardlink group.
      const old = state.get(c.entry.path);
      if (old?.type !== 'file' || old.hardlink !== undefined || [...state.values()].some((x) => x.hardlink === c.entry.path)) throw new Error(`in-place rewrite of ${c.entry.path}, which is not a lone regular file`);
    } else if (c.op !== 'meta' && state.has(c.entry.path)) throw new Error(`create over existing ${c.entry.path}`);
    state.set(c.entry.path, c.entry);
  }
  void target;
  return state;
}

describe('the path matchers the planner asks for every entry', () => {
  it('excluded, volatile and volatile-ancestor paths: whole components only', () => {
    const ex = excludedMatcher(['/var/', 'home', '//srv/data']);
    expect(['var/log', 'var/x/y', 'home/u', 'srv/data/db'].filter((p) => !ex(p))).toEqual([]);
    expect(['var', 'variable', 'homes/u', 'srv/data', 'srv/database/x', 'usr/var/log'].filter(ex)).toEqual([]);
    expect(excludedMatcher([])('var/log')).toBe(false);
    const volatile = ['.', 'etc', 'etc/fstab', 'boot/grub2/grub.cfg', 'usr/local', 'usr/local/bin/x', 'usr/lib/modules/6.1.0-9-amd64/initrd.img', 'var', 'root/.bashrc', '.snapshots/1'];
    expect(volatile.filter((p) => !isVolatile(p))).toEqual([]);
    const stable = ['etcx', 'etc.d/x', 'usr', 'usr/lib', 'usr/localx/a', 'usr/lib/modules/6.1.0-9-amd64/kernel/x.ko', 'usr/lib/modules/6.1.0-9-amd64', 'bin/sh', 'rootfs', ''];
    expect(stable.filter(isVolatile)).toEqual([]);
    const ancestors = ['usr', 'usr/lib', 'usr/lib/modules', 'usr/lib/modules/6.1.0-9-amd64', 'usr/lib/tiu'];
    expect(ancestors.filter((p) => !isVolatileAncestor(p))).toEqual([]);
    expect(['usr/local', 'etc', 'us', 'usr/li', 'usr/lib/modules/6.1/kernel', 'var/lib', ''].filter(isVolatileAncestor)).toEqual([]);
  });
});

describe('planApply', () => {
  it('does nothing for identical trees', () => {
    const t = tree(dir('usr'), file('usr/a', 'x'), sym('usr/l', 'a'));
    const plan = planApply(t, asMap(t), opts);
    expect(ops(plan)).toEqual([]);
    expect(plan.stats.unchanged).toBe(2);
    expect(plan.dirTimes).toEqual([]);
  });

  it('marks a rewrite in place whose xattrs need no check: none on either side (a write clears a file capability)', () => {
    const cap = { 'security.capability': 'AQAAAgAgAAAAAAAAAAAAAAAAAAA=' };
    const a = tree(file('none', 'a'), file('emptyobj', 'a', { xattrs: {} }), file('cap', 'a', { xattrs: cap }), file('gains', 'a'), file('loses', 'a', { xattrs: { 'user.x': 'MQ==' } }));
    const t = tree(file('none', 'b'), file('emptyobj', 'b'), file('cap', 'b', { xattrs: cap }), file('gains', 'b', { xattrs: { 'user.x': 'MQ==' } }), file('loses', 'b'));
    const kept = planApply(t, asMap(a), opts).changes.filter((c) => c.op === 'write' && c.inPlace && c.xattrsKept).map((c) => c.entry.path);
    expect(kept).toEqual(['emptyobj', 'none']);
    // Not for a file that gets a fresh inode (it may inherit a default ACL, or be labelled).
    const fresh = planApply(tree(file('f', 'b')), asMap(tree(sym('f', 'x'))), opts).changes.find((c) => c.op === 'write');
    expect(fresh).toMatchObject({ op: 'write' });
    expect(fresh && 'xattrsKept' in fresh).toBe(false);
  });

  it('writes changed content even when size and mtime are equal (reproducible-build trap), in place', () => {
    const a = tree(file('f', 'aaa'));
    const t = tree(file('f', 'bbb'));
    const plan = planApply(t, asMap(a), opts);
    expect(ops(plan)).toEqual(['rewrite f']);
    // The directory keeps its entries: no mtime to restore.
    expect(plan.dirTimes).toEqual([]);
    expect(plan.stats).toMatchObject({ written: 1, writtenBytes: 3 });
  });

  it('never rewrites in place a file other paths are hardlinked to, a follower, or a sparse target', () => {
    const a = tree(file('a', '1'), file('b', '1', { hardlink: 'a' }), file('s', 'x'));
    const t = tree(file('a', '2'), file('b', '3'), file('s', 'y', { sparse: true }));
    expect(ops(planApply(t, asMap(a), opts))).toEqual(['remove s', 'remove b', 'remove a', 'write a', 'write b', 'write s']);
  });

  it('applies metadata-only changes without rewriting', () => {
    const a = tree(file('f', 'x'), dir('d'));
    const t = tree(file('f', 'x', { mode: 0o4755, uid: 5, mtime: 200, xattrs: { 'user.a': 'AA==' } }), dir('d', { mode: 0o700 }));
    expect(ops(planApply(t, asMap(a), opts))).toEqual(['meta d mode', 'meta f mode+owner+mtime+xattrs']);
  });

  it('handles type changes file<->dir<->symlink', () => {
    const a = tree(file('x', '1'), dir('y'), file('y/in', '2'), sym('z', 'x'));
    const t = tree(dir('x'), file('x/new', '3'), sym('y', 'x'), file('z', '4'));
    const plan = planApply(t, asMap(a), opts);
    expect(ops(plan)).toEqual(['remove z', 'remove y', 'remove x', 'mkdir x', 'write x/new', 'symlink y', 'write z']);
    const result = simulate(a, t, plan);
    expect([...result.keys()].sort()).toEqual(t.map((e) => e.path).sort());
  });

  it('removes deleted paths, top-most only, and restores parent mtimes', () => {
    const a = tree(dir('d'), dir('d/sub'), file('d/sub/f', '1'), file('keep', 'k'));
    const t = tree(file('keep', 'k'));
    const plan = planApply(t, asMap(a), opts);
    expect(ops(plan)).toEqual(['remove d']);
    expect(plan.dirTimes.map((d) => d.path)).toEqual(['.']);
  });

  it('never touches excluded contents or tiu-managed paths', () => {
    const a = tree(dir('var'), file('var/lib/db', 'data'), dir('usr'), dir('usr/lib'), dir('usr/lib/tiu'), dir('usr/lib/tiu/image'), file('usr/lib/tiu/image/index.jsonl', 'old'), dir('usr/lib/tiu/vendor-etc'));
    const t = tree(dir('var'), dir('usr'), dir('usr/lib'), dir('usr/lib/tiu'), dir('usr/lib/tiu/image'), file('var/log/x', 'never'));
    const plan = planApply(t, asMap(a), opts);
    expect(ops(plan)).toEqual([]);
  });

  it('keeps a hardlink group that is unchanged, relinks when the first member is rewritten', () => {
    const a = tree(file('a', '1'), file('b', '1', { hardlink: 'a' }), file('c', '1', { hardlink: 'a' }));
    expect(ops(planApply(a, asMap(a), opts))).toEqual([]);
    const t = tree(file('a', '2'), file('b', '2', { hardlink: 'a' }), file('c', '2', { hardlink: 'a' }));
    expect(ops(planApply(t, asMap(a), opts))).toEqual(['remove c', 'remove b', 'remove a', 'write a', 'link b', 'link c']);
  });

  it('splits a hardlink group into separate files and joins separate files into a group', () => {
    const linked = tree(file('a', '1'), file('b', '1', { hardlink: 'a' }));
    const separate = tree(file('a', '1'), file('b', '1'));
    expect(ops(planApply(separate, asMap(linked), opts))).toEqual(['remove b', 'write b']);
    expect(ops(planApply(linked, asMap(separate), opts))).toEqual(['remove b', 'link b']);
  });

  it('treats unknown digests as changed (never trusts size alone)', () => {
    const a = tree({ ...file('f', 'x'), sha256: undefined });
    const t = tree(file('f', 'x'));
    expect(ops(planApply(t, asMap(a), opts))).toEqual(['rewrite f']);
  });

  it('property: simulating the plan on random trees yields exactly the target paths and objects', () => {
    const names = fc.constantFrom('a', 'b', 'c', 'd e', '-x', '\xff');
    const entryArb = fc.record({
      parts: fc.array(names, { minLength: 1, maxLength: 3 }),
      kind: fc.constantFrom('file', 'dir', 'symlink'),
      content: fc.constantFrom('1', '2'),
      mode: fc.constantFrom(0o644, 0o755),
    });
    const build = (specs: { parts: string[]; kind: string; content: string; mode: number }[]) => {
      const m = new Map<string, IndexEntry>();
      for (const s of specs) {
        // Every prefix must be a directory.
        let ok = true;
        for (let i = 1; i < s.parts.length; i++) {
          const p = s.parts.slice(0, i).join('/');
          const e = m.get(p);
          if (e && e.type !== 'dir') ok = false;
        }
        const path = s.parts.join('/');
        if (!ok || m.has(path)) continue;
        for (let i = 1; i < s.parts.length; i++) {
          const p = s.parts.slice(0, i).join('/');
          if (!m.has(p)) m.set(p, dir(p));
        }
        if (s.kind === 'dir') m.set(path, dir(path, { mode: s.mode }));
        else if (s.kind === 'file') m.set(path, file(path, s.content, { mode: s.mode }));
        else m.set(path, sym(path, s.content));
      }
      return tree(...m.values());
    };
    fc.assert(
      fc.property(fc.array(entryArb, { maxLength: 12 }), fc.array(entryArb, { maxLength: 12 }), (sa, st) => {
        const a = build(sa);
        const t = build(st);
        const plan = planApply(t, asMap(a), opts);
        const result = simulate(a, t, plan);
        expect([...result.keys()].sort()).toEqual(t.map((e) => e.path).sort());
        for (const e of t) {
          const r = result.get(e.path)!;
          expect(r.type).toBe(e.type);
          if (e.type === 'file') expect(r.sha256).toBe(e.sha256);
          if (e.type === 'symlink') expect(r.target).toBe(e.target);
        }
        // A second plan from the result is empty (idempotence), metadata aside.
        const again = planApply(t, result, opts);
        expect(again.removals).toEqual([]);
        expect(again.changes.filter((c) => c.op !== 'meta')).toEqual([]);
      }),
      { numRuns: 300 },
    );
  });
});

describe('re-dating in a child process (apply/redate.ts)', () => {
  it('takes only mtime-only changes of files and symlinks outside hardlink groups', () => {
    expect(redatable(file('a', 'x'), ['mtime'])).toBe(true);
    expect(redatable(sym('l', 'a'), ['mtime'])).toBe(true);
    expect(redatable(dir('d'), ['mtime'])).toBe(false);
    expect(redatable(file('a', 'x'), ['mtime', 'mode'])).toBe(false);
    expect(redatable(file('a', 'x'), ['owner'])).toBe(false);
    expect(redatable(file('a', 'x', { hardlink: 'b' }), ['mtime'])).toBe(false);
    expect(redatable({ ...file('n', ''), type: 'fifo' }, ['mtime'])).toBe(false);
  });

  it('a trusted plan skips the lookup only where the entries differ in their mtime alone', () => {
    expect(redatedOnly(file('a', 'x'), file('a', 'x', { mtime: 200 }))).toBe(true);
    expect(redatedOnly(sym('l', 't'), sym('l', 't', { mtime: 200 }))).toBe(true);
    // Not re-dated: nothing changed, or something besides the mtime, or not a file/symlink.
    expect(redatedOnly(file('a', 'x'), file('a', 'x'))).toBe(false);
    expect(redatedOnly(file('a', 'x'), file('a', 'y', { mtime: 200 }))).toBe(false);
    expect(redatedOnly(file('a', 'x'), file('a', 'x', { mtime: 200, mode: 0o600 }))).toBe(false);
    expect(redatedOnly(file('a', 'x'), file('a', 'x', { mtime: 200, xattrs: { 'user.a': 'eA==' } }))).toBe(false);
    expect(redatedOnly(sym('l', 't'), sym('l', 'u', { mtime: 200 }))).toBe(false);
    expect(redatedOnly(dir('d'), dir('d', { mtime: 200 }))).toBe(false);
    expect(redatedOnly(file('a', 'x', { hardlink: 'b' }), file('a', 'x', { mtime: 200, hardlink: 'b' }))).toBe(false);
    // Directories: looked up unless only their mtime differs (set at the end through the parent).
    expect(lookupNeedless(dir('d'), dir('d', { mtime: 200 }))).toBe(true);
    expect(lookupNeedless(dir('d'), dir('d', { mtime: 200, mode: 0o700 }))).toBe(false);
    expect(lookupNeedless(dir('d'), dir('d'))).toBe(false);
    expect(lookupNeedless(file('a', 'x'), file('a', 'x', { mtime: 200 }))).toBe(true);
    expect(lookupNeedless(dir('a'), file('a', 'x', { mtime: 200 }))).toBe(false);
    expect([...hardlinkLeaders([file('b', 'x'), file('a', 'x', { hardlink: 'b' })], [file('c', 'y', { hardlink: 'd' })])].sort()).toEqual(['b', 'd']);
  });

  it('quotes every byte for sh, a quote included', () => {
    expect(shellQuote(Buffer.from('plain')).toString()).toBe("'plain'");
    expect(shellQuote(Buffer.from("it's")).toString()).toBe("'it'\\''s'");
    expect(shellQuote(Buffer.from("''")).toString()).toBe("''\\'''\\'''");
    const odd = Buffer.from([0x61, 0x0a, 0xff, 0x24, 0x60, 0x5c]);
    expect(shellQuote(odd)).toEqual(Buffer.concat([Buffer.from("'"), odd, Buffer.from("'")]));
  });

  it('one touch per mtime, chunked, paths as bytes below ./', () => {
    const es = [file('a', 'x', { mtime: 5 }), sym('-dash', 'a', { mtime: 7 }), file('b', 'x', { mtime: 5 }), file(Buffer.from([0x66, 0xff]).toString('latin1'), 'x', { mtime: 5 })];
    const s = redateScript(es).toString('latin1');
    expect(s).toBe("set -e\ntouch -h -d @5 -- './a' './b' './f\xff'\ntouch -h -d @7 -- './-dash'\n");
    // A limit on the argument bytes splits a group.
    const many = Array.from({ length: 10 }, (_, i) => file(`dir/file-${i}`, 'x', { mtime: 9 }));
    const lines = redateScript(many, 60).toString().trim().split('\n').slice(1);
    expect(lines.length).toBeGreaterThan(2);
    expect(lines.every((l) => l.startsWith('touch -h -d @9 -- '))).toBe(true);
    expect(lines.join(' ').match(/'\.\/dir\/file-\d'/g)).toHaveLength(10);
    expect(() => redateScript([file('a', 'x', { mtime: 1.5 })])).toThrow(/whole seconds/);
  });
});

describe('directories whose times tiu restores (dirsTouchedByTiu)', () => {
  it('holds every parent of the vendor /etc copy, not the copy itself (a read-only subvolume keeps its time)', () => {
    const dirs = new Set(dirsTouchedByTiu());
    const parts = VENDOR_ETC_DIR.split('/');
    for (let i = 1; i < parts.length; i++) expect(dirs.has(parts.slice(0, i).join('/')), parts.slice(0, i).join('/')).toBe(true);
    expect(dirs.has(VENDOR_ETC_DIR)).toBe(false);
    expect(dirs.has('usr/lib/tiu/image')).toBe(true);
  });
});
