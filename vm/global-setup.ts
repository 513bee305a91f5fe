/**
 * Runs once before the VM suite: checks the host, then builds (or takes from the cache) the
 * guest tree, the archives and the base disks, and hands their paths to the test files.
 */
import { execFileSync } from 'node:child_process';
import type { TestProject } from 'vitest/node';
import { createSystem } from '../src/core/system.ts';
import { createLogger } from '../src/core/log.ts';
import { ensureArtifacts, type Artifacts } from './lib/image.ts';
import { bootMode, type BootMode } from './lib/bootmode.ts';
import { NODE, REPO, RUN_DIR } from './lib/paths.ts';
import { readdir, rm } from 'node:fs/promises';

declare module 'vitest' {
  export interface ProvidedContext {
    artifacts: Artifacts;
    bootMode: BootMode;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the VM suite builds disks with losetup, mount and chroot: run it as root');
  for (const tool of ['qemu-system-x86_64', 'qemu-img', 'mmdebstrap', 'sfdisk', 'mkfs.vfat', 'mkfs.btrfs', 'losetup', 'mksquashfs']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      throw new Error(`required tool ${tool} is missing: apt-get install qemu-system-x86 qemu-utils ovmf mmdebstrap fdisk dosfstools btrfs-progs squashfs-tools`);
    }
  }
  const sys = createSystem(createLogger(process.env.TIU_VM_DEBUG ? 'debug' : 'warn'));
  await removeStaleRuns();
  const mode = bootMode();
  const log = (s: string) => process.stderr.write(`[vm] ${s}\n`);
  // The guest runs the bundle of this checkout (dist/tiu.mjs, shared over 9p): build it now so
  // it always matches src/.
  await sys.run(NODE, [`${REPO}/scripts/build.ts`], { timeoutMs: 300_000 });
  const a = await ensureArtifacts(sys, { bootMode: mode, log });
  log(a.buildSeconds ? `images built in ${a.buildSeconds.toFixed(0)} s (${a.dir})` : `images from the cache (${a.dir})`);
  project.provide('artifacts', a);
  project.provide('bootMode', mode);
}

/** Per-run directories (`<name>-<pid>`, overlays of gigabytes) of runs whose process is gone. */
async function removeStaleRuns(): Promise<void> {
  const names = await readdir(RUN_DIR).catch(() => [] as string[]);
  for (const name of names) {
    const pid = Number(name.match(/-(\d+)$/)?.[1]);
    if (!pid) continue;
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') await rm(`${RUN_DIR}/${name}`, { recursive: true, force: true });
    }
  }
}
