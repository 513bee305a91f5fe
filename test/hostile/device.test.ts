/**
 * Hostile images and device state on real loop-mounted btrfs, through the real CLI: archives
 * signed by the test CA whose trees carry symlinks where tiu writes, downgrades, planted run
 * directories, FIFO/huge/symlinked state, device nodes in /etc, xattrs btrfs cannot store and
 * immutable files. Each refusal asserts its code and a message naming the problem, and that
 * nothing outside the device (a canary tree) nor the running snapshot changed and the default
 * did not move.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { testSystem } from '../helpers/env.ts';
import { describeTree } from '../helpers/archive.ts';
import { cli, installedDevice, type InstalledDevice } from '../helpers/device.ts';
import { createArchive } from '../../src/tiu/archive/create.ts';
import { generateDevKeys, type DevKeys } from '../../src/tiu/sign/keygen.ts';
import { DEFAULT_EXCLUDES } from '../../src/tiu/config.ts';
import { ERROR_CODES, type ErrorCode } from '../../src/core/errors.ts';
import { getDefaultSubvolume } from '../../src/snapshot/btrfs.ts';
import { lockFileFor } from '../../src/snapshot/lock.ts';
import { MANIFEST_COPY_PATH } from '../../src/tiu/device/paths.ts';

const sys = testSystem();
let work: string;
let keys: DevKeys;
let canary: string;
let base: string;
let dev: InstalledDevice;

/** A small root tree; `mutate` makes it hostile. */
async function tree(dir: string, mutate?: (t: string) => Promise<void>): Promise<string> {
  await rm(dir, { recursive: true, force: true });
  for (const d of ['usr/bin', 'usr/lib', 'usr/share/t', 'etc', 'var', 'boot', 'home', 'root', 'opt', 'srv']) await mkdir(join(dir, d), { recursive: true });
  await writeFile(join(dir, 'usr/lib/os-release'), 'NAME="hostile"\nID=hostile\n');
  await symlink('../usr/lib/os-release', join(dir, 'etc/os-release'));
  await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await writeFile(join(dir, 'etc/hostname'), 'hostile\n');
  await writeFile(join(dir, 'usr/bin/tool'), '#!/bin/sh\necho 1\n');
  await chmod(join(dir, 'usr/bin/tool'), 0o755);
  await writeFile(join(dir, 'usr/share/t/data'), 'data\n');
  await mutate?.(dir);
  return dir;
}

let counter = 0;
/** A signed archive of `tree` at `version`. */
async function archive(t: string, version: string): Promise<string> {
  const out = join(work, `a${counter++}-${version}.tiu`);
  await createArchive(sys, {
    source: t, output: out, keyPem: await readFile(keys.signingKey, 'utf8'), certPem: await readFile(keys.signingCert, 'utf8'),
    compatible: 'hostile-x86_64', version, compression: 'zstd', blockSize: 131072, exclude: DEFAULT_EXCLUDES, sourceDateEpoch: 1_700_000_000,
  });
  return out;
}

async function hostile(version: string, mutate: (t: string) => Promise<void>): Promise<string> {
  return archive(await tree(join(work, `tree-${counter}`), mutate), version);
}


/** What must not change when tiu refuses: the canary, the running snapshot, the default, the snapshot list. */
async function state(d: InstalledDevice) {
  const snaps = (await readdir(join(d.root, '.snapshots'))).filter((n) => /^\d+$/.test(n)).sort();
  return {
    canary: await describeTree(canary),
    running: await describeTree(join(d.root, '.snapshots/1/snapshot')),
    default: (await getDefaultSubvolume(sys, d.root)).path,
    snaps,
  };
}

/** Runs tiu, expects refusal with `code` and a message matching `text`, and no change. */
async function refused(d: InstalledDevice, args: string[], code: ErrorCode, text: RegExp, env?: Record<string, string>): Promise<string> {
  const before = await state(d);
  const r = await cli([...args, '--root', d.root, '--keyring', keys.keyring], { env, timeoutMs: 120_000 });
  expect(r.stderr).toMatch(text);
  expect(r.stderr).toContain(`[${code}]`);
  expect(r.exitCode, r.stderr).toBe(ERROR_CODES[code].exit);
  expect(r.stderr.trim().split('\n').filter((l) => l.startsWith('tiu: error:'))).toHaveLength(1);
  const after = await state(d);
  expect(after.canary).toEqual(before.canary);
  expect(after.running).toEqual(before.running);
  expect(after.default).toBe(before.default);
  expect(after.snaps).toEqual(before.snaps);
  return r.stderr;
}

