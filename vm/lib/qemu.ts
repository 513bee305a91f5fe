/**
 * The QEMU driver: starts a VM under software emulation (TCG) on a copy-on-write overlay of a
 * cached disk, talks to the root shell on its serial console (see console.ts for the marker
 * protocol), and reboots, powers off or kills it. The whole serial stream is kept in memory and
 * appended to `<workDir>/serial.log`; {@link Vm.saveLog} copies it to vm/logs/.
 */
import { appendFileSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { setTimeout as sleep } from 'node:timers/promises';
import type { System } from '../../src/core/system.ts';
import { findResult, probeAnswered, probeCommand, wrapCommand } from './console.ts';
import { LOG_DIR, OVMF_CODE, OVMF_VARS } from './paths.ts';

export type Firmware = 'bios' | 'uefi';

export interface VmOptions {
  /** Scenario-independent name used in messages. */
  name: string;
  /** A base disk image (raw); the VM writes to a qcow2 overlay in workDir. */
  baseDisk: string;
  firmware: Firmware;
  workDir: string;
  /** 9p shares (read-only): mount tag → host directory. */
  shares: Record<string, string>;
  memMiB?: number;
  cpus?: number;
  /** Write to baseDisk itself (raw), no overlay: only for building a base disk. */
  direct?: boolean;
  /** Further raw disk images, attached read-only after the system disk (/dev/vdb, /dev/vdc…). */
  drives?: string[];
}

export interface RunOptions {
  timeoutMs?: number;
  /** Resolve with a non-zero exit code instead of throwing. */
  allowFailure?: boolean;
}

export class VmError extends Error {}

/** Thrown by {@link Vm.run} when the guest rebooted (a new kernel started) before the command ended. */
export class RebootedError extends VmError {}

/** The first line every kernel prints on the console. */
export const KERNEL_BANNER = /\] Linux version \d/g;

/**
 * What the kernel prints when the machine is about to reset or halt (at emergency level, so
 * also with `dmesg -n 1`): after it, firmware and boot loader own the console.
 */
export const KERNEL_GOING_DOWN = /Kernel panic - not syncing|reboot: Restarting system|reboot: Power down|reboot: System halted/g;

/**
 * True when a kernel started after `from` and has not announced a reset since: only then may
 * the driver type on the console. Keys typed while firmware or boot loader read the console
 * are taken as commands (systemd-boot's `f` reboots into the firmware setup).
 */
export function kernelOwnsConsole(stream: string, from: number): boolean {
  return lastBanner(stream, from) !== undefined && lastGoingDown(stream, from) === undefined;
}

/** Stream position of the last kernel banner at or after `from`. */
function lastBanner(stream: string, from: number): number | undefined {
  let at: number | undefined;
  for (const m of stream.slice(from).matchAll(KERNEL_BANNER)) at = from + m.index!;
  return at;
}

/** Whether the guest powered off (not reset) since `from`: the kernel's last word says so. */
export function poweredOff(stream: string, from: number): boolean {
  let last: string | undefined;
  for (const m of stream.slice(from).matchAll(KERNEL_GOING_DOWN)) last = m[0];
  return last === 'reboot: Power down' || last === 'reboot: System halted';
}

/** Stream position of the last reset/panic announcement after the last kernel banner since `from`. */
export function lastGoingDown(stream: string, from: number): number | undefined {
  const banner = lastBanner(stream, from) ?? from;
  let pos: number | undefined;
  for (const m of stream.slice(banner).matchAll(KERNEL_GOING_DOWN)) pos = banner + m.index!;
  return pos;
}

/** How many kernels started in `stream` at or after `from`. */
export function countBoots(stream: string, from = 0): number {
  return [...stream.slice(from).matchAll(KERNEL_BANNER)].length;
}

let counter = 0;
function uid(): string {
  counter += 1;
  return `${process.pid.toString(36)}x${Date.now().toString(36)}x${counter.toString(36)}`;
}

