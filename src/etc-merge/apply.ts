/**
 * The /etc merge executor: carries out an {@link EtcPlan} in the result directory (which starts
 * as a copy of the new vendor /etc), plus `mergeEtc` (scan, plan, apply) and `etcDiff`.
 *
 * Every node is built complete (content, owner, mode, xattrs) under an ASCII-named temp name in
 * a private directory inside the result directory, then renamed into place: a file is replaced
 * atomically, and tools (setfattr, mknod) only ever see ASCII paths, whatever bytes the real
 * name has. Copied files are hashed and must match the scan the plan was made from.
 * Side effects: writes below `result` only; reads `local` and `next`; runs setfattr/mknod.
 */
import { createHash } from 'node:crypto';
import { createReadStream, constants } from 'node:fs';
import { chmod, copyFile, lchown, lstat, mkdir, mkdtemp, open, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { TiuError, fromErrno } from '../core/errors.ts';
import { SafeRoot } from '../core/safepath.ts';
import { explainEperm } from '../tiu/fsadvice.ts';
import type { System } from '../core/system.ts';
import { displayPath, pathBytes } from '../core/fileindex/types.ts';
import { parentOf, sameEntry, treeDigests } from './compare.ts';
import { planEtcMerge } from './plan.ts';
import { diffTrees, planReport, planResult } from './report.ts';
import { absPath, dirContents, scanEtc } from './scan.ts';
import { setXattrsInProcess, xattrBinding } from '../core/fileindex/xattrs.ts';
import type { EtcChange, EtcEntry, EtcMergeReport, EtcPlan, EtcTree } from './types.ts';

export interface ApplyDirs {
  /** The running /etc (source of kept local versions). */
  local: string;
  /** The new vendor /etc (source of `.tiunew` files); may be `result` itself if untouched so far. */
  next: string;
  /** Where the merge is written; must start as a copy of `next`. */
  result: string;
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function baseName(p: string): Buffer {
  return pathBytes(p.slice(p.lastIndexOf('/') + 1));
}

/** Carries out `plan`. Returns the report. Throws ETC_MERGE if a source changed since the scan. */
export async function applyEtcPlan(sys: System, plan: EtcPlan, dirs: ApplyDirs): Promise<EtcMergeReport> {
  if (plan.actions.length === 0) return planReport(plan);
  // Every path in the three trees is resolved beneath its root: a symlinked directory in the
  // new /etc or the local one never redirects a write or a read outside it.
  const roots = new Map<string, SafeRoot>();
  const rootOf = async (dir: string) => {
    let r = roots.get(dir);
    if (!r) roots.set(dir, (r = await SafeRoot.open(dir, { what: dir === dirs.result ? 'the merged /etc' : `/etc (${dir})`, noXdev: false })));
    return r;
  };
  try {
    return await applyWithRoots(sys, plan, dirs, rootOf);
  } finally {
    for (const r of roots.values()) await r.close();
  }
}

async function applyWithRoots(sys: System, plan: EtcPlan, dirs: ApplyDirs, rootOf: (dir: string) => Promise<SafeRoot>): Promise<EtcMergeReport> {
  const result = await rootOf(dirs.result);
  let current: string | undefined;
  const tmp = await mkdtemp(`${dirs.result.replace(/\/+$/, '')}/.tiu-etc-merge-`);
  // Inherited default ACLs would otherwise end up on every file built here.
  const binding = await xattrBinding();
  if (binding) await binding.removeAttribute(tmp, 'system.posix_acl_default').catch(() => {});
  else await sys.run('setfattr', ['-x', 'system.posix_acl_default', tmp], { allowFailure: true });
  let counter = 0;
  const tmpName = () => `${tmp}/${counter++}`;

  const setMeta = async (t: string, e: EtcEntry, before: EtcEntry['xattrs'] = {}) => {
    await lchown(t, e.uid, e.gid);
    // After chown, which clears setuid/setgid bits and file capabilities.
    if (e.type !== 'symlink') await chmod(t, e.mode);
    const want = e.xattrs ?? {};
    // In-process where the binding can name the path and attributes; else one setfattr each.
    if (await setXattrsInProcess(Buffer.from(t), before, want)) return;
    for (const k of Object.keys(before)) if (!(k in want)) await sys.run('setfattr', ['-h', '-x', k, t]);
    for (const [k, v] of Object.entries(want)) {
      if (before[k] === v) continue;
      await sys.run('setfattr', ['-h', '-n', k, ...(v === '' ? [] : ['-v', `0s${v}`]), t]);
    }
  };

  /** Builds `e` (from `src`, or `content`) with its descendants under a temp name; returns it. */
  const build = async (src: string, e: EtcEntry, kids: Map<string, EtcEntry[]>, content?: Buffer): Promise<string | undefined> => {
    const t = tmpName();
    switch (e.type) {
      case 'file':
        if (content) await writeFile(t, content, { mode: 0o600, flag: 'wx' });
        else {
          const from = await rootOf(src);
          await from.at(e.path, async (p) => {
            // Open without following, then copy from that very file (its /proc/self/fd link).
            const fh = await open(p, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
            try {
              await copyFile(`/proc/self/fd/${fh.fd}`, t, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
            } finally {
              await fh.close();
            }
          });
          if (e.sha256 !== undefined && (await sha256File(t)) !== e.sha256) {
            throw new TiuError('ETC_MERGE', `${src}/${displayPath(e.path)} changed while merging`, { hint: 'retry the update' });
          }
        }
        break;
      case 'symlink':
        await symlink(pathBytes(e.target ?? ''), t);
        break;
      case 'dir':
        await mkdir(t, { mode: 0o700 });
        for (const c of kids.get(e.path) ?? []) {
          const ct = await build(src, c, kids);
          if (ct) await rename(ct, Buffer.concat([Buffer.from(`${t}/`), baseName(c.path)]));
        }
        break;
      case 'fifo':
        await sys.run('mknod', [t, 'p']);
        break;
      case 'chr':
      case 'blk':
        await sys.run('mknod', [t, e.type === 'chr' ? 'c' : 'b', String(e.rdev?.major ?? 0), String(e.rdev?.minor ?? 0)]);
        break;
      case 'socket':
        sys.log.warn(`/etc/${displayPath(e.path)}: a socket cannot be copied; skipped`);
        return undefined;
    }
    await setMeta(t, e);
    return t;
  };

  const kidsOf = (entries: EtcEntry[]) => {
    const m = new Map<string, EtcEntry[]>();
    for (const e of entries) m.set(parentOf(e.path), [...(m.get(parentOf(e.path)) ?? []), e]);
    return m;
  };

  /** Puts the built node `t` at `p`, replacing what is there (a directory only by removing it first). */
  const place = async (t: string | undefined, p: string) => {
    result.forget(p);
    await result.at(p, async (dest) => {
      if (t === undefined) return void (await rm(dest, { recursive: true, force: true }));
      const existing = await lstat(dest).catch(() => undefined);
      if (existing && (existing.isDirectory() || (await lstat(t)).isDirectory())) await rm(dest, { recursive: true, force: true });
      await rename(t, dest);
    });
  };
  const remove = async (p: string) => {
    result.forget(p);
    await result.at(p, (dest) => rm(dest, { recursive: true, force: true }));
  };

  try {
    for (const a of plan.actions) {
      current = a.path;
      switch (a.op) {
        case 'take-new':
          break;
        case 'delete':
          await remove(a.path);
          break;
        case 'keep-local':
          await place(await build(dirs.local, a.entry, kidsOf(a.descendants)), a.path);
          break;
        case 'merged':
          await place(await build(dirs.result, a.entry, new Map(), a.content), a.path);
          break;
        case 'meta':
          if (a.path === '.') await setMeta(dirs.result, a.entry, a.before.xattrs);
          else if (a.entry.type === 'dir') {
            // A directory cannot be copied cheaply: move it aside (ASCII name), fix it, move it back.
            const t = tmpName();
            result.forget(a.path);
            await result.at(a.path, (p) => rename(p, t));
            await setMeta(t, a.entry, a.before.xattrs);
            await result.at(a.path, (p) => rename(t, p));
          } else {
            await place(await build(dirs.result, { ...a.entry, sha256: a.before.sha256 }, new Map()), a.path);
          }
          break;
        case 'conflict':
          if (a.tiunew) await place(await build(dirs.next, a.tiunew.entry, kidsOf(a.tiunew.descendants)), a.tiunew.path);
          if (a.keep === 'local') await place(await build(dirs.local, a.entry!, kidsOf(a.descendants)), a.path);
          else await remove(a.path);
          break;
      }
    }
  } catch (err) {
    // EPERM for root: an immutable or append-only file in /etc, named with chattr advice.
    if (current !== undefined && !(err instanceof TiuError)) await explainEperm(sys, dirs.result, current, err, '/etc');
    throw fromErrno(err, `merging /etc into ${dirs.result}`) ?? err;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return planReport(plan);
}

/** Paths where a tree differs from what a plan should have produced (display strings). */
export function verifyEtcResult(expected: EtcTree, actual: EtcTree): string[] {
  const bad: string[] = [];
  for (const p of new Set([...expected.keys(), ...actual.keys()])) {
    if (p === '.') continue;
    if (!sameEntry(expected.get(p), actual.get(p))) bad.push(displayPath(p));
  }
  return bad.sort();
}

export interface MergeEtcOptions {
  /** The vendor /etc the running system came from; undefined if unknown (every difference counts as local). */
  baseDir?: string;
  localDir: string;
  newDir: string;
  /** Starts as a copy of newDir (may be newDir itself: then it is written in place). */
  resultDir: string;
  dryRun?: boolean;
  /** Rescan the result and check it equals the plan's outcome (throws ETC_MERGE if not). */
  verify?: boolean;
}

export interface MergeEtcResult {
  plan: EtcPlan;
  report: EtcMergeReport;
  /** Digest per byte-string path of the local /etc the merge was computed from (for a later re-merge). */
  localDigests: Record<string, string>;
}

/** Scans the three trees, plans and (unless dryRun) applies the merge. */
export async function mergeEtc(sys: System, o: MergeEtcOptions): Promise<MergeEtcResult> {
  const [base, local, next] = await Promise.all([o.baseDir ? scanEtc(o.baseDir, { sys }) : new Map<string, EtcEntry>(), scanEtc(o.localDir, { sys }), scanEtc(o.newDir, { sys })]);
  const plan = await planEtcMerge(base, local, next, dirContents({ base: o.baseDir ?? '/nonexistent', local: o.localDir, new: o.newDir }));
  const localDigests = treeDigests(local);
  if (o.dryRun) return { plan, report: planReport(plan), localDigests };
  const report = await applyEtcPlan(sys, plan, { local: o.localDir, next: o.newDir, result: o.resultDir });
  if (o.verify) {
    const bad = verifyEtcResult(planResult(plan, next), await scanEtc(o.resultDir, { sys }));
    if (bad.length) {
      throw new TiuError('ETC_MERGE', `the merged /etc differs from the plan at ${bad.length} path(s): ${bad.slice(0, 5).join(', ')}`, { details: { paths: bad } });
    }
  }
  return { plan, report, localDigests };
}

/** The local changes of `localDir` against the vendor's `baseDir` (`tiu etc diff`). */
export async function etcDiff(sys: System, baseDir: string, localDir: string): Promise<EtcChange[]> {
  const [base, local] = await Promise.all([scanEtc(baseDir, { sys }), scanEtc(localDir, { sys })]);
  return diffTrees(base, local);
}
