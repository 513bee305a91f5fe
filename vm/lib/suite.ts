/**
 * The end-to-end scenarios, defined once and run per bootloader variant (bios.test.ts: GRUB2 on
 * SeaBIOS; uefi.test.ts: systemd-boot on OVMF). One VM is booted per file and shared by the
 * scenarios in order, because every boot under TCG costs tens of seconds; each scenario asserts
 * only on what the booted guest reports. A failing scenario saves the serial log to
 * vm/logs/<variant>-<scenario>.log.
 */
import { afterAll, beforeAll, describe, expect, inject, it, onTestFailed } from 'vitest';
import { createSystem } from '../../src/core/system.ts';
import { createLogger } from '../../src/core/log.ts';
import { countBoots, createVm, RebootedError, type Vm } from './qemu.ts';
import { RUN_DIR, REPO } from './paths.ts';
import { ARCHIVES, RELEASES, type Variant } from './image.ts';
import { artifact, bootFacts, inProgressOnDisk, tiuStatus } from './guest.ts';
import { extractJson } from './console.ts';

/** Where the guest mounts the repository disk. */
// (the root snapshot is read-only: a mount point under /run, as udisks mounts media)
const GUEST_REPO = '/run/media/tiu-repo';

export type Scenario = 'boot' | 'dm-verity' | 'power-cut' | 'repository' | 'update' | 'health-rollback' | 'no-userspace' | 'factory-reset';

export interface SuiteOptions {
  variant: Variant;
  scenarios: Scenario[];
  /** Scenarios that cannot pass yet, with the reason (reported as todo, never as passing). */
  todo?: Partial<Record<Scenario, string>>;
}

const timings: { name: string; seconds: number; ok: boolean }[] = [];

function timed(vmRef: () => Vm | undefined, variant: Variant, name: string, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const t0 = Date.now();
    let ok = false;
    onTestFailed(() => {
      const vm = vmRef();
      if (vm) process.stderr.write(`[vm] serial log saved to ${vm.saveLog(`${variant}-${name}`)}\n`);
    });
    try {
      await fn();
      ok = true;
    } finally {
      timings.push({ name: `${variant}: ${name}`, seconds: (Date.now() - t0) / 1000, ok });
    }
  };
}

