/**
 * /etc end to end on loop btrfs with the real CLI: local edits and vendor changes merged, users
 * added on the device kept, edits made between update and reboot carried over by `tiu etc sync`,
 * `tiu etc diff`, the report in `tiu status --json`, and what rollback does to /etc.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises';
import { mountSystem } from '../src/snapshot/layout.ts';
import { tmpdir } from 'node:os';
import { testSystem } from './helpers/env.ts';
import { makeArchives, installedDevice, cli, type ArchiveSet } from './helpers/device.ts';

const sys = testSystem();
let work: string;
let A: ArchiveSet;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tiu-etc-'));
  A = await makeArchives(sys, work);
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const snap = (root: string, n: number, p: string) => join(root, `.snapshots/${n}/snapshot`, p);

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

async function edit(file: string, from: RegExp, to: string): Promise<void> {
  const text = await readFile(file, 'utf8');
  expect(text).toMatch(from);
  await writeFile(file, text.replace(from, to));
}

describe('/etc across tiu update', () => {
  it('merges a local sshd_config edit with the vendor change, keeps a user added on the device, adds the vendor user', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    await edit(join(dev.root, 'etc/ssh/sshd_config'), /^PermitRootLogin yes$/m, 'PermitRootLogin no');
    await appendFile(join(dev.root, 'etc/passwd'), 'alice:x:1000:1000:Alice:/home/alice:/bin/sh\n');
    await appendFile(join(dev.root, 'etc/group'), 'alice:x:1000:\n');
    await appendFile(join(dev.root, 'etc/shadow'), 'alice:$6$salt$hash:19500:0:99999:7:::\n');
    await writeFile(join(dev.root, 'etc/local-only.conf'), 'mine\n');

    const diff = await cli(['etc', 'diff', '--root', dev.root]);
    expect(diff.exitCode, diff.stderr).toBe(0);
    expect(diff.stdout).toMatch(/^M \/etc\/ssh\/sshd_config/m);
    expect(diff.stdout).toMatch(/^A \/etc\/local-only\.conf/m);

    const r = await cli(['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\/etc: .* merged/);
    const sshd = await readFile(snap(dev.root, 2, 'etc/ssh/sshd_config'), 'utf8');
    expect(sshd).toBe('Port 22\nPermitRootLogin no\nX11Forwarding no\nAllowAgentForwarding no\n');
    const passwd = await readFile(snap(dev.root, 2, 'etc/passwd'), 'utf8');
    expect(passwd).toMatch(/^alice:x:1000:1000:/m);
    expect(passwd).toMatch(/^svc:x:998:998:/m);
    const shadow = snap(dev.root, 2, 'etc/shadow');
    expect(await readFile(shadow, 'utf8')).toMatch(/^alice:\$6\$salt\$hash:/m);
    expect((await stat(shadow)).mode & 0o777).toBe(0o640);
    expect(await readFile(snap(dev.root, 2, 'etc/local-only.conf'), 'utf8')).toBe('mine\n');
    // The report is stored with the snapshot and exposed by status --json.
    const st = JSON.parse((await cli(['status', '--root', dev.root, '--json'])).stdout);
    const two = st.snapshots.find((s: { number: number }) => s.number === 2);
    expect(two.etcMerge.merged).toContain('ssh/sshd_config');
    expect(two.etcMerge.conflicts).toEqual([]);
  });

  it('an overlapping edit keeps the local version and writes the vendor one as .tiunew, with a conflict record', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    // The vendor appends AllowAgentForwarding after X11Forwarding; the admin edits that same spot.
    await edit(join(dev.root, 'etc/ssh/sshd_config'), /^X11Forwarding no$/m, 'X11Forwarding yes');
    const r = await cli(['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/conflict: \/etc\/ssh\/sshd_config/);
    expect(await readFile(snap(dev.root, 2, 'etc/ssh/sshd_config'), 'utf8')).toMatch(/^X11Forwarding yes$/m);
    expect(await readFile(snap(dev.root, 2, 'etc/ssh/sshd_config.tiunew'), 'utf8')).toBe('Port 22\nPermitRootLogin yes\nX11Forwarding no\nAllowAgentForwarding no\n');
  });

  it('edits made after the update and before the reboot are carried over by tiu etc sync', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    const r = await cli(['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring]);
    expect(r.exitCode, r.stderr).toBe(0);
    // The admin keeps working on the running system (snapshot 1).
    await writeFile(join(dev.root, 'etc/hostname'), 'renamed-after-update\n');
    await edit(join(dev.root, 'etc/ssh/sshd_config'), /^PermitRootLogin yes$/m, 'PermitRootLogin prohibit-password');
    expect(await readFile(snap(dev.root, 2, 'etc/hostname'), 'utf8')).toBe('tiu-test\n');
    const s = await cli(['etc', 'sync', '--root', dev.root]);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout).toMatch(/carried 2 changed path/);
    expect(await readFile(snap(dev.root, 2, 'etc/hostname'), 'utf8')).toBe('renamed-after-update\n');
    expect(await readFile(snap(dev.root, 2, 'etc/ssh/sshd_config'), 'utf8')).toBe('Port 22\nPermitRootLogin prohibit-password\nX11Forwarding no\nAllowAgentForwarding no\n');
    // Idempotent.
    const again = await cli(['etc', 'sync', '--root', dev.root]);
    expect(again.stdout).toMatch(/has not changed/);
    expect(await exists(join(dev.root, '.snapshots/2/etc-syncpoint'))).toBe(true);
  });

  it('the boot of the new snapshot carries the last edits of an unclean shutdown, then drops the syncpoint', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    expect((await cli(['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring])).exitCode).toBe(0);
    // Edited on snapshot 1, then the power went (no sync at shutdown).
    await writeFile(join(dev.root, 'etc/hostname'), 'edited-before-power-cut\n');
    // Snapshot 2 boots: tiu-etc-sync.service runs before sysinit.target.
    const root2 = join(dev.dir, 'root2');
    await mkdir(root2);
    await using _booted = await mountSystem(sys, dev.loopDev, root2, 2);
    expect(await exists(join(root2, '.snapshots/2/etc-syncpoint'))).toBe(true);
    const s = await cli(['etc', 'sync', '--root', root2]);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout).toMatch(/carried 1 changed path/);
    expect(await readFile(join(root2, 'etc/hostname'), 'utf8')).toBe('edited-before-power-cut\n');
    // The running snapshot's /etc is the live one now: no syncpoint, nothing for later boots.
    expect(await exists(join(root2, '.snapshots/2/etc-syncpoint'))).toBe(false);
    await writeFile(join(dev.root, 'etc/hostname'), 'edited-on-the-old-one-later\n');
    const again = await cli(['etc', 'sync', '--root', root2]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await readFile(join(root2, 'etc/hostname'), 'utf8')).toBe('edited-before-power-cut\n');
  });

  it('rollback boots the older snapshot with its own /etc; edits made on the newer one stay there', async () => {
    await using dev = await installedDevice(sys, A.v1, A.keyringPem);
    await writeFile(join(dev.root, 'etc/hostname'), 'v1-host\n');
    expect((await cli(['update', '--source', A.v2, '--root', dev.root, '--keyring', A.keys.keyring])).exitCode).toBe(0);
    // An edit on the new snapshot's /etc (as if made after booting it).
    await writeFile(snap(dev.root, 2, 'etc/hostname'), 'v2-host\n');
    const r = await cli(['rollback', '1', '--root', dev.root]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readFile(snap(dev.root, 1, 'etc/hostname'), 'utf8')).toBe('v1-host\n');
    expect(await readFile(snap(dev.root, 1, 'etc/passwd'), 'utf8')).not.toMatch(/^svc:/m);
    expect(await readFile(snap(dev.root, 2, 'etc/hostname'), 'utf8')).toBe('v2-host\n');
  });
});

describe('the update plan', () => {
  it('--dry-run shows the /etc plan the real run carries out (local edits, an ACL the image format cannot hold)', async () => {
    // An /etc file with a POSIX ACL, the same in both versions: squashfs drops ACLs (the index
    // carries them), so a plan made from the mounted image would see the vendor "remove" it.
    const B = await makeArchives(sys, join(work, 'acl'), {
      prepare: async (tree) => {
        await writeFile(join(tree, 'etc/acl.conf'), 'shared\n');
        await sys.run('setfacl', ['-m', 'u:4321:r', join(tree, 'etc/acl.conf')]);
      },
    });
    await using dev = await installedDevice(sys, B.v1, B.keyringPem);
    await edit(join(dev.root, 'etc/ssh/sshd_config'), /^PermitRootLogin yes$/m, 'PermitRootLogin no');
    await writeFile(join(dev.root, 'etc/local-only.conf'), 'mine\n');
    const args = ['extract', B.v2, '--root', dev.root, '--keyring', B.keys.keyring, '--json'];

    const dry = await cli([...args, '--dry-run']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    const planned = JSON.parse(dry.stdout);
    expect(planned.number).toBeUndefined();
    expect(planned.etcPlan.join('\n')).toMatch(/^merged +\/etc\/ssh\/sshd_config/m);
    expect(planned.etcPlan.join('\n')).not.toMatch(/acl\.conf/);
    // The dry-run listing ends with the same /etc lines.
    expect(planned.planLines.slice(-planned.etcPlan.length)).toEqual(planned.etcPlan);

    const real = await cli(args);
    expect(real.exitCode, real.stderr).toBe(0);
    const done = JSON.parse(real.stdout);
    expect(done.number).toBe(2);
    expect(done.etcPlan).toEqual(planned.etcPlan);
    expect(done.stats).toEqual(planned.stats);
    expect(done.etc.merged).toEqual(['ssh/sshd_config']);
    expect(await readFile(snap(dev.root, 2, 'etc/local-only.conf'), 'utf8')).toBe('mine\n');
    const acl = await sys.run('getfacl', ['-c', '-n', snap(dev.root, 2, 'etc/acl.conf')]);
    expect(acl.stdout).toMatch(/^user:4321:r--$/m);
  });
});