/** A running (or stopped) VM. Create with {@link startVm}. */
export class Vm implements AsyncDisposable {
  readonly o: VmOptions;
  readonly sys: System;
  readonly overlay: string;
  readonly logFile: string;
  /** The whole serial console stream since the first start (all boots). */
  stream = '';
  /** Where the next search for a result starts. */
  private cursor = 0;
  private child: ReturnType<System['spawn']> | undefined;
  private exited: Promise<void> | undefined;
  private running = false;
  /** Set by kill(): the coming exit is ours, not a guest reset. */
  private stopping = false;
  /** Set by the reset watchdog: restart after the kill it sends. */
  private forceRestart = false;
  private watchdog: NodeJS.Timeout | undefined;
  /** Guest resets the harness turned into a fresh QEMU process, and resets it had to force. */
  readonly resets = { restarted: 0, forced: 0 };
  /** Seconds each boot took until the shell answered (for the timing report). */
  readonly bootSeconds: number[] = [];

  constructor(sys: System, o: VmOptions) {
    this.sys = sys;
    this.o = o;
    this.overlay = `${o.workDir}/disk.qcow2`;
    this.logFile = `${o.workDir}/serial.log`;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Creates the overlay (and the UEFI variable store); call once before the first {@link boot}. */
  async prepare(): Promise<void> {
    mkdirSync(this.o.workDir, { recursive: true });
    if (!this.o.direct) await this.sys.run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', this.o.baseDisk, '-F', 'raw', this.overlay]);
    if (this.o.firmware === 'uefi') copyFileSync(OVMF_VARS, `${this.o.workDir}/OVMF_VARS.fd`);
    writeFileSync(this.logFile, '');
  }

  private args(): string[] {
    const a = [
      '-accel', process.env.TIU_VM_ACCEL ?? 'tcg', '-cpu', process.env.TIU_VM_CPU ?? 'max', '-m', String(this.o.memMiB ?? 1536), '-smp', String(this.o.cpus ?? 2),
      '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none', '-monitor', 'none', '-nic', 'none',
      // A guest reset ends QEMU; start() starts it again (its exit handler): OVMF under TCG
      // sometimes hung for good after a warm reset, a fresh process boots every time.
      '-no-reboot',
      '-chardev', 'stdio,id=con,signal=off', '-serial', 'chardev:con',
      '-drive', this.o.direct ? `file=${this.o.baseDisk},if=virtio,format=raw,cache=writeback` : `file=${this.overlay},if=virtio,format=qcow2,cache=writeback`,
      '-device', 'virtio-rng-pci',
    ];
    for (const d of this.o.drives ?? []) a.push('-drive', `file=${d},if=virtio,format=raw,readonly=on`);
    for (const [tag, path] of Object.entries(this.o.shares)) {
      a.push('-virtfs', `local,path=${path},mount_tag=${tag},security_model=passthrough,readonly=on`);
    }
    if (this.o.firmware === 'uefi') {
      a.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`);
      a.push('-drive', `if=pflash,format=raw,unit=1,file=${this.o.workDir}/OVMF_VARS.fd`);
    }
    return a;
  }

  private append(text: string): void {
    this.stream += text;
    appendFileSync(this.logFile, text);
  }

  /** Starts QEMU (the machine powers on); returns at once. */
  start(): void {
    if (this.running) throw new VmError(`${this.o.name}: already running`);
    this.stopping = false;
    this.append(`\n=== [harness] qemu start ${new Date().toISOString()} ===\n`);
    const child = this.sys.spawn('qemu-system-x86_64', this.args());
    this.child = child;
    this.running = true;
    const dec = new StringDecoder('utf8');
    child.stdout?.on('data', (b: Buffer) => this.append(dec.write(b)));
    child.stderr?.on('data', (b: Buffer) => this.append(`[qemu stderr] ${b.toString()}`));
    const startedAt = this.stream.length;
    this.exited = (async () => {
      const r = (await child) as unknown as { exitCode?: number; signal?: string };
      clearInterval(this.watchdog);
      this.append(`\n=== [harness] qemu exited (${r.signal ?? `exit ${r.exitCode}`}) ${new Date().toISOString()} ===\n`);
      const restart = this.forceRestart || (!this.stopping && r.exitCode === 0 && !poweredOff(this.stream, startedAt));
      this.forceRestart = false;
      this.running = false;
      if (restart) {
        this.resets.restarted += 1;
        this.append(`=== [harness] the guest reset: starting QEMU again (same disk and firmware variables) ===\n`);
        this.start();
        await this.exited;
      }
    })();
    // Reset watchdog: a kernel that announced a reset (or a panic) must leave within 2 minutes;
    // if the machine hangs instead, cut the power and start it again (as a hardware watchdog
    // would). Everything was flushed before the announcement.
    let downSeen: { at: number; pos: number } | undefined;
    this.watchdog = setInterval(() => {
      const pos = lastGoingDown(this.stream, startedAt);
      if (pos === undefined) return (downSeen = undefined);
      if (!downSeen || downSeen.pos !== pos) return (downSeen = { at: Date.now(), pos });
      if (Date.now() - downSeen.at < 120_000 || this.stopping) return;
      this.resets.forced += 1;
      this.append(`\n=== [harness] no reset 120 s after the kernel announced it: power cycle ===\n`);
      this.forceRestart = true;
      clearInterval(this.watchdog);
      child.kill('SIGKILL');
    }, 5_000);
  }

  private type(text: string): void {
    if (!this.running) throw new VmError(`${this.o.name}: the VM is not running`);
    this.child!.stdin!.write(text);
  }

  /** Tail of the console for error messages. */
  tail(chars = 3000): string {
    return this.stream.slice(-chars);
  }

  /**
   * Waits until a root shell answers on the console, then sets it up for the protocol
   * (no echo, empty prompts, kernel messages off the console) and waits until systemd has
   * finished booting. Returns the seconds since `since`.
   */
  async waitForShell(o: { timeoutMs?: number; since?: number; bannerAfter?: number } = {}): Promise<number> {
    const since = o.since ?? Date.now();
    const deadline = since + (o.timeoutMs ?? 400_000);
    let bannerAfter = o.bannerAfter ?? 0;
    for (;;) {
      await this.probeShell(deadline, since, bannerAfter);
      bannerAfter = this.stream.length;
      try {
        await this.run("set +o emacs +o vi; stty -echo </dev/tty; PS1=''; PS2=''; dmesg -n 1; export TERM=dumb PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; cd /", { timeoutMs: 60_000 });
        await this.run('systemctl is-system-running --wait', { timeoutMs: Math.max(30_000, deadline - Date.now()), allowFailure: true });
      } catch (e) {
        // The shell of a boot that the guest itself ends (health check rollback): wait again.
        if (e instanceof RebootedError && Date.now() < deadline) continue;
        throw e;
      }
      const secs = (Date.now() - since) / 1000;
      this.bootSeconds.push(secs);
      return secs;
    }
  }

  /** Types probes (only while a kernel owns the console, see kernelOwnsConsole) until one is answered. */
  private async probeShell(deadline: number, since: number, bannerAfter: number): Promise<void> {
    const from = this.stream.length;
    let answered = false;
    const ids: string[] = [];
    while (!answered) {
      if (!this.running) throw new VmError(`${this.o.name}: QEMU exited while waiting for the shell\n${this.tail()}`);
      if (Date.now() > deadline) throw new VmError(`${this.o.name}: no shell on the serial console after ${Math.round((Date.now() - since) / 1000)} s\n${this.tail()}`);
      if (!kernelOwnsConsole(this.stream, bannerAfter)) {
        await sleep(200);
        continue;
      }
      const id = uid();
      ids.push(id);
      this.type(probeCommand(id));
      const until = Date.now() + 3000;
      while (Date.now() < until && !answered) {
        await sleep(200);
        answered = ids.some((i) => probeAnswered(this.stream, i, from));
      }
    }
    this.cursor = this.stream.length;
  }

  /** Powers on and waits for the shell. Returns the boot time in seconds. */
  async boot(o: { timeoutMs?: number } = {}): Promise<number> {
    const since = Date.now();
    const mark = this.stream.length;
    this.start();
    return this.waitForShell({ timeoutMs: o.timeoutMs, since, bannerAfter: mark });
  }

  /** Runs a bash command in the guest; throws (with the output) on a non-zero exit code. */
  async run(command: string, o: RunOptions = {}): Promise<{ output: string; exitCode: number }> {
    const id = uid();
    const timeoutMs = o.timeoutMs ?? 120_000;
    const from = this.cursor;
    this.type(wrapCommand(id, command));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = findResult(this.stream, id, from);
      if (r) {
        this.cursor = r.end;
        if (r.exitCode !== 0 && !o.allowFailure) {
          throw new VmError(`${this.o.name}: command failed (exit ${r.exitCode}): ${command}\n--- output ---\n${r.output}`);
        }
        return { output: r.output, exitCode: r.exitCode };
      }
      if (!this.running) throw new VmError(`${this.o.name}: QEMU exited while running: ${command}\n${this.tail()}`);
      if (countBoots(this.stream, from) > 0) throw new RebootedError(`${this.o.name}: the guest rebooted while running: ${command}`);
      if (Date.now() > deadline) throw new VmError(`${this.o.name}: timed out after ${timeoutMs / 1000} s: ${command}\n${this.tail()}`);
      await sleep(100);
    }
  }

  /** Types a command without waiting for anything (reboot, poweroff, background jobs). */
  send(command: string): void {
    this.type(`${command}\n`);
  }

  /** The guest's boot id (changes with every boot). */
  async bootId(): Promise<string> {
    return (await this.run('cat /proc/sys/kernel/random/boot_id')).output.trim();
  }

  /** Reboots the guest (`systemctl reboot`) and waits for the new boot's shell; returns its seconds. */
  async reboot(o: { timeoutMs?: number } = {}): Promise<number> {
    const old = await this.bootId();
    const mark = this.stream.length;
    this.send('systemctl reboot');
    return this.waitForNewBoot(old, { ...o, bannerAfter: mark });
  }

  /**
   * Waits for a shell of a boot other than `oldBootId` (the old shell may answer until systemd
   * stops it). Boots that end by themselves before their shell is ready are waited through.
   */
  async waitForNewBoot(oldBootId: string, o: { timeoutMs?: number; bannerAfter?: number } = {}): Promise<number> {
    const since = Date.now();
    const deadline = since + (o.timeoutMs ?? 600_000);
    let bannerAfter = o.bannerAfter ?? this.stream.length;
    for (;;) {
      const secs = await this.waitForShell({ timeoutMs: deadline - since, since, bannerAfter });
      bannerAfter = this.stream.length;
      try {
        if ((await this.bootId()) !== oldBootId) return secs;
      } catch (e) {
        if (!(e instanceof RebootedError)) throw e;
      }
      this.bootSeconds.pop();
    }
  }

  /** Position in the console stream (to count boots from there with {@link countBoots}). */
  get mark(): number {
    return this.stream.length;
  }

  /** Waits until QEMU has exited (the guest powered off or reset with -no-reboot), or throws. */
  async waitForExit(timeoutMs: number): Promise<void> {
    const t = sleep(timeoutMs).then(() => 'timeout' as const);
    if ((await Promise.race([this.exited!.then(() => 'exited' as const), t])) === 'timeout') {
      throw new VmError(`${this.o.name}: QEMU still running ${timeoutMs / 1000} s after the request\n${this.tail()}`);
    }
  }

  /** Clean shutdown through the guest (`systemctl poweroff`); falls back to a kill. */
  async powerOff(timeoutMs = 120_000): Promise<void> {
    if (!this.running) return;
    this.send('systemctl poweroff');
    try {
      await this.waitForExit(timeoutMs);
    } catch {
      await this.kill();
    }
  }

  /** Power cut: SIGKILL to QEMU; nothing the guest has not flushed to the disk survives. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.stopping = true;
    this.append(`\n=== [harness] SIGKILL to qemu ${new Date().toISOString()} ===\n`);
    this.child!.kill('SIGKILL');
    await this.exited;
  }

  /** Copies the serial log to vm/logs/<name>.log and returns that path. */
  saveLog(name: string): string {
    mkdirSync(LOG_DIR, { recursive: true });
    const dst = `${LOG_DIR}/${name.replace(/[^\w.-]+/g, '_')}.log`;
    writeFileSync(dst, this.stream);
    return dst;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/** Prepares (overlay) and returns a VM that is not started yet. */
export async function createVm(sys: System, o: VmOptions): Promise<Vm> {
  const vm = new Vm(sys, o);
  await vm.prepare();
  return vm;
}