/** Defines the describe block of one variant. */
export function defineVmSuite(o: SuiteOptions): void {
  const { variant } = o;
  const d = o.scenarios.length ? describe.sequential : describe.skip;
  d(`VM ${variant}`, () => {
    let vm: Vm | undefined;
    /** The snapshot the repository scenario installed (the update scenario boots it). */
    let repositorySnapshot: number | undefined;
    const sys = createSystem(createLogger(process.env.TIU_VM_DEBUG ? 'debug' : 'warn'));
    /** The shared VM, booted if it is not running (a scenario list may start anywhere). */
    const ready = async (): Promise<Vm> => {
      if (!vm) throw new Error('the VM could not be prepared');
      if (!vm.isRunning) {
        await vm.boot();
        return vm;
      }
      // A scenario that failed while the guest rebooted leaves it booting: wait for its shell
      // instead of failing every scenario after it.
      const before = vm.mark;
      try {
        await vm.run('true', { timeoutMs: 120_000 });
      } catch (e) {
        if (!(e instanceof RebootedError)) throw e;
        await vm.waitForNewBoot('', { bannerAfter: before });
      }
      return vm;
    };

    beforeAll(async () => {
      const a = inject('artifacts');
      const workDir = `${RUN_DIR}/${variant}-${process.pid}`;
      vm = await createVm(sys, {
        name: `vm-${variant}`,
        baseDisk: a.disks[variant],
        firmware: variant,
        workDir,
        shares: { tiu: REPO, artifacts: a.dir },
        // The update repository as a disk of its own (the guest has no network): /dev/vdb.
        drives: o.scenarios.includes('repository') ? [a.repoDisk] : [],
      });
    });

    afterAll(async () => {
      if (vm) {
        await vm.kill();
        await sys.run('rm', ['-rf', vm.o.workDir], { allowFailure: true });
      }
      const mine = timings.filter((t) => t.name.startsWith(`${variant}:`));
      const lines = mine.map((t) => `  ${t.ok ? 'ok  ' : 'FAIL'} ${t.seconds.toFixed(1).padStart(7)} s  ${t.name}`);
      const boots = vm?.bootSeconds.map((s) => s.toFixed(0)).join(', ') ?? '';
      const resets = vm ? `; guest resets: ${vm.resets.restarted} (QEMU started again), ${vm.resets.forced} forced by the watchdog` : '';
      process.stderr.write(`\n[vm] timings (${variant}); boots took ${boots} s${resets}\n${lines.join('\n')}\n`);
    });

    const scenario = (name: Scenario, title: string, fn: () => Promise<void>, timeoutMs?: number) => {
      if (!o.scenarios.includes(name)) return;
      const why = o.todo?.[name];
      if (why) {
        it.todo(`${name}: ${title} — ${why}`);
        return;
      }
      it(`${name}: ${title}`, timed(() => vm, variant, name, fn), timeoutMs);
    };

    scenario('boot', 'the installed disk boots snapshot 1 (the default subvolume) with the right bootloader', async () => {
      const v = await ready();
      const f = await bootFacts(v);
      expect(f.uefi).toBe(variant === 'uefi');
      expect(f.cmdline).toContain('console=ttyS0');
      expect(f.booted).toBe(1);
      expect(f.default).toBe(1);
      expect(f.release).toBe(RELEASES.v1);
      if (variant === 'uefi') {
        // systemd-boot tells the OS who it is (LoaderInfo EFI variable).
        expect((await v.run('bootctl status 2>/dev/null | grep -i "product:" || true')).output).toMatch(/systemd-boot/);
      }
      // tiu as its Debian package installed it (docs/install.md): the wrapper, the bundle on the
      // shipped Node 24, the manual page and the timers.
      const pkg = await v.run('tiu --version; cat /usr/bin/tiu; /usr/lib/tiu/node --version; test -f /usr/share/man/man8/tiu.8.gz && test -f /usr/lib/systemd/system/tiu-cleanup.timer && echo package-files-ok');
      expect(pkg.output).toMatch(/^tiu \d+\.\d+\.\d+/m);
      expect(pkg.output).toContain('exec /usr/lib/tiu/node /usr/lib/tiu/tiu.mjs "$@"');
      expect(pkg.output).toMatch(/^v2[4-9]\./m);
      expect(pkg.output).toContain('package-files-ok');
      const st = await tiuStatus(v);
      expect(st).toHaveLength(1);
      expect(st[0]).toMatchObject({ number: 1, booted: true, default: true, inProgress: false, version: RELEASES.v1 });
    });

    scenario('dm-verity', 'tiu extract verifies through dm-verity in the kernel; a tampered archive is refused', async () => {
      const v = await ready();
      await v.run('modprobe dm-verity && test -e /dev/mapper/control');
      const before = await tiuStatus(v);
      // Poll the device-mapper table while tiu works: the verity target must appear.
      const r = await v.run(
        `tiu extract ${artifact(ARCHIVES.v2)} --no-default --json --debug >/tmp/extract.json 2>/tmp/extract.log & pid=$!
seen=no; while kill -0 $pid 2>/dev/null; do t=$(dmsetup table 2>/dev/null | grep ' verity '); if [ -n "$t" ]; then seen=yes; echo "table: $t"; fi; sleep 0.2; done
wait $pid; echo "rc=$? seen=$seen"`,
        { timeoutMs: 900_000 },
      );
      const log = (await v.run('cat /tmp/extract.log')).output;
      expect(r.output, log.slice(-3000)).toMatch(/rc=0 /);
      const res = extractJson<{ number: number; verification: string; madeDefault: boolean; version: string }>((await v.run('cat /tmp/extract.json')).output);
      expect(res.verification).toBe('dm-verity');
      expect(res.madeDefault).toBe(false);
      expect(res.version).toBe('2');
      expect(log).toMatch(/veritysetup open/);
      expect(r.output).toMatch(/seen=yes/);
      expect(r.output).toMatch(/table: tiu-\d+-[0-9a-f]+: 0 \d+ verity 1 /);
      // Nothing stays mapped or mounted after tiu exits.
      expect((await v.run("dmsetup ls --target verity 2>&1 | grep -c '^tiu-' || true")).output.trim()).toBe('0');
      const after = await tiuStatus(v);
      expect(after.map((s) => s.number)).toEqual([...before.map((s) => s.number), res.number]);
      expect(after.find((s) => s.number === res.number)).toMatchObject({ default: false, booted: false, inProgress: false, version: '2' });

      const bad = await v.run(`tiu extract ${artifact(ARCHIVES.tampered)} --no-default`, { allowFailure: true, timeoutMs: 900_000 });
      expect(bad.exitCode).not.toBe(0);
      expect(bad.output).toMatch(/verity|corrupt|hash/i);
      expect((await tiuStatus(v)).map((s) => s.number)).toEqual(after.map((s) => s.number));
      // The snapshot made above is not needed by later scenarios.
      await v.run('tiu cleanup --keep 0');
    });

    scenario('power-cut', 'QEMU killed during tiu update: the old snapshot boots, the next tiu run removes the unfinished one', async () => {
      const v = await ready();
      const before = await bootFacts(v);
      await v.run(`(setsid tiu update --source ${artifact(ARCHIVES.v2)} --debug >/root/update.log 2>&1 &)`);
      // Wait until the new snapshot exists and is marked in progress, make that durable, cut power.
      let inProgress: number[] = [];
      const deadline = Date.now() + 600_000;
      while (inProgress.length === 0) {
        if (Date.now() > deadline) throw new Error(`no in-progress snapshot appeared:\n${(await v.run('cat /root/update.log')).output}`);
        await new Promise((r) => setTimeout(r, 1000));
        inProgress = await inProgressOnDisk(v);
      }
      await v.run('sync', { timeoutMs: 300_000 });
      const running = await v.run('pgrep -f "tiu\\.m?js update" >/dev/null && echo running || echo finished');
      expect(running.output.trim(), 'tiu update finished before the power cut; the cut must hit it mid-way').toBe('running');
      await v.kill();

      await v.boot();
      const after = await bootFacts(v);
      expect(after.booted).toBe(before.booted);
      expect(after.default).toBe(before.default);
      expect(after.release).toBe(before.release);
      const st = await tiuStatus(v);
      const left = st.filter((s) => s.inProgress).map((s) => s.number);
      expect(left).toEqual(inProgress);
      expect(st.find((s) => s.number === inProgress[0])).toMatchObject({ booted: false, default: false });

      // The next tiu run (the retried update) removes the leftover first.
      const u = await v.run(`tiu update --source ${artifact(ARCHIVES.v2)} --json`, { timeoutMs: 900_000 });
      const res = extractJson<{ number: number; madeDefault: boolean }>(u.output);
      expect(res.madeDefault).toBe(true);
      const st2 = await tiuStatus(v);
      expect(st2.filter((s) => s.inProgress)).toEqual([]);
      expect(st2.map((s) => s.number)).not.toContain(inProgress[0]);
      expect(await inProgressOnDisk(v)).toEqual([]);
    });

    scenario('repository', 'tiu update from a file:// repository on an attached disk (no network); the reboot into it is the update scenario\'s when that runs next', async () => {
      const v = await ready();
      // A pending v2 (left by power-cut) would make the repository's v2 "installed": go back to
      // the booted snapshot and delete the pending one, so the repository has something to offer.
      let st = await tiuStatus(v);
      const booted = st.find((s) => s.booted)!;
      if (st.some((s) => !s.booted)) {
        await v.run(`tiu rollback ${booted.number} && tiu cleanup --keep 0`);
        st = await tiuStatus(v);
      }
      expect(st.map((s) => s.number)).toEqual([booted.number]);
      expect(booted.version).toBe(RELEASES.v1);
      await v.run(`mkdir -p ${GUEST_REPO} && mount -o ro /dev/vdb ${GUEST_REPO} && test -f ${GUEST_REPO}/metadata/timestamp.json`);
      const url = `file://${GUEST_REPO}`;
      // What would be installed and why; changes nothing.
      const check = extractJson<{ outcome: string; chosen: { version: string } | null; installed: { version: string }; channel: string; metadata: { root: number } }>(
        (await v.run(`tiu check --repository ${url} --channel stable --json`, { timeoutMs: 300_000 })).output,
      );
      expect(check).toMatchObject({ outcome: 'update', channel: 'stable', installed: { version: RELEASES.v1 }, chosen: { version: RELEASES.v2 }, metadata: { root: 1 } });
      // Nothing on another channel.
      const beta = await v.run(`tiu update --repository ${url} --channel beta --json`, { timeoutMs: 300_000 });
      expect(extractJson<{ outcome: string; updated: boolean }>(beta.output)).toMatchObject({ outcome: 'nothing-published', updated: false });
      // A copy whose timestamp was altered by one byte is refused (REPO_SIGNATURE, exit 81) and
      // changes nothing: the trust anchor is the root shipped in the image, not the disk.
      const evil = await v.run(
        `rm -rf /tmp/evil && mkdir -p /tmp/evil && cp -a ${GUEST_REPO}/metadata /tmp/evil/ && ln -s ${GUEST_REPO}/targets /tmp/evil/targets && sed -i 's/"version": \\([0-9]\\)/"version": 9\\1/' /tmp/evil/metadata/timestamp.json && tiu update --repository file:///tmp/evil --channel stable`,
        { allowFailure: true, timeoutMs: 300_000 },
      );
      expect(evil.exitCode, evil.output).toBe(81);
      expect(evil.output).toMatch(/REPO_SIGNATURE/);
      expect((await tiuStatus(v)).map((s) => s.number)).toEqual([booted.number]);

      const u = await v.run(`tiu update --repository ${url} --channel stable --json`, { timeoutMs: 900_000 });
      const res = extractJson<{ number: number; madeDefault: boolean; version: string }>(u.output);
      expect(res).toMatchObject({ madeDefault: true, version: RELEASES.v2 });
      expect((await tiuStatus(v)).find((s) => s.number === res.number)).toMatchObject({ default: true, booted: false, version: RELEASES.v2, inProgress: false });
      // The next check finds nothing newer; the file was read from the disk, nothing was downloaded.
      const again = extractJson<{ outcome: string }>((await v.run(`tiu check --repository ${url} --channel stable --json`, { timeoutMs: 300_000 })).output);
      expect(again.outcome).toBe('up-to-date');
      await v.run(`umount ${GUEST_REPO}`);
      repositorySnapshot = res.number;
      if (o.scenarios.includes('update')) return;
      await v.reboot();
      const f = await bootFacts(v);
      expect(f.booted).toBe(res.number);
      expect(f.release).toBe(RELEASES.v2);
      expect((await tiuStatus(v)).find((s) => s.number === res.number)).toMatchObject({ booted: true, default: true, version: RELEASES.v2 });
      // Six tiu commands, a 130 MB copy from the disk and an extract under TCG (837 s alone, with
      // the first boot and its own reboot, on a machine at load 15): more than the default 900 s.
    }, 1_800_000);

    scenario('update', 'tiu update to v2, reboot: the new snapshot is booted and tiu status shows it', async () => {
      const v = await ready();
      let st = await tiuStatus(v);
      let pending = st.find((s) => s.default && !s.booted && s.version === '2');
      if (!pending) {
        await v.run(`tiu update --source ${artifact(ARCHIVES.v2)} --json`, { timeoutMs: 900_000 });
        st = await tiuStatus(v);
        pending = st.find((s) => s.default && !s.booted && s.version === '2');
      }
      expect(pending, JSON.stringify(st)).toBeDefined();
      // When the repository scenario ran, the pending snapshot is the one it installed.
      if (repositorySnapshot !== undefined) expect(pending!.number).toBe(repositorySnapshot);
      const old = st.find((s) => s.booted)!;
      await v.reboot();
      const f = await bootFacts(v);
      expect(f.booted).toBe(pending!.number);
      expect(f.default).toBe(pending!.number);
      expect(f.release).toBe(RELEASES.v2);
      const st2 = await tiuStatus(v);
      expect(st2.find((s) => s.number === pending!.number)).toMatchObject({ booted: true, default: true, version: '2', inProgress: false });
      expect(st2.find((s) => s.number === old.number)).toMatchObject({ booted: false, default: false });
      if (inject('bootMode') === 'tiu') {
        // tiu-health.service ran at this boot and passed.
        expect((await v.run('systemctl is-active tiu-health.service', { allowFailure: true })).output.trim()).toBe('active');
        expect(st2.find((s) => s.number === pending!.number)!.health).toBe('good');
      }
    });

    scenario('health-rollback', 'an image whose health check fails is rolled back automatically (one reboot) and marked bad', async () => {
      const v = await ready();
      const good = (await bootFacts(v)).booted!;
      const u = await v.run(`tiu update --source ${artifact(ARCHIVES.badHealth)} --json`, { timeoutMs: 900_000 });
      const bad = extractJson<{ number: number }>(u.output).number;
      expect((await bootFacts(v)).default).toBe(bad);
      const mark = v.mark;
      const old = await v.bootId();
      v.send('systemctl reboot');
      // The guest boots the bad snapshot, its health check fails, tiu makes the good one the
      // default and reboots once by itself; the harness waits until the good one runs.
      const deadline = Date.now() + 1_200_000;
      let f = await bootFacts(v).catch(() => undefined);
      let id = old;
      let bannerAfter: number | undefined;
      for (;;) {
        await v.waitForNewBoot(id, { timeoutMs: deadline - Date.now(), bannerAfter });
        bannerAfter = undefined;
        const before = v.mark;
        try {
          id = await v.bootId();
          f = await bootFacts(v);
        } catch (e) {
          // The bad snapshot's login shell can come up before its health check reboots it; a
          // question cut off by that reboot is asked again in the boot after it (whose kernel
          // banner may already be in the stream: count from before the question).
          if (!(e instanceof RebootedError) || Date.now() > deadline) throw e;
          bannerAfter = before;
          continue;
        }
        if (f.booted !== bad) break;
        if (Date.now() > deadline) throw new Error('still in the bad snapshot');
      }
      expect(f.booted).toBe(good);
      expect(f.default).toBe(good);
      expect(f.release).toBe(RELEASES.v2);
      // Exactly two kernels since the reboot: the bad snapshot's and the good one's.
      expect(countBoots(v.stream, mark)).toBe(2);
      const st = await tiuStatus(v);
      expect(st.find((s) => s.number === bad)).toMatchObject({ health: 'bad', default: false, booted: false });
      expect(st.find((s) => s.number === good)).toMatchObject({ booted: true, default: true });
      // What the health check said on the console at the bad boot (the state file it wrote is
      // removed again by the healthy boot that followed, as docs/boot.md describes).
      const said = v.stream.slice(mark);
      expect(said).toMatch(new RegExp(`health-check: FAIL plugin 50-vm-always-fails`));
      expect(said).toMatch(new RegExp(`snapshot ${bad} failed its first health check: marked bad; snapshot ${good} is the default again`));
    });

    scenario('no-userspace', 'an image that cannot reach userspace (init exits) falls back through the boot counter', async () => {
      const v = await ready();
      const good = (await bootFacts(v)).booted!;
      const u = await v.run(`tiu update --source ${artifact(ARCHIVES.noInit)} --json`, { timeoutMs: 900_000 });
      const broken = extractJson<{ number: number }>(u.output).number;
      expect((await bootFacts(v)).default).toBe(broken);
      const mark = v.mark;
      const old = await v.bootId();
      v.send('systemctl reboot');
      // Each try panics ("Attempted to kill init"), panic=5 resets the machine, the boot loader
      // counts the try; when none are left it boots the fallback (the snapshot booted before).
      await v.waitForNewBoot(old, { timeoutMs: 1_800_000 });
      const f = await bootFacts(v);
      const panics = (v.stream.slice(mark).match(/Kernel panic - not syncing: Attempted to kill init/g) ?? []).length;
      expect(panics).toBeGreaterThanOrEqual(1);
      expect(countBoots(v.stream, mark)).toBe(panics + 1);
      expect(f.booted).toBe(good);
      expect(f.release).toBe(RELEASES.v2);
      // The health check of this boot sees the failed trial: the broken snapshot is bad and the
      // booted one is the default again.
      expect(f.default).toBe(good);
      const st = await tiuStatus(v);
      expect(st.find((s) => s.number === broken)).toMatchObject({ health: 'bad', default: false, booted: false });
    });

    scenario('factory-reset', 'tiu factory-reset, reboot: user data and accounts gone, the image intact, the old data deleted after the healthy boot', async () => {
      const v = await ready();
      await v.run('mkdir -p /home/alice && echo private > /home/alice/notes && echo state > /var/tiu-vm-userdata && echo local > /etc/tiu-vm-local && echo "alice:x:1000:1000::/home/alice:/bin/sh" >> /etc/passwd && echo secret > /root/.secret');
      const r = await v.run('tiu factory-reset --yes --json', { timeoutMs: 900_000 });
      const reset = extractJson(r.output) as { snapshot: number; new: Record<string, string> };
      expect(reset.new.home).toBe(`@/.tiu-data/${reset.snapshot}/home`);
      // Nothing erased before the reboot.
      expect((await v.run('cat /home/alice/notes')).output.trim()).toBe('private');
      await v.reboot();
      const f = await bootFacts(v);
      expect(f.booted).toBe(reset.snapshot);
      expect(f.default).toBe(reset.snapshot);
      // (/root/.ssh may be there: systemd's tmpfiles provision.conf makes it at every boot.)
      const gone = await v.run('ls -A /home; test -e /root/.secret && echo ROOT-LEFT; test -e /var/tiu-vm-userdata && echo VAR-LEFT; test -e /etc/tiu-vm-local && echo ETC-LEFT; grep -c alice /etc/passwd || true');
      expect(gone.output.trim()).toBe('0');
      expect((await v.run('findmnt -no FSROOT /home')).output.trim()).toBe(`/@/.tiu-data/${reset.snapshot}/home`);
      if (inject('bootMode') === 'tiu') {
        expect((await v.run('systemctl is-active tiu-health.service', { allowFailure: true })).output.trim()).toBe('active');
        expect((await v.run('journalctl -b -u tiu-health.service --no-pager', { allowFailure: true })).output).toMatch(/factory reset of snapshot \d+ finished: 6 old data subvolumes deleted/);
        const st = await tiuStatus(v);
        expect(st.map((s) => [s.number, s.health])).toEqual([[reset.snapshot, 'good']]);
        const subvols = (await v.run('btrfs subvolume list /')).output;
        for (const p of ['var', 'home', 'root', 'opt', 'srv', 'usr/local']) expect(subvols).not.toMatch(new RegExp(`path @/${p}$`, 'm'));
      }
      // The image is intact: the booted snapshot equals its signed index.
      const verify = await v.run('tiu verify --system', { allowFailure: true, timeoutMs: 900_000 });
      expect(verify.exitCode, verify.output).toBe(0);
    });
  });
}
