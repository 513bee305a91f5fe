/**
 * Hostile paths at the module level, on real directories (no mocks): the resolver refuses
 * symlinks, `..`, mount points; the apply executor neither writes nor reads through them; state
 * files are read bounded and regular only. Every case checks that a canary tree outside is
 * byte-for-byte unchanged.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { testSystem } from '../helpers/env.ts';
import { describeTree } from '../helpers/archive.ts';
import { SafeRoot, pathComponents } from '../../src/core/safepath.ts';
import { readBounded } from '../../src/core/boundedread.ts';
import { executePlan, SMALL_FILE } from '../../src/tiu/apply/execute.ts';
import type { ApplyPlan } from '../../src/tiu/apply/plan.ts';
import type { IndexEntry } from '../../src/core/fileindex/types.ts';
import { TiuError } from '../../src/core/errors.ts';
import { checkDowngrade } from '../../src/tiu/device/downgrade.ts';
import { ensurePrivateDir } from '../../src/tiu/rundir.ts';
import { readInfoFile } from '../../src/snapshot/backend-btrfs.ts';
import { recordImage } from '../../src/tiu/device/extract.ts';
import { snapshotVendorEtc } from '../../src/tiu/device/etc.ts';
import { prepareBoot } from '../../src/tiu/device/boot.ts';
import type { Manifest } from '../../src/tiu/archive/manifest.ts';
import { parseIndexLine } from '../../src/core/fileindex/format.ts';

const sys = testSystem();
let work: string;
let canary: string;
let target: string;
let image: string;
let canaryBefore: Awaited<ReturnType<typeof describeTree>>;

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-hostile-'));
  canary = join(work, 'canary');
  target = join(work, 'target');
  image = join(work, 'image');
  await mkdir(join(canary, 'sub'), { recursive: true });
  await writeFile(join(canary, 'secret'), 'host secret\n');
  await writeFile(join(canary, 'sub/file'), 'host file\n');
  await mkdir(target);
  await mkdir(image);
  canaryBefore = await describeTree(canary);
});

afterEach(async () => {
  expect(await describeTree(canary)).toEqual(canaryBefore);
  await sys.run('umount', ['-l', join(target, 'bound')], { allowFailure: true });
  await rm(work, { recursive: true, force: true });
});

async function rejects(p: Promise<unknown>, code: string, text: RegExp): Promise<TiuError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e, 'must fail').toBeInstanceOf(TiuError);
  expect((e as TiuError).code).toBe(code);
  expect((e as TiuError).message).toMatch(text);
  return e as TiuError;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const file = (path: string, content: string, more: Partial<IndexEntry> = {}): IndexEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000, size: content.length, sha256: sha(content), ...more });
const dir = (path: string): IndexEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000 });
function plan(changes: ApplyPlan['changes'], removals: ApplyPlan['removals'] = []): ApplyPlan {
  return { removals, changes, dirTimes: [], stats: { unchanged: 0, written: 0, writtenBytes: 0, linked: 0, created: 0, metaOnly: 0, removed: 0 } as ApplyPlan['stats'] };
}

describe('the resolver', () => {
  it("refuses '..' and absolute paths before touching anything (pure)", () => {
    expect(() => pathComponents('usr/../../etc')).toThrow(/'\.\.' component/);
    expect(() => pathComponents('/etc/passwd')).toThrow(/absolute/);
    expect(pathComponents('./usr//lib/').map(String)).toEqual(['usr', 'lib']);
  });

  it('refuses a symlinked directory on the way, absolute or relative, and names it', async () => {
    await mkdir(join(target, 'usr'));
    await symlink(canary, join(target, 'usr/lib'));
    await symlink('../../canary', join(target, 'rel'));
    await using root = await SafeRoot.open(target, { what: 'the new snapshot' });
    await rejects(root.at('usr/lib/secret', (p) => readFile(p)), 'PATH_UNSAFE', /\/usr\/lib in the new snapshot is a symlink \(to .*canary\)/);
    await rejects(root.writeAtomic('usr/lib/tiu/image/manifest', 'x', { dirMode: 0o755 }), 'PATH_UNSAFE', /usr\/lib .*symlink/);
    await rejects(root.dir('rel/sub', async () => {}), 'PATH_UNSAFE', /\/rel .*symlink/);
  });

  it('refuses a bind mount inside the root (no crossing into another mount)', async () => {
    await mkdir(join(target, 'bound'));
    await sys.run('mount', ['--bind', canary, join(target, 'bound')]);
    await using root = await SafeRoot.open(target, { what: 'the new snapshot' });
    await rejects(root.writeAtomic('bound/planted', 'x'), 'PATH_UNSAFE', /\/bound .*mount point/);
  });

  it('a directory swapped for a symlink after being cached is not followed by new lookups', async () => {
    await mkdir(join(target, 'd'));
    await using root = await SafeRoot.open(target, { what: 'the new snapshot' });
    await root.writeAtomic('d/one', 'ok');
    await rm(join(target, 'd'), { recursive: true });
    root.forget('d');
    await symlink(canary, join(target, 'd'));
    await rejects(root.writeAtomic('d/two', 'x'), 'PATH_UNSAFE', /\/d .*symlink/);
  });

  it('a rename race (directory swapped for a symlink under a held descriptor) cannot redirect a write', async () => {
    await mkdir(join(target, 'd'));
    await using root = await SafeRoot.open(target, { what: 'the new snapshot' });
    await root.writeAtomic('d/one', 'ok');
    // Swapped behind tiu's back, without telling the resolver: the held descriptor still names
    // the old (now unlinked) directory, so the write fails inside it, never in the canary.
    await rm(join(target, 'd'), { recursive: true });
    await symlink(canary, join(target, 'd'));
    const e = await root.writeAtomic('d/two', 'x').then(() => undefined, (x: NodeJS.ErrnoException) => x);
    expect(e?.code).toBe('ENOENT');
  });
});

describe('the apply executor', () => {
  it('a failed write stops the others and returns only when no write is left in flight (the caller then discards the snapshot)', async () => {
    // A large file streams slowly from the content source; the next file's content fails at once.
    const big = 'x'.repeat(SMALL_FILE + 1);
    let streamed = false;
    let others = 0;
    const content = {
      async open(e: IndexEntry): Promise<AsyncIterable<Uint8Array>> {
        if (e.path === 'bad') throw new TiuError('DELTA_CORRUPT', 'broken content');
        if (e.path !== 'big') others++;
        return (async function* () {
          for (let i = 0; i < big.length; i += 4096) {
            await new Promise((r) => setTimeout(r, 2));
            yield Buffer.from(big.slice(i, i + 4096));
          }
          streamed = true;
        })();
      },
    };
    const files = [file('big', big), file('bad', 'bad'), ...Array.from({ length: 8 }, (_, i) => file(`later${i}`, big))];
    const p = executePlan(plan(files.map((entry) => ({ op: 'write', entry }))), { sys, imageRoot: image, targetRoot: target, content, concurrency: 2 });
    await rejects(p, 'DELTA_CORRUPT', /broken content/);
    expect(streamed, 'the write in flight had finished').toBe(true);
    expect(others, 'no file was started after the failure').toBe(0);
  });

  it('does not write through a symlink the base left where the image has a directory', async () => {
    await symlink(canary, join(target, 'usr'));
    await mkdir(join(image, 'usr'));
    await writeFile(join(image, 'usr/secret'), 'evil');
    await rejects(executePlan(plan([{ op: 'write', entry: file('usr/secret', 'evil') }]), { sys, imageRoot: image, targetRoot: target }), 'PATH_UNSAFE', /\/usr in the new snapshot is a symlink/);
    await rejects(executePlan(plan([{ op: 'mkdir', entry: dir('usr/sub2') }]), { sys, imageRoot: image, targetRoot: target }), 'PATH_UNSAFE', /\/usr .*symlink/);
  });

  it('does not remove through a symlinked parent (rm -rf outside)', async () => {
    await symlink(canary, join(target, 'gone'));
    await rejects(executePlan(plan([], [{ op: 'remove', path: 'gone/sub', type: 'dir' }]), { sys, imageRoot: image, targetRoot: target }), 'PATH_UNSAFE', /\/gone .*symlink/);
  });

  it('never reads image content through an absolute symlink (file or parent directory)', async () => {
    const content = 'host secret\n';
    await symlink(join(canary, 'secret'), join(image, 'passwd'));
    await rejects(executePlan(plan([{ op: 'write', entry: file('passwd', content) }]), { sys, imageRoot: image, targetRoot: target }), 'ARCHIVE_INDEX', /\/passwd in the image is a symlink/);
    await symlink(canary, join(image, 'etc'));
    await mkdir(join(target, 'etc'));
    await rejects(executePlan(plan([{ op: 'write', entry: file('etc/secret', content) }]), { sys, imageRoot: image, targetRoot: target }), 'PATH_UNSAFE', /\/etc in the image is a symlink/);
    expect(await describeTree(target)).toSatisfy((t: Map<string, unknown>) => !t.has('passwd') && !t.has('etc/secret'));
  });

  it('small files (read whole) and large ones (streamed) get the same checks: symlink, FIFO, device, wrong content, in place over a symlink', async () => {
    for (const size of [12, SMALL_FILE, SMALL_FILE + 1, 3 * SMALL_FILE]) {
      const content = 'y'.repeat(size);
      const name = `f${size}`;
      const write = (more: Partial<IndexEntry> = {}, inPlace?: boolean) => executePlan(plan([{ op: 'write', entry: file(name, content, more), inPlace }]), { sys, imageRoot: image, targetRoot: target });
      await symlink(join(canary, 'secret'), join(image, name));
      await rejects(write(), 'ARCHIVE_INDEX', new RegExp(`/${name} in the image is a symlink`));
      await rm(join(image, name));
      // A FIFO or a device where the index says file: refused at once (no wait for a writer).
      await sys.run('mkfifo', [join(image, name)]);
      await rejects(write(), 'ARCHIVE_INDEX', new RegExp(`/${name} in the image is not a regular file`));
      await rm(join(image, name));
      await sys.run('mknod', [join(image, name), 'c', '1', '5']);
      await rejects(write(), 'ARCHIVE_INDEX', new RegExp(`/${name} in the image is not a regular file`));
      await rm(join(image, name));
      // Content other than the signed index's (one byte changed, or one byte more): nothing kept.
      await writeFile(join(image, name), 'z' + content.slice(1));
      await rejects(write(), 'ARCHIVE_VERITY', new RegExp(`/${name} in the image does not match the signed index`));
      await rm(join(target, name), { force: true });
      await writeFile(join(image, name), content + 'y');
      await rejects(write(), 'ARCHIVE_VERITY', new RegExp(`/${name} in the image does not match the signed index`));
      // A small file is checked before anything is created (a streamed one is checked at its end;
      // either way the caller discards the whole snapshot).
      if (size < SMALL_FILE) expect((await describeTree(target)).has(name), `${size}`).toBe(false);
      await rm(join(target, name), { force: true });
      // In place over a symlink the base left: the link is replaced, its target untouched.
      await writeFile(join(image, name), content);
      await symlink(join(canary, 'secret'), join(target, name));
      await write({}, true);
      expect(await readFile(join(target, name), 'utf8')).toBe(content);
      // In place over a longer file: rewritten and cut to the new size.
      await writeFile(join(target, name), content + 'tail to cut');
      await write({}, true);
      expect(await readFile(join(target, name), 'utf8')).toBe(content);
      await rm(join(target, name));
    }
  });

  it("a hardlink entry cannot name a file outside ('..' in the link target)", async () => {
    await rejects(executePlan(plan([{ op: 'link', entry: file('x', '', { hardlink: '../canary/secret' }) }]), { sys, imageRoot: image, targetRoot: target }), 'PATH_UNSAFE', /'\.\.'/);
    // A hardlink to a symlink that points outside links the symlink, never the outside file
    // (the canary's link count is checked after each test).
    await symlink(join(canary, 'secret'), join(target, 'evil'));
    await executePlan(plan([{ op: 'link', entry: file('x', '', { hardlink: 'evil' }) }]), { sys, imageRoot: image, targetRoot: target });
    expect((await describeTree(target)).get('x')?.type).toBe('symlink');
  });

  it('the index parser refuses uid/gid 4294967295 (at create and on the device)', () => {
    const line = (uid: number, gid: number) => JSON.stringify({ path: 'f', type: 'file', mode: 420, uid, gid, mtime: 1, size: 0, sha256: sha('') });
    expect(() => parseIndexLine(line(4294967295, 0), 2)).toThrow(/4294967295 means "unchanged" to chown/);
    expect(() => parseIndexLine(line(0, 4294967295), 2)).toThrow(/0\.\.4294967294/);
    expect(parseIndexLine(line(4294967294, 0), 2).uid).toBe(4294967294);
  });

  it('refuses owner id 4294967295 (chown would silently leave the owner unchanged)', async () => {
    await writeFile(join(image, 'f'), 'x');
    await rejects(executePlan(plan([{ op: 'write', entry: file('f', 'x', { uid: 4294967295 }) }]), { sys, imageRoot: image, targetRoot: target }), 'ARCHIVE_INDEX', /owner id 4294967295/);
    await rejects(executePlan(plan([{ op: 'mkdir', entry: { ...dir('d'), gid: 4294967295 } }]), { sys, imageRoot: image, targetRoot: target }), 'ARCHIVE_INDEX', /owner id 4294967295/);
  });

  it('creates FIFOs and device nodes in their own directory (a nested subvolume-safe rename)', async () => {
    await mkdir(join(target, 'etc'));
    await executePlan(plan([
      { op: 'mknod', entry: { path: 'etc/fifo', type: 'fifo', mode: 0o600, uid: 0, gid: 0, mtime: 1_700_000_000 } },
      { op: 'mknod', entry: { path: 'etc/null', type: 'chr', mode: 0o666, uid: 0, gid: 0, mtime: 1_700_000_000, rdev: { major: 1, minor: 3 } } },
    ]), { sys, imageRoot: image, targetRoot: target });
    const t = await describeTree(target);
    expect(t.get('etc/fifo')?.type).toBe('fifo');
    expect(t.get('etc/null')?.type).toBe('chr');
    expect([...t.keys()].filter((k) => k.includes('.tiu-node'))).toEqual([]);
  });
});

describe("tiu's own state in the new snapshot", () => {
  it('recordImage and the vendor /etc copy refuse a symlinked usr/lib or state directory', async () => {
    await mkdir(join(image, 'usr/lib/tiu/image'), { recursive: true });
    await writeFile(join(image, 'usr/lib/tiu/image/index.jsonl'), 'index');
    await mkdir(join(target, 'usr'));
    await symlink(canary, join(target, 'usr/lib'));
    await rejects(recordImage(target, image, Buffer.from('{}')), 'PATH_UNSAFE', /\/usr\/lib in the new snapshot is a symlink/);
    await rm(join(target, 'usr/lib'));
    await mkdir(join(target, 'usr/lib'));
    await symlink(canary, join(target, 'usr/lib/tiu'));
    await mkdir(join(target, 'etc'));
    await rejects(snapshotVendorEtc(sys, target), 'PATH_UNSAFE', /\/usr\/lib\/tiu in the new snapshot is a symlink/);
    await rm(join(target, 'etc'), { recursive: true });
    await symlink(canary, join(target, 'etc'));
    await rejects(snapshotVendorEtc(sys, target), 'PATH_UNSAFE', /\/etc in the new snapshot is a symlink/);
  });
});

describe('/boot of the new snapshot', () => {
  it('a /boot or /boot/grub2 symlink to a host directory is refused before initrds or grub.cfg are written', async () => {
    await symlink(canary, join(target, 'boot'));
    const o = { snapshotDir: target, num: 1, manifest: {} as Manifest };
    const dev = { sys, bootLocation: async () => ({ kind: 'none' as const }) };
    await rejects(prepareBoot(dev, o), 'PATH_UNSAFE', /\/boot in the new snapshot is a symlink/);
    await rm(join(target, 'boot'));
    await mkdir(join(target, 'boot'));
    await symlink('/boot', join(target, 'boot/grub2'));
    await rejects(prepareBoot(dev, o), 'PATH_UNSAFE', /\/boot\/grub2 in the new snapshot is a symlink/);
  });
});

describe('bounded reads of device state', () => {
  it('a FIFO as info.xml fails at once with a clear message (does not hang)', async () => {
    const snap = join(target, '1');
    await mkdir(snap);
    await sys.run('mkfifo', [join(snap, 'info.xml')]);
    const t0 = Date.now();
    await rejects(readInfoFile(snap, 1), 'FILE_INVALID', /info\.xml of snapshot 1 is a FIFO, not a regular file/);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a huge or symlinked state file is refused before it is read', async () => {
    await truncate(join(target, 'big'), 0).catch(() => writeFile(join(target, 'big'), ''));
    await truncate(join(target, 'big'), 1 << 30);
    await rejects(readBounded(join(target, 'big'), { max: 64 * 1024, what: 'info.xml of snapshot 3' }), 'FILE_INVALID', /1073741824 bytes, more than the 65536/);
    await symlink(join(canary, 'secret'), join(target, 'manifest'));
    await rejects(readBounded(join(target, 'manifest'), { max: 1024, what: 'the recorded manifest' }), 'FILE_INVALID', /is a symlink/);
    await using root = await SafeRoot.open(target, { what: 'the base snapshot' });
    await symlink(canary, join(target, 'state'));
    await rejects(root.readBounded('state/secret', 1024), 'PATH_UNSAFE', /\/state in the base snapshot is a symlink/);
  });

  it('a state file is read whole, however its size compares with the limit or changes', async () => {
    // (the buffer is sized by fstat, not by the limit: every size around it, and a file whose
    // size fstat does not know, which procfs reports as 0)
    for (const size of [0, 1, 100, 4095, 4096, 4097, 65535, 65536]) {
      const content = Buffer.alloc(size, 0x61 + (size % 26));
      await writeFile(join(target, 'state'), content);
      expect((await readBounded(join(target, 'state'), { max: 65536, what: 'a state file' })).equals(content)).toBe(true);
    }
    // A small file under a large limit holds no limit-sized buffer (the result is a view of it:
    // of Node's shared pool here, 64 KiB on Node 24, against the whole 1 MiB + 1 before).
    await writeFile(join(target, 'state'), 'x'.repeat(300));
    expect((await readBounded(join(target, 'state'), { max: 1 << 20, what: 'a state file' })).buffer.byteLength).toBeLessThanOrEqual(Buffer.poolSize);
    await writeFile(join(target, 'state'), Buffer.alloc(65537));
    await rejects(readBounded(join(target, 'state'), { max: 65536, what: 'a state file' }), 'FILE_INVALID', /65537 bytes, more than the 65536/);
    const status = await readBounded('/proc/self/status', { max: 1 << 20, what: 'a procfs file' });
    expect(status.toString()).toMatch(/^Name:/);
    expect(status.toString()).toMatch(/\nPid:\s+\d+\n/);
    await rejects(readBounded('/proc/self/status', { max: 16, what: 'a procfs file' }), 'FILE_INVALID', /grew beyond 16 bytes while being read/);
  });

  it('run directories must be real, private directories', async () => {
    await symlink(canary, join(work, 'run-link'));
    await rejects(ensurePrivateDir(join(work, 'run-link')), 'PATH_UNSAFE', /is a symlink/);
    await mkdir(join(work, 'open'), { mode: 0o777 });
    await sys.run('chmod', ['0777', join(work, 'open')]);
    await rejects(ensurePrivateDir(join(work, 'open')), 'PATH_UNSAFE', /writable by group or others/);
    await ensurePrivateDir(join(work, 'fresh/run'));
  });
});

describe('downgrades (pure rule)', () => {
  it('refuses a lower version, allows equal, higher, or with the override', () => {
    expect(() => checkDowngrade('1.9', '1.10', 3, false)).toThrow(/refusing a downgrade: the image's version 1.9 is older than snapshot 3's 1.10/);
    expect(() => checkDowngrade('2.0~rc1', '2.0', 3, false)).toThrow(TiuError);
    expect(() => checkDowngrade('latest', '2.0', 3, false)).toThrow(/cannot be ordered/);
    checkDowngrade('2.0', '2.0', 3, false);
    checkDowngrade('4-no-init', '3-bad-health', 3, false);
    checkDowngrade('1.0', '2.0', 3, true);
    checkDowngrade('1.0', undefined, 3, false);
  });
});
