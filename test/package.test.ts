/**
 * The install path (issue #19): `npm run package` builds the .deb from scripts/install.sh's
 * layout; installed into a fresh root (dpkg -x), its /usr/bin/tiu runs (`--version`), `man -l`
 * renders the installed pages, and the installed bash completion completes `tiu up<TAB>`.
 * The root is entered with chroot over an overlay (the package's files over this machine's
 * userland, which supplies /bin/sh, bash and man), in a private mount namespace.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { readFile, stat, mkdir } from 'node:fs/promises';
import { execa } from 'execa';
import { tempDir } from './helpers/env.ts';
import { TIU_VERSION } from '../src/tiu/version.ts';

const REPO = join(import.meta.dirname, '..');
let work: { path: string } & AsyncDisposable;
let deb: string;
let root: string;

beforeAll(async () => {
  work = await tempDir('tiu-package-');
  const r = await execa('bash', [join(REPO, 'scripts/package.sh'), join(work.path, 'out')], { env: { PATH: `${REPO}/node_modules/.bin:${process.env.PATH}` } });
  deb = r.stdout.trim().split('\n').at(-1)!;
  root = join(work.path, 'root');
  await mkdir(root);
  await execa('dpkg', ['-x', deb, root]);
}, 600_000);

afterAll(async () => {
  await work?.[Symbol.asyncDispose]();
});

/** Runs `script` (sh) chrooted into the package's files layered over this machine's root. */
async function inRoot(script: string) {
  // Layers must not overlap: the package root (inside "/") is copied to a tmpfs of its own.
  const t = join(work.path, 't');
  const setup = [
    `mkdir -p ${t}`,
    `mount -t tmpfs tmpfs ${t}`,
    `cp -a ${root} ${t}/root`,
    `mkdir ${t}/m ${t}/upper ${t}/work`,
    `mount -t overlay overlay -o lowerdir=${t}/root:/,upperdir=${t}/upper,workdir=${t}/work ${t}/m`,
    `mount -t proc proc ${t}/m/proc`,
    `exec chroot ${t}/m /bin/sh -c "$1"`,
  ].join(' && ');
  return execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', setup, 'sh', script], { reject: false, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', MANPAGER: 'cat', MANWIDTH: '100', LANG: 'C.UTF-8' } });
}

describe('the Debian package', () => {
  it('has the install layout and control data', async () => {
    const info = (await execa('dpkg-deb', ['--info', deb])).stdout;
    expect(info).toMatch(new RegExp(`Package: tiu\\n.*Version: ${TIU_VERSION.replace(/\./g, '\\.')}`, 's'));
    const files = (await execa('dpkg-deb', ['--contents', deb])).stdout;
    for (const f of [
      './usr/bin/tiu', './usr/lib/tiu/node', './usr/lib/tiu/tiu.mjs', './usr/lib/tiu/lib/', './etc/tiu/tiu.conf',
      './usr/lib/systemd/system/tiu-update.timer', './usr/lib/systemd/system/tiu-cleanup.timer', './usr/lib/systemd/system/tiu-cleanup.service',
      './usr/lib/systemd/system/tiu-health.service', './usr/lib/systemd/system/tiu-etc-sync.service',
      './usr/share/man/man8/tiu.8.gz', './usr/share/man/man5/tiu.conf.5.gz',
      './usr/share/bash-completion/completions/tiu', './usr/share/zsh/vendor-completions/_tiu', './usr/share/fish/vendor_completions.d/tiu.fish',
      './usr/lib/systemd/system/tiu-daemon.service', './usr/share/dbus-1/system.d/org.tiu.Updater1.conf', './usr/share/dbus-1/system-services/org.tiu.Updater1.service',
    ]) expect(files, f).toContain(f);
    expect((await execa('dpkg-deb', ['-I', deb, 'conffiles'])).stdout.trim()).toBe('/etc/tiu/tiu.conf');
    expect((await stat(join(root, 'usr/lib/tiu/node'))).mode & 0o111).toBeTruthy();
    expect(files).toMatch(/\.\/usr\/lib\/tiu\/node_modules\/@napi-rs\/xattr-linux-[^/]+\/xattr\.linux-[^/]+\.node/);
    // The download lock's binding (src/tiu/download/lock.ts), loaded the way the bundle loads it.
    expect(files).toMatch(/\.\/usr\/lib\/tiu\/node_modules\/fs-native-extensions\/prebuilds\/linux-[^/]+\/fs-native-extensions\.node/);
    const lock = await inRoot(`/usr/lib/tiu/node -e "require('node:module').createRequire('/usr/lib/tiu/tiu.mjs')('fs-native-extensions/prebuilds/' + process.platform + '-' + process.arch + '/fs-native-extensions.node').tryLock(require('node:fs').openSync('/tmp/l', 'w'), 0, 0, true)"`);
    expect(lock.exitCode, lock.stderr).toBe(0);
    expect(await readFile(join(root, 'usr/bin/tiu'), 'utf8')).toMatch(/^exec \/usr\/lib\/tiu\/node \/usr\/lib\/tiu\/tiu\.mjs "\$@"$/m);
  });

  it('runs tiu --version, renders its manual pages, completes tiu up<TAB>', async () => {
    const v = await inRoot('/usr/bin/tiu --version && /usr/lib/tiu/node --version');
    expect(v.exitCode, v.stderr).toBe(0);
    const [tiuLine, nodeLine] = v.stdout.trim().split('\n');
    expect(tiuLine).toBe(`tiu ${TIU_VERSION}`);
    expect(nodeLine).toMatch(/^v2[4-9]\./);

    const man = await inRoot('man -l /usr/share/man/man8/tiu.8.gz && man -l /usr/share/man/man5/tiu.conf.5.gz');
    expect(man.exitCode, man.stderr).toBe(0);
    expect(man.stderr).not.toMatch(/warning/);
    expect(man.stdout).toMatch(/^TIU\(8\) +System Administration +TIU\(8\)$/m);
    for (const c of ['tiu update', 'tiu status', 'tiu etc diff', 'tiu health-check']) expect(man.stdout).toMatch(new RegExp(`^ {3}${c}$`, 'm'));
    expect(man.stdout).toMatch(/--unchanged-exit-77/);
    expect(man.stdout).toMatch(/^EXIT STATUS$/m);
    expect(man.stdout).toMatch(/^TIU\.CONF\(5\) +File Formats/m);
    expect(man.stdout).toMatch(/allowed_signers\[\] = release signing 2026/);

    let c = await inRootBash(['tiu', 'up']);
    expect(c.stdout.trim().split('\n')).toEqual(['update']);
    c = await inRootBash(['tiu', 'update', '--re']);
    expect(c.stdout.trim().split('\n').sort()).toEqual(['--reboot', '--reinstall', '--repository']);
    c = await inRootBash(['tiu', 'etc', '']);
    expect(c.stdout.trim().split('\n').sort()).toEqual(['diff', 'sync']);
    c = await inRootBash(['tiu', '--root', '/mnt', 'status', '--j']);
    expect(c.stdout.trim()).toBe('--json');
  });
});

async function inRootBash(words: string[]) {
  const script = `. /usr/share/bash-completion/completions/tiu; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _tiu; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = await inRoot(`exec bash -c '${script.replace(/'/g, `'\\''`)}'`);
  expect(r.exitCode, r.stderr).toBe(0);
  return r;
}