/** Makes snapshot 1 writable for `fn` (to plant hostile state in it), then read-only again. */
async function inBase<T>(d: InstalledDevice, fn: (snap: string) => Promise<T>): Promise<T> {
  const snap = join(d.root, '.snapshots/1/snapshot');
  await sys.run('btrfs', ['property', 'set', '-ts', snap, 'ro', 'false']);
  try {
    return await fn(snap);
  } finally {
    await sys.run('btrfs', ['property', 'set', '-ts', snap, 'ro', 'true']);
  }
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-hostile-dev-'));
  keys = await generateDevKeys({ outDir: join(work, 'keys') });
  canary = join(work, 'canary');
  await mkdir(join(canary, 'image'), { recursive: true });
  await writeFile(join(canary, 'secret'), 'host secret\n');
  await writeFile(join(canary, 'image/manifest'), 'not a manifest');
  base = await archive(await tree(join(work, 'base')), '2.0');
  dev = await installedDevice(sys, base, await readFile(keys.keyring, 'utf8'));
}, 300_000);

afterAll(async () => {
  await dev?.[Symbol.asyncDispose]();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('writes outside the new snapshot through symlinks in the image', () => {
  it('tiu create refuses a tree whose tiu state paths exist (usr/lib/tiu/image as a symlink)', async () => {
    const t = await tree(join(work, 'tree-state'), async (t) => {
      await mkdir(join(t, 'usr/lib/tiu'));
      await symlink(canary, join(t, 'usr/lib/tiu/image'));
    });
    const r = await cli(['create', t, '-o', join(work, 'state.tiu'), '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'x', '--version', '1']);
    expect(r.exitCode).toBe(ERROR_CODES.TREE_INVALID.exit);
    expect(r.stderr).toMatch(/the tree contains \/usr\/lib\/tiu\/image, which tiu writes on the device itself/);
  });

  it('a vendor-etc symlink left in the base is neither deleted through nor read (rm -rf outside)', async () => {
    const a = await hostile('2.1', async () => {});
    await inBase(dev, async (snap) => {
      // (beside it: the copy is a read-only nested subvolume, which only a rename can move)
      await sys.run('mv', [join(snap, 'usr/lib/tiu/vendor-etc'), join(snap, 'usr/lib/tiu/.saved-vendor-etc')]);
      await symlink(canary, join(snap, 'usr/lib/tiu/vendor-etc'));
    });
    try {
      await refused(dev, ['extract', a], 'PATH_UNSAFE', /\/usr\/lib\/tiu\/vendor-etc in the base snapshot is a symlink/);
    } finally {
      await inBase(dev, async (snap) => {
        await rm(join(snap, 'usr/lib/tiu/vendor-etc'));
        await sys.run('mv', [join(snap, 'usr/lib/tiu/.saved-vendor-etc'), join(snap, 'usr/lib/tiu/vendor-etc')]);
      });
    }
  });

  it("etc a symlink to the RUNNING system's /etc: the merge never writes there", async () => {
    const a = await hostile('2.1', async (t) => {
      await rm(join(t, 'etc'), { recursive: true });
      await symlink(join(dev.root, 'etc'), join(t, 'etc'));
    });
    await refused(dev, ['extract', a], 'PATH_UNSAFE', /\/etc in the new image is a symlink/);
  });
});

describe("tiu's run directory", () => {
  it('a symlink planted as the lock file or as the image mount directory is refused', async () => {
    const a = await hostile('2.1', async () => {});
    const run1 = join(work, 'run1');
    await mkdir(run1, { mode: 0o755 });
    const { realpath } = await import('node:fs/promises');
    await symlink(join(canary, 'secret'), lockFileFor(await realpath(dev.root), run1));
    await refused(dev, ['extract', a], 'PATH_UNSAFE', /lock file .* is a symlink/, { TIU_RUN_DIR: run1 });
    const run2 = join(work, 'run2');
    await mkdir(run2, { mode: 0o755 });
    await symlink(canary, join(run2, 'mnt'));
    await refused(dev, ['extract', a], 'PATH_UNSAFE', /run directory .*mnt is a symlink/, { TIU_RUN_DIR: run2 });
  });

  it('a world-writable run directory is refused', async () => {
    const a = await hostile('2.1', async () => {});
    const run3 = join(work, 'run3');
    await mkdir(run3);
    await chmod(run3, 0o777);
    await refused(dev, ['extract', a], 'PATH_UNSAFE', /writable by group or others/, { TIU_RUN_DIR: run3 });
  });
});

describe('downgrades', () => {
  it('an older, validly signed image is refused (extract and update); same version is not a downgrade', async () => {
    const old = await archive(await tree(join(work, 'old')), '1.9');
    await refused(dev, ['extract', old], 'DOWNGRADE', /refusing a downgrade: the image's version 1\.9 is older than snapshot 1's 2\.0; pass --allow-downgrade/);
    await refused(dev, ['update', '--source', old], 'DOWNGRADE', /version 1\.9 is older than snapshot 1's 2\.0/);
    const rc = await archive(await tree(join(work, 'rc')), '2.0~rc1');
    await refused(dev, ['extract', rc, '--dry-run'], 'DOWNGRADE', /2\.0~rc1 is older/);
  });

  it('tiu create refuses a version that cannot be ordered', async () => {
    for (const v of ['latest', 'v2']) {
      const r = await cli(['create', join(work, 'base'), '-o', join(work, `bad-${v}.tiu`), '--key', keys.signingKey, '--cert', keys.signingCert, '--compatible', 'x', '--version', v]);
      expect(r.exitCode).toBe(ERROR_CODES.USAGE.exit);
      expect(r.stderr).toMatch(new RegExp(`version '${v}' cannot be ordered: it must start with a digit`));
    }
  });
});

describe('hostile device state', () => {
  it('a symlinked or FIFO state file in the base snapshot is reported, not followed or waited on', async () => {
    const a = await hostile('2.1', async () => {});
    await inBase(dev, async (snap) => {
      await sys.run('cp', ['-a', join(snap, 'usr/lib/tiu/image'), join(work, 'saved-state')]);
      await rm(join(snap, 'usr/lib/tiu/image'), { recursive: true });
      await symlink(join(canary, 'image'), join(snap, 'usr/lib/tiu/image'));
    });
    try {
        await refused(dev, ['extract', a], 'PATH_UNSAFE', /\/usr\/lib\/tiu\/image in the base snapshot is a symlink/);
      await inBase(dev, async (snap) => {
        await rm(join(snap, 'usr/lib/tiu/image'));
        await mkdir(join(snap, 'usr/lib/tiu/image'));
        await sys.run('mkfifo', [join(snap, MANIFEST_COPY_PATH)]);
      });
      await refused(dev, ['extract', a], 'FILE_INVALID', /\/usr\/lib\/tiu\/image\/manifest\.json in the base snapshot is a FIFO, not a regular file/);
    } finally {
      await inBase(dev, async (snap) => {
        await rm(join(snap, 'usr/lib/tiu/image'), { recursive: true, force: true });
        await sys.run('cp', ['-a', join(work, 'saved-state'), join(snap, 'usr/lib/tiu/image')]);
      });
    }
  });

  it('a FIFO or a huge info.xml does not hang tiu status', async () => {
    const info = join(dev.root, '.snapshots/1/info.xml');
    const saved = await readFile(info);
    try {
      await rm(info);
      await sys.run('mkfifo', [info]);
      let r = await cli(['status', '--root', dev.root], { timeoutMs: 30_000 });
      expect(r.stdout + r.stderr).toMatch(/info\.xml of snapshot 1 is a FIFO/);
      await rm(info);
      await writeFile(info, '');
      await truncate(info, 2 ** 31);
      r = await cli(['status', '--root', dev.root], { timeoutMs: 30_000 });
      expect(r.stdout + r.stderr).toMatch(/info\.xml of snapshot 1 is 2147483648 bytes/);
    } finally {
      await rm(info, { force: true });
      await writeFile(info, saved);
    }
  });
});

describe('correctness', () => {
  it('an xattr btrfs cannot store is reported as such, not as a full disk', async () => {
    // Built on tmpfs, which stores a 20 kB xattr value; btrfs keeps an xattr within one tree node.
    const shm = await mkdtemp('/dev/shm/tiu-hostile-');
    try {
      for (const name of ['user.big', 'trusted.big']) {
        const t = await tree(join(shm, 'tree'), async (t) => {
          await writeFile(join(t, 'usr/share/t/big'), 'x');
          await sys.run('setfattr', ['-n', name, '-v', `0s${Buffer.alloc(20_000, 1).toString('base64')}`, join(t, 'usr/share/t/big')]);
        });
        const a = await archive(t, '2.1');
        const err = await refused(dev, ['extract', a], 'XATTR_UNSUPPORTED', new RegExp(`cannot store an extended attribute of the image: ${name.replace('.', '\\.')} of /usr/share/t/big is 20000 bytes`));
        expect(err).not.toMatch(/no space left/i);
      }
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('FIFOs and device nodes in the image /etc are created in place (install and update)', async () => {
    const nodes = async (t: string) => {
      await sys.run('mkfifo', [join(t, 'etc/initctl')]);
      await sys.run('mknod', [join(t, 'etc/null'), 'c', '1', '3']);
    };
    await using d = await installedDevice(sys, await hostile('2.0', nodes), await readFile(keys.keyring, 'utf8'));
    const t1 = await describeTree(join(d.root, '.snapshots/1/snapshot/etc'));
    expect(t1.get('initctl')?.type).toBe('fifo');
    expect(t1.get('null')?.type).toBe('chr');
    const r = await cli(['extract', await hostile('2.1', async (t) => {
      await nodes(t);
      await sys.run('mknod', [join(t, 'etc/zero'), 'c', '1', '5']);
    }), '--root', d.root, '--keyring', keys.keyring]);
    expect(r.exitCode, r.stderr).toBe(0);
    const t2 = await describeTree(join(d.root, '.snapshots/2/snapshot/etc'));
    expect(t2.get('zero')?.type).toBe('chr');
    expect([...t2.keys()].filter((k) => k.includes('.tiu-'))).toEqual([]);
  });

  it('an immutable file or directory on the device is named with chattr -i, not "run as root"', async () => {
    const a = await hostile('2.1', async (t) => {
      await writeFile(join(t, 'usr/bin/tool'), '#!/bin/sh\necho 2\n');
      await utimes(join(t, 'usr/bin/tool'), 1_700_000_500, 1_700_000_500);
      await writeFile(join(t, 'usr/share/t/new'), 'new\n');
    });
    await inBase(dev, (snap) => sys.run('chattr', ['+i', join(snap, 'usr/bin/tool')]));
    try {
      await refused(dev, ['extract', a], 'IMMUTABLE', /\/usr\/bin\/tool is immutable \(chattr \+i\).*chattr -i \/usr\/bin\/tool/);
    } finally {
      await inBase(dev, (snap) => sys.run('chattr', ['-i', join(snap, 'usr/bin/tool')]));
    }
    await inBase(dev, (snap) => sys.run('chattr', ['+i', join(snap, 'usr/share/t')]));
    try {
      await refused(dev, ['extract', a], 'IMMUTABLE', /\/usr\/share\/t is immutable/);
    } finally {
      await inBase(dev, (snap) => sys.run('chattr', ['-i', join(snap, 'usr/share/t')]));
    }
    // A local /etc file the admin made immutable on the running system (the new /etc starts as
    // a snapshot of it, so the flag comes along).
    const b = await hostile('2.1', async (t) => writeFile(join(t, 'etc/hostname'), 'renamed\n'));
    await sys.run('chattr', ['+i', join(dev.root, 'etc/hostname')]);
    try {
      await refused(dev, ['extract', b], 'IMMUTABLE', /\/etc\/hostname is immutable \(chattr \+i\), so tiu cannot change it; run chattr -i \/etc\/hostname/);
    } finally {
      await sys.run('chattr', ['-i', join(dev.root, 'etc/hostname')]);
    }
  });
});

describe('accepted (last: these move the default)', () => {
  it('same version is not a downgrade; --allow-downgrade installs an older one; a planted lock-info symlink is not written through', async () => {
    const run4 = join(work, 'run4');
    await mkdir(run4, { mode: 0o755 });
    const { realpath } = await import('node:fs/promises');
    const info = lockFileFor(await realpath(dev.root), run4).replace(/\.lock$/, '.info');
    await symlink(join(canary, 'secret'), info);
    const canaryBefore = await describeTree(canary);
    const same = await archive(await tree(join(work, 'same')), '2.0');
    let r = await cli(['extract', same, '--root', dev.root, '--keyring', keys.keyring], { env: { TIU_RUN_DIR: run4 } });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await describeTree(canary)).toEqual(canaryBefore);
    expect(await readFile(join(canary, 'secret'), 'utf8')).toBe('host secret\n');
    const old = await archive(await tree(join(work, 'old2')), '1.9');
    r = await cli(['extract', old, '--allow-downgrade', '--root', dev.root, '--keyring', keys.keyring, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ version: '1.9', madeDefault: true });
  });
});
